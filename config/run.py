"""`make run`: the whole product on one machine.

Starts the embedded servers when DATABASE_URL / REDIS_URL are not set, migrates, loads the
demo data, and runs every process of the Procfile (plus the development-only ones below)
under honcho. Ctrl-C stops them all, then the embedded servers.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

from honcho.environ import parse_procfile
from honcho.manager import Manager
from honcho.printer import Printer

from config import embedded

ROOT = Path(__file__).resolve().parent.parent
# Processes for the demo only; never in the production Procfile: the channel simulator plays
# WhatsApp, Messenger, Instagram, Telegram, WeChat, email (SMTP and IMAP too) and the custom
# channel's app, and lets a person chat as a customer on any of them.
DEVELOPMENT_PROCESSES: dict[str, str] = {
    "simulator": "python -m apps.connectors.simulator --port ${SIMULATOR_PORT:-8025} "
    "--channels var/simulator-channels.json",
}


def manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, check=True)


def banner(port: str) -> None:
    print("=" * 72)
    print(f"Parley is starting on http://127.0.0.1:{port}/")
    print(f"  admin: http://127.0.0.1:{port}/admin/    health: http://127.0.0.1:{port}/healthz")
    simulator = os.environ.get("SIMULATOR_PORT", "8025")
    print(
        f"  chat as a customer (WhatsApp, Messenger, Instagram, Telegram, WeChat, email, app): "
        f"http://127.0.0.1:{simulator}/"
    )
    print(f"  chat as a website visitor (web chat widget): http://127.0.0.1:{simulator}/shop/")
    manage("load_demo", "--history")  # idempotent; prints the demo logins; four weeks of analytics once
    print("Press Ctrl-C to stop everything.")
    print("=" * 72, flush=True)


def main() -> int:
    port = os.environ.get("PORT", "8000")
    already = embedded.running()
    urls = embedded.start()
    if urls:
        print("Embedded servers (data in var/): " + ", ".join(urls.values()))
    # A local run is a development run, whichever servers it uses (no TLS, no SECRET_KEY).
    os.environ.setdefault("DEBUG", "true")
    # The simulator's mail servers, where the demo's email channels send and poll.
    os.environ.setdefault("SIMULATOR_SMTP_PORT", "2525")
    os.environ.setdefault("SIMULATOR_IMAP_PORT", "1143")
    # The Procfile names daphne and celery; find them in this virtualenv.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

    try:
        manage("migrate", "--noinput")
        manage("setup_schedules")
        banner(port)

        manager = Manager(Printer(sys.stdout))
        procfile = parse_procfile((ROOT / "Procfile").read_text())
        processes = {**procfile.processes, **DEVELOPMENT_PROCESSES}
        for name, command in processes.items():
            manager.add_process(name, command, env={**os.environ, "PORT": port}, cwd=str(ROOT))
        manager.loop()
        return manager.returncode or 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        started_here = tuple(name for name in urls_to_names(urls) if not already[name])
        stopped = embedded.stop(started_here)
        if stopped:
            print(f"Stopped embedded {' and '.join(stopped)}.")


def urls_to_names(urls: dict[str, str]) -> list[str]:
    return [{"DATABASE_URL": "postgres", "REDIS_URL": "redis"}[variable] for variable in urls]


if __name__ == "__main__":
    sys.exit(main())
