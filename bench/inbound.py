"""Inbound throughput and latency: signed WhatsApp webhooks against the running stack.

    python -m bench.inbound [--clients 16] [--messages 3000] [--rate 100] [--seconds 10] [--workers 2]

It makes its own database (`parley_bench`, dropped at the end) and Redis key prefix on the
servers named by DATABASE_URL / REDIS_URL (or the embedded ones), starts a real daphne and a
real Celery worker on them, and measures, on loopback:

1. the ceiling: a trivial view (`GET /ping`) from the same concurrent clients;
2. a burst: N clients POST signed webhooks as fast as they can; acknowledgement latency, and
   messages fully processed per second (stored, conversation updated, event published) until
   the last one is in PostgreSQL;
3. webhook → websocket latency at a paced rate, measured by a real websocket client signed in
   as a supervisor of the workspace, for each message's `message.created` event.
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BENCH_DB = "parley_bench"
PREFIX = "parley-bench"
APP_SECRET = "bench-app-secret"  # noqa: S105 (a throwaway channel of the bench database)
PHONE_NUMBER_ID = "900000001"
TARGETS = {"processed_per_s": 300, "ack_p99_ms": 50, "ws_p99_ms": 250}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.inbound")
    parser.add_argument("--clients", type=int, default=16, help="concurrent webhook senders")
    parser.add_argument("--messages", type=int, default=3000, help="webhooks in the burst")
    parser.add_argument("--rate", type=int, default=100, help="messages/s for the websocket latency run")
    parser.add_argument("--seconds", type=int, default=10, help="length of the paced run")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (prefork)")
    parser.add_argument("--web", type=int, default=1, help="daphne processes (one port each)")
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=10,
        help="the worker's nice level (as in the Procfile)",
    )
    return parser.parse_args(argv)


# Servers and data ------------------------------------------------------------------------------


def server_urls() -> tuple[str, str]:
    from config import embedded

    started = embedded.start()
    database = os.environ.get("DATABASE_URL") or started["DATABASE_URL"]
    redis = os.environ.get("REDIS_URL") or started["REDIS_URL"]
    return database, redis


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def recreate_database(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(with_database(admin_url, "postgres"), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{BENCH_DB}"')


def drop_database(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(with_database(admin_url, "postgres"), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def prepare(env: dict) -> dict:
    """Migrates the bench database and makes a workspace, a supervisor and a WhatsApp number."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.sessions.backends.cached_db import SessionStore
    from django.core.management import call_command

    from apps.connectors.models import Channel
    from apps.workspaces import services
    from apps.workspaces.models import Role, User

    call_command("migrate", verbosity=0)
    workspace = services.workspace_create(name="Bench", slug="bench", timezone_name="UTC", default_language="en")
    user = User.objects.create_user("bench-supervisor", password="unused-bench-password")  # noqa: S106
    services.membership_add(workspace=workspace, user=user, role=Role.SUPERVISOR)
    channel = Channel.objects.create(
        workspace=workspace,
        kind="whatsapp",
        name="Bench number",
        credentials={
            "access_token": "t",
            "app_secret": APP_SECRET,
            "phone_number_id": PHONE_NUMBER_ID,
            "waba_id": "W",
        },
        settings={"base_url": "http://127.0.0.1:9"},
    )
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    return {"channel_uuid": str(channel.uuid), "session": session.session_key}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"bench: {what} did not come up within {timeout:.0f} s")


# Load ------------------------------------------------------------------------------------------


class Http:
    """Keep-alive HTTP/1.1 connections to one server, as lean as a load generator can be: with
    httpx the clients took as much CPU per request as the server's webhook, on the same cores.

    As real clients do: a connection idle for longer than `KEEPALIVE_EXPIRY` is not used again
    (httpx's default; daphne, through Twisted, closes one idle for 60 s, and a request written
    into a connection the server is closing gets no answer), and a request on a reused connection
    that ends before any byte of an answer is sent once more on a new one (as browsers do: the
    server never read it). `resent` counts those."""

    KEEPALIVE_EXPIRY = 5.0

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.resent = 0

    def _reusable(self):
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.monotonic() - since < self.KEEPALIVE_EXPIRY and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> int:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        if reused := self._reusable():
            try:
                return await self._exchange(*reused, data)
            except (asyncio.IncompleteReadError, ConnectionError) as error:
                if getattr(error, "partial", b""):  # the server had begun to answer: an error of the day
                    raise
                reused[1].close()
                self.resent += 1
        return await self._exchange(*await asyncio.open_connection(self.host, self.port), data)

    async def _exchange(self, reader, writer, data: bytes) -> int:
        writer.write(data)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        status = int(head.split(" ", 2)[1])
        if "transfer-encoding: chunked" in head:
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")
        else:
            length = head.partition("content-length:")[2].split("\r\n", 1)[0].strip()
            await reader.readexactly(int(length or 0))
        self.idle.append((reader, writer, time.monotonic()))
        return status

    def close(self) -> None:
        for _, writer, _since in self.idle:
            writer.close()
        self.idle.clear()


def webhook(index: int, text: str) -> bytes:
    wa_id = f"2010{index % 500:07d}"  # 500 customers writing again and again
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "W",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "+20 100 000 0000",
                                "phone_number_id": PHONE_NUMBER_ID,
                            },
                            "contacts": [{"profile": {"name": f"Customer {index % 500}"}, "wa_id": wa_id}],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "id": f"wamid.bench.{index}.{time.time_ns()}",
                                    "timestamp": str(int(time.time())),
                                    "type": "text",
                                    "text": {"body": text},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(body).encode()


def signed_headers(body: bytes) -> dict:
    signature = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={signature}"}


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def ceiling(urls: list[str], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def client(index: int):
        http = Http(urls[index % len(urls)])
        while time.monotonic() < deadline:
            started = time.perf_counter()
            if await http.request("GET", "/ping") != 200:
                raise SystemExit("bench: GET /ping failed")
            latencies.append((time.perf_counter() - started) * 1000)
        http.close()

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"per_s": len(latencies) / (time.monotonic() - started), "latencies": latencies}


async def burst(urls: list[str], uuid: str, clients: int, total: int) -> dict:
    latencies: list[float] = []
    queue = asyncio.Queue()
    for index in range(total):
        queue.put_nowait(index)
    errors = 0

    async def client(index: int):
        nonlocal errors
        http = Http(urls[index % len(urls)])
        while not queue.empty():
            number = queue.get_nowait()
            body = webhook(number, f"burst {number}")
            started = time.perf_counter()
            status = await http.request("POST", f"/webhooks/{uuid}/", body, signed_headers(body))
            latencies.append((time.perf_counter() - started) * 1000)
            errors += status != 200
        http.close()

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"sent_s": time.monotonic() - started, "latencies": latencies, "errors": errors, "started": started}


async def paced(urls: list[str], ws_url: str, uuid: str, session: str, rate: int, seconds: int) -> dict:
    import websockets

    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    total = rate * seconds
    headers = {"Cookie": f"sessionid={session}", "Origin": urls[0]}
    async with websockets.connect(f"{ws_url}/ws/?workspace=bench", additional_headers=headers) as ws:
        await ws.recv()  # hello

        async def listen():
            while len(latencies) < total:
                try:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
                except TimeoutError:
                    return
                received = time.perf_counter()
                for event in frame["events"] if frame.get("type") == "events" else [frame]:  # a batch: one frame
                    if event.get("type") == "message.created":
                        token = event["payload"]["message"]["text"]
                        if token in sent_at:
                            latencies.append((received - sent_at.pop(token)) * 1000)

        listener = asyncio.create_task(listen())
        servers = [Http(url) for url in urls]
        start = time.perf_counter()
        pending = set()
        for number in range(total):
            await asyncio.sleep(max(0.0, start + number / rate - time.perf_counter()))
            token = f"paced {number}"
            body = webhook(100_000 + number, token)
            sent_at[token] = time.perf_counter()
            http = servers[number % len(servers)]
            pending.add(asyncio.create_task(http.request("POST", f"/webhooks/{uuid}/", body, signed_headers(body))))
        await asyncio.gather(*pending)
        for http in servers:
            http.close()
        await listener
    return {"latencies": latencies, "lost": len(sent_at)}


def cpu_seconds(pids: list[int], *, children: bool = True) -> float:
    """User + system CPU of these processes and their children, from /proc (0 where there is none).
    On a machine shared with other work the rates above move with the neighbours' load; the CPU
    each part spends per message does not."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        pid = int(entry.parent.name)
        parents[pid], times[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    wanted, total = set(pids), 0.0
    for pid in times:
        ancestor = pid
        while children and ancestor > 1 and ancestor not in wanted:
            ancestor = parents.get(ancestor, 0)
        total += times[pid] if ancestor in wanted else 0.0
    return total


def database_backends() -> list[int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [row[0] for row in cursor.fetchall()]


def cpu_snapshot(processes: list[subprocess.Popen]) -> dict[str, float]:
    web = [process.pid for process in processes[:-1]]
    return {
        "web (daphne)": cpu_seconds(web),
        "worker (Celery)": cpu_seconds([processes[-1].pid]),
        "PostgreSQL (the bench database's backends)": cpu_seconds(database_backends()),
        "the bench's clients": cpu_seconds([os.getpid()], children=False),  # daphne and Celery are its children
    }


def count_messages(env: dict | None = None) -> int:
    from apps.conversations.models import Message

    return Message.objects.count()


# Report -------------------------------------------------------------------------------------


def line(name: str, value: str, target: str = "") -> None:
    print(f"  {name:<44} {value:>14}   {target}")


def stack_env(*, database_url: str, redis_url: str, prefix: str, drainers: int, **extra: str) -> dict:
    """The environment of a bench's own daphne, workers and beat: its database, its Redis keys
    and Celery queue, production settings without TLS, and `extra` on top."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "CELERY_QUEUE": prefix,
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz-0123",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_COOKIES": "false",
        "LOG_LEVEL": "WARNING",
        "INBOUND_DRAINERS": str(drainers),
        "OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",  # the simulator's media downloads
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    database, redis_url = server_urls()
    bench_db = with_database(database, BENCH_DB)
    recreate_database(database)
    env = stack_env(database_url=bench_db, redis_url=redis_url, prefix=PREFIX, drainers=args.workers)
    made = prepare(env)
    logs = ROOT / "var" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    ports = [free_port() for _ in range(args.web)]
    processes = [
        spawn(
            [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
            env,
            logs / f"daphne-{port}.log",
        )
        for port in ports
    ]
    worker = ["nice", "-n", str(args.worker_nice)] if args.worker_nice else []
    worker += [str(BIN / "celery"), "--app", "config", "worker", "--queues", PREFIX, "--loglevel", "WARNING"]
    worker += [
        "--concurrency",
        str(args.workers),
        "--without-gossip",
        "--without-mingle",
        "--prefetch-multiplier",
        "16",
    ]
    processes.append(spawn(worker, env, logs / "worker.log"))
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        import httpx

        for url in urls:
            wait_until(lambda u=url: _up(httpx, u), 30, "daphne")
        # Warm-up: the whole pipeline answers before anything is measured.
        asyncio.run(burst(urls, made["channel_uuid"], 4, 40))
        wait_until(lambda: count_messages(env) >= 40, 60, "the worker")
        baseline = count_messages(env)
        print(
            f"machine: {os.cpu_count()} cores; {args.web} daphne, Celery prefork x{args.workers}"
            f"{f' at nice {args.worker_nice}' if args.worker_nice else ''}; "
            f"{args.clients} clients; PostgreSQL and Redis at {database.split('@')[-1]} / {redis_url}"
        )

        ceiling_run = asyncio.run(ceiling(urls, args.clients, 5))
        cpu_before = cpu_snapshot(processes)
        burst_run = asyncio.run(burst(urls, made["channel_uuid"], args.clients, args.messages))
        deadline = time.monotonic() + 300
        while count_messages(env) - baseline < args.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        processed_s = time.monotonic() - burst_run["started"]
        cpu_after = cpu_snapshot(processes)
        stored = count_messages(env) - baseline
        paced_run = asyncio.run(
            paced(urls, urls[0].replace("http", "ws"), made["channel_uuid"], made["session"], args.rate, args.seconds)
        )

        print("ceiling: GET /ping")
        line("requests/s", f"{ceiling_run['per_s']:.0f}")
        line(
            "latency p50 / p99 (ms)",
            f"{percentile(ceiling_run['latencies'], 50):.1f} / {percentile(ceiling_run['latencies'], 99):.1f}",
        )
        print(f"burst: {args.messages} signed webhooks from {args.clients} clients")
        ack = burst_run["latencies"]
        line("webhooks acknowledged/s", f"{args.messages / burst_run['sent_s']:.0f}")
        line(
            "ack latency p50 / p99 (ms)",
            f"{percentile(ack, 50):.1f} / {percentile(ack, 99):.1f}",
            f"target p99 ≤ {TARGETS['ack_p99_ms']}",
        )
        line("messages fully processed/s", f"{stored / processed_s:.0f}", f"target ≥ {TARGETS['processed_per_s']}")
        line("stored / sent / non-200", f"{stored} / {args.messages} / {burst_run['errors']}")
        print("CPU per message in the burst, until the last one was processed (ms)")
        for part, seconds in cpu_after.items():
            line(part, f"{(seconds - cpu_before[part]) * 1000 / max(stored, 1):.2f}")
        print(f"paced: {args.rate} messages/s for {args.seconds} s, one supervisor's websocket")
        ws = paced_run["latencies"]
        line(
            "webhook → websocket p50 / p99 (ms)",
            f"{percentile(ws, 50):.1f} / {percentile(ws, 99):.1f}",
            f"target p99 ≤ {TARGETS['ws_p99_ms']}",
        )
        line("events received / missing", f"{len(ws)} / {paced_run['lost']}")
        if ws:
            line("webhook → websocket mean (ms)", f"{statistics.mean(ws):.1f}")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        from django.db import connections

        connections.close_all()
        drop_database(database)
    return 0


def _up(httpx, url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
