import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.core.management import CommandError
from django.test import Client, TransactionTestCase

from apps.core.redis import get_redis
from apps.workspaces import services
from apps.workspaces.models import Role
from config.env import database_url
from tests.factories import make_member, make_shift, make_team, make_workspace

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

_flush_test_database = TransactionTestCase._fixture_teardown


def _flush_when_the_worker_lets_go(self):
    """A transactional test's tables are truncated at its end, while the session's live Celery
    worker may still be finishing a task the test caused (a timer, a queue dispatch) on those
    tables. PostgreSQL breaks that lock cycle by failing the TRUNCATE; once the task has committed
    the same TRUNCATE goes through, so it is tried again."""
    for attempt in range(6):
        try:
            return _flush_test_database(self)
        except CommandError as error:
            if "deadlock" not in repr(error.__cause__).lower() or attempt == 5:
                raise
            time.sleep(0.5)


TransactionTestCase._fixture_teardown = _flush_when_the_worker_lets_go


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clean_cache():
    """Forget cached values (sessions, rate-limit counters) between tests, touching only the
    cache's own keys: Celery's queues and the Channels layer share this Redis."""
    redis = get_redis()
    pattern = f"{settings.CACHES['default']['KEY_PREFIX']}:*"
    keys = list(redis.scan_iter(match=pattern, count=1000))
    cache_keys = [k for k in keys if k.decode().split(":")[1:2] == ["1"]]
    if cache_keys:
        redis.delete(*cache_keys)


@dataclass
class Tenants:
    """Two workspaces: A with an owner, a supervisor and an agent (the teammate), and B whose
    owner is the outsider. Each has a team with a shift and an API token."""

    a: object
    b: object
    owner: object
    supervisor: object
    teammate: object
    outsider: object
    team_a: object
    team_b: object
    shift_a: object
    shift_b: object
    token_a: str
    token_b: str


@pytest.fixture
def tenants(db) -> Tenants:
    a, b = make_workspace(name="Alpha", slug="alpha"), make_workspace(name="Beta", slug="beta")
    owner = make_member(a, Role.OWNER)
    supervisor = make_member(a, Role.SUPERVISOR)
    teammate = make_member(a, Role.AGENT)
    outsider = make_member(b, Role.OWNER)
    team_a = make_team(a, name="Orders", members=[teammate])
    team_b = make_team(b, name="Couriers", members=[outsider])
    _, token_a = services.api_token_create(workspace=a, name="order system")
    _, token_b = services.api_token_create(workspace=b, name="order system")
    return Tenants(
        a,
        b,
        owner.user,
        supervisor.user,
        teammate.user,
        outsider.user,
        team_a,
        team_b,
        make_shift(team_a),
        make_shift(team_b),
        token_a,
        token_b,
    )


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def token_client(token: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {token}"})


# Live processes -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    detail = log.read_text()[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up in {timeout}s\n{detail}")


@pytest.fixture(scope="session")
def live_env(django_db_setup, django_db_blocker, tmp_path_factory):
    """The environment for child processes: the test database and this suite's Redis keys."""
    from django.db import connection

    return {
        **os.environ,
        "DATABASE_URL": database_url(connection.settings_dict),
        "REDIS_URL": settings.REDIS_URL,
        "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
        "CELERY_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
        "DEBUG": "false",
        "SECRET_KEY": settings.SECRET_KEY,  # sessions made here must verify there
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_COOKIES": "false",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _spawn(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class LiveServer:
    url: str
    ws_url: str
    port: int


@pytest.fixture(scope="session")
def live_server_process(live_env, tmp_path_factory) -> LiveServer:
    """Daphne serving the real ASGI application (HTTP and websockets) on a free port."""
    port = _free_port()
    log = tmp_path_factory.mktemp("daphne") / "daphne.log"
    process = _spawn(
        [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        live_env,
        log,
    )

    def healthy():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait_for(healthy, 30, "daphne", log)
        yield LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", port)
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def celery_worker_process(live_env, tmp_path_factory):
    """A real Celery worker consuming this suite's queue."""
    log = tmp_path_factory.mktemp("celery") / "worker.log"
    process = _spawn(
        [
            str(BIN / "celery"),
            "--app",
            "config",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--queues",
            live_env["CELERY_QUEUE"],
        ],
        live_env,
        log,
    )
    try:
        _wait_for(lambda: " ready." in log.read_text(), 60, "celery worker", log)
        yield process
    finally:
        _stop(process)


@dataclass
class Simulator:
    url: str

    def post(self, path: str, body: dict | None = None):
        response = httpx.post(f"{self.url}{path}", json=body or {}, timeout=30)
        response.raise_for_status()
        return response.json()

    def get(self, path: str, **params):
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def register(self, channel, *, webhook_url: str | None = None) -> None:
        self.post(
            "/_simulator/channels",
            {
                "kind": channel.kind,
                "name": channel.name,
                "phone_number_id": channel.credentials["phone_number_id"],
                "display_phone_number": "+20 100 000 0001",
                "waba_id": channel.credentials.get("waba_id", "WABA1"),
                "access_token": channel.credentials["access_token"],
                "app_secret": channel.credentials["app_secret"],
                "verify_token": channel.verify_token,
                "webhook_url": webhook_url or channel.webhook_url,
            },
        )


@pytest.fixture(scope="session")
def simulator_process(tmp_path_factory) -> Simulator:
    """The channel simulator (apps/connectors/simulator) on a free port."""
    port = _free_port()
    log = tmp_path_factory.mktemp("simulator") / "simulator.log"
    process = _spawn([sys.executable, "-m", "apps.connectors.simulator", "--port", str(port)], dict(os.environ), log)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(f"{url}/_simulator/channels", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait_for(up, 20, "simulator", log)
        yield Simulator(url)
    finally:
        _stop(process)


@pytest.fixture
def simulator(simulator_process) -> Simulator:
    simulator_process.post("/_simulator/reset", {"channels": True})
    return simulator_process
