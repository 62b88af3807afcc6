"""Compile locale/*/LC_MESSAGES/*.po into .mo without GNU gettext (`make messages`).

The compiled .mo files are committed, so a machine with only Python serves Russian as is."""

from pathlib import Path

import polib

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    for po_path in sorted((ROOT / "locale").glob("*/LC_MESSAGES/*.po")):
        polib.pofile(str(po_path)).save_as_mofile(str(po_path.with_suffix(".mo")))
        print(f"compiled {po_path.relative_to(ROOT)}")
