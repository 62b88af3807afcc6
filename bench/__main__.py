"""`make bench`: runs every benchmark in bench/ and prints its figures.

Benchmarks arrive with the issues that name figures to reach (inbound messages, inbox, broadcasts,
analytics); each is a module here with a `main()`."""

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    modules = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_")]
    if not modules:
        print("No benchmarks yet.")
        return 0
    for name in modules:
        print(f"== bench.{name}")
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
