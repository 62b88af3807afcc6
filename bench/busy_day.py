"""The busy day: everything at once against the running stack, on loopback.

    python -m bench.busy_day [--minutes 1] [--operators 50] [--inbound-rate 100] [--broadcast-rate 80]
                             [--reply-share 0.25] [--statuses sent|delivered] [--web 2] [--workers 3]
                             [--worker-nice 10]

`--minutes 10` is the issue's full run; `make bench` runs a short one (about 3 minutes with
setting up). It makes its own database (`parley_bench_busy_<pid>`, dropped at the end) and Redis key
prefix on the servers DATABASE_URL / REDIS_URL name (or the embedded ones), starts the channel
simulator, daphne, a Celery worker and beat, and then, for the whole run:

- `--operators` agents are signed in with a websocket each on /ws/, and reply (through the REST
  API, as the inbox does) to a share of the customers' messages, each operator to the
  conversations that are theirs;
- customers write `--inbound-rate` messages a second, signed webhooks alternating WhatsApp and
  Messenger wire formats, spread over the web processes;
- a broadcast sends a WhatsApp template from the shop's promotions number at its `--broadcast-rate`
  (customers write to the support number), and the simulator
  posts each message's status callbacks back.

It reports the webhooks' acknowledgement p99, webhook → operator's socket p99, operator's reply →
the provider's API p99, every error (non-2xx answers, events that never came, replies that never
left, callbacks the simulator could not deliver: all must be 0), and the CPU and memory of each
process (psutil)."""

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

from bench.broadcast import make_contacts, time_of, whatsapp_number
from bench.inbound import (
    APP_SECRET,
    BIN,
    PHONE_NUMBER_ID,
    ROOT,
    Http,
    free_port,
    percentile,
    server_urls,
    signed_headers,
    spawn,
    stack_env,
    wait_until,
    webhook,
    with_database,
)

# Each run its own database and Redis prefix: a run started while another tears down leaves it be.
BENCH_DB = f"parley_bench_busy_{os.getpid()}"
PREFIX = f"parley-bench-busy-{os.getpid()}"
PAGE_ID = "900000003"
MARKETING_NUMBER_ID = "900000004"
CUSTOMERS = 500  # per channel: they write again and again
CUSTOMER_TEXT = re.compile(r"where is my order (\d+)")  # customers' texts, as `customers` writes them
TARGETS = {"ack_p99_ms": 50, "operator_p99_ms": 250, "reply_p99_ms": 1000}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.busy_day")
    parser.add_argument("--minutes", type=float, default=1.0, help="length of the run (the issue's: 10)")
    parser.add_argument("--operators", type=int, default=50)
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=10,
        help="the worker's nice level (as in the Procfile)",
    )
    parser.add_argument("--inbound-rate", type=int, default=100, help="customer messages per second")
    parser.add_argument("--broadcast-rate", type=int, default=80, help="the broadcast's sends per second")
    parser.add_argument("--reply-share", type=float, default=0.25, help="share of customer messages answered")
    parser.add_argument("--statuses", choices=("sent", "delivered"), default="sent", help="callbacks per send")
    parser.add_argument("--web", type=int, default=2, help="daphne processes")
    parser.add_argument("--workers", type=int, default=3, help="Celery worker processes (prefork)")
    return parser.parse_args(argv)


# Setting up ------------------------------------------------------------------------------------


def recreate_database(admin_url: str, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(with_database(admin_url, "postgres"), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        if not drop_only:
            connection.execute(f'CREATE DATABASE "{BENCH_DB}"')


def session_for(user) -> str:
    from django.contrib.sessions.backends.cached_db import SessionStore

    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    return session.session_key


def prepare(env: dict, args, simulator_url: str) -> dict:
    """Migrates; a workspace with N agents (and their sessions), a WhatsApp number (bench.inbound's
    webhooks) and a Messenger page on the simulator, and a broadcast to enough opted-in contacts
    to send for the whole run."""
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    from apps.broadcasts import services as broadcasts
    from apps.broadcasts.models import Broadcast, BroadcastSettings
    from apps.connectors.models import Channel, MessageTemplate
    from apps.contacts.models import Tag
    from apps.workspaces import services
    from apps.workspaces.models import Role, User

    call_command("migrate", verbosity=0)
    workspace = services.workspace_create(name="Busy", slug="busy", timezone_name="UTC", default_language="en")
    operators = []
    for n in range(args.operators):
        user = User.objects.create_user(f"operator-{n}", password="unused-bench-password")  # noqa: S106
        services.membership_add(workspace=workspace, user=user, role=Role.AGENT if n else Role.SUPERVISOR)
        operators.append(session_for(user))
    # Promotions go out through a number of their own, as shops keep them (a broadcast on the
    # support number would share its 80 messages a second with the operators' replies, which take
    # first: connectors.ratelimit.bulk_reserve).
    marketing = whatsapp_number(
        workspace,
        simulator_url,
        MARKETING_NUMBER_ID,
        "Promotions number",
        APP_SECRET,
        rate_limit_per_second=args.broadcast_rate,
    )
    template = MessageTemplate.objects.create(
        workspace=workspace, channel=marketing, name="bench_promo", body="Hi {{1}}, {{2}} off.", category="marketing"
    )
    midnight = time_of(0)
    BroadcastSettings.objects.create(workspace=workspace, weekly_cap=100, quiet_from=midnight, quiet_until=midnight)
    make_contacts(workspace, int(args.broadcast_rate * args.minutes * 60 * 1.5) + 1000)
    # After make_contacts, which expects the one number.
    whatsapp = whatsapp_number(workspace, simulator_url, PHONE_NUMBER_ID, "Support number", APP_SECRET)
    messenger = Channel.objects.create(
        workspace=workspace,
        kind="messenger",
        name="Bench page",
        credentials={"page_access_token": "p", "app_secret": APP_SECRET, "page_id": PAGE_ID},
        settings={"base_url": simulator_url},
    )
    broadcast = broadcasts.broadcast_create(
        workspace=workspace,
        name="Busy day sale",
        channel=marketing,
        template=template,
        variables=[{"field": "contact.first_name", "fallback": "friend"}, {"value": "20%"}],
        audience=Broadcast.Audience.TAG,
        tag=Tag.objects.get(workspace=workspace, name="everyone"),
    )
    return {
        "whatsapp": whatsapp,
        "marketing": marketing,
        "messenger": messenger,
        "broadcast": broadcast,
        "operators": operators,
    }


def register(simulator_url: str, made: dict, urls: list[str], statuses: str) -> None:
    """The simulator's channels, each calling back a web process of its own in turn, as a proxy in
    front of them would spread the providers' webhooks (the broadcast's status callbacks alone
    are 80 a second)."""
    import httpx

    sim = httpx.Client(base_url=simulator_url, timeout=30)
    whatsapp, marketing, messenger = made["whatsapp"], made["marketing"], made["messenger"]
    web = [urls[n % len(urls)] for n in range(3)]
    numbers = {"access_token": "t", "app_secret": APP_SECRET, "kind": "whatsapp"}
    for body in (
        {**numbers, "phone_number_id": PHONE_NUMBER_ID, "webhook_url": f"{web[0]}/webhooks/{whatsapp.uuid}/"},
        {**numbers, "phone_number_id": MARKETING_NUMBER_ID, "webhook_url": f"{web[1]}/webhooks/{marketing.uuid}/"},
        {
            "kind": "messenger",
            "page_id": PAGE_ID,
            "page_access_token": "p",
            "app_secret": APP_SECRET,
            "webhook_url": f"{web[2]}/webhooks/{messenger.uuid}/",
        },
    ):
        sim.post("/_simulator/channels", json=body).raise_for_status()
    settings = {"rate_per_second": 100_000, "auto_status": statuses, "status_delay": 0.2, "webhook_timeout": 10}
    sim.post("/_simulator/settings", json=settings).raise_for_status()
    # The customers wrote (we post their webhooks ourselves): the providers' reply windows are open.
    for n in range(CUSTOMERS):
        sim.post("/_simulator/window", json={"phone_number_id": PHONE_NUMBER_ID, "wa_id": wa_id(n), "hours_ago": 0})
        window = {"kind": "messenger", "channel": PAGE_ID, "user": psid(n), "hours_ago": 0}
        sim.post("/_simulator/window", json=window).raise_for_status()
    sim.close()


def wa_id(n: int) -> str:
    return f"2010{n % CUSTOMERS:07d}"  # bench.inbound.webhook's customers


def psid(n: int) -> str:
    return f"2400000{n % CUSTOMERS:08d}"


def messenger_webhook(n: int, text: str) -> tuple[bytes, dict]:
    now = int(time.time() * 1000)
    event = {"mid": f"m_busy.{n}.{time.time_ns()}", "text": text}
    item = {"sender": {"id": psid(n)}, "recipient": {"id": PAGE_ID}, "timestamp": now, "message": event}
    body = json.dumps({"object": "page", "entry": [{"id": PAGE_ID, "time": now, "messaging": [item]}]}).encode()
    signature = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={signature}"}


# The load --------------------------------------------------------------------------------------


class Day:
    """What happened, in the harness's own clock (perf_counter for latencies, time.time() where
    the simulator's records are compared)."""

    def __init__(self, operators: int):
        self.ack: list[float] = []
        self.to_operator: list[float] = []
        self.errors: dict[str, int] = defaultdict(int)
        self.sent_at: dict[str, float] = {}  # customer message text → when its webhook was posted
        self.replied_at: dict[str, float] = {}  # reply text → time.time() when POSTed
        self.reply_ms: list[float] = []
        self.resent = 0  # requests sent again because a kept-alive connection had closed (bench.inbound.Http)
        self.frames = Frames(operators)


async def operator(index: int, session: str, args, urls: list[str], day: Day, stop: asyncio.Event) -> None:
    try:
        await _operator(index, session, args, urls, day, stop)
    except Exception as error:  # a socket refused or dropped is an error of the day
        day.errors[f"operator socket: {type(error).__name__}"] += 1


async def _operator(index: int, session: str, args, urls: list[str], day: Day, stop: asyncio.Event) -> None:
    from websockets.asyncio.client import connect

    await asyncio.sleep(index * 0.1)  # people sign in over a few seconds, not in one instant
    url = urls[index % len(urls)]
    csrf = secrets.token_hex(16)
    headers = {"Cookie": f"sessionid={session}; csrftoken={csrf}", "Origin": url}
    http = Http(url)
    replies, sending = 0, set()
    async with connect(f"{url.replace('http', 'ws')}/ws/?workspace=busy", additional_headers=headers) as socket:
        await socket.recv()  # hello
        closing = asyncio.create_task(_close_when(stop, socket))
        # Fifty browsers' worth of sockets share this process, and every one of them gets every
        # frame of the workspace: a frame is parsed once for all of them (day.frames) and only when
        # it holds a customer's message (the rest, thousands a second, are read and let go: parsing
        # them all, each operator its own copy, was 40 to 50% of this process, which shares the
        # cores with the server), and no timer is made per frame (asyncio.wait_for per recv cost
        # more than the server's send).
        async for raw in socket:
            if '"message.created"' not in raw:
                continue
            received = time.perf_counter()
            for text, conversation_id in day.frames.messages_to(raw, index):
                if _seen(text, received, index, args, day):
                    # Sent beside the socket, as a browser does: reading on while a reply is on its
                    # way, or the operator's own backlog would count as the server's latency.
                    body = json.dumps({"text": f"reply {index}-{replies}"}).encode()
                    day.replied_at[f"reply {index}-{replies}"] = time.time()
                    replies += 1
                    sending.add(asyncio.create_task(_reply(conversation_id, body, day, http, csrf, headers)))
                    sending = {task for task in sending if not task.done()}
        if not stop.is_set():  # the server closed this operator's socket before the day ended
            day.errors[f"operator socket closed by the server ({socket.close_code})"] += 1
            closing.cancel()
        else:
            await closing
    await asyncio.gather(*sending)
    day.resent += http.resent
    http.close()


def _seen(text: str, received: float, index: int, args, day: Day) -> bool:
    """Notes when an operator saw a customer's message to one of its conversations (`received`:
    its frame came); whether this operator answers it (a share of each operator's own)."""
    number = int(text.rsplit(" ", 1)[-1])
    day.to_operator.append((received - day.sent_at.pop(text, received)) * 1000)
    return (number % 100) < args.reply_share * 100


class Frames:
    """The customers' messages in each frame the sockets were sent, by the operator whose
    conversation each is (a customer's number modulo the operators), parsed once: every operator
    of a web process gets the same frame (the server encodes a batch once for all its sockets)."""

    KEPT = 256  # frames: a batch is sent to every socket within a moment

    def __init__(self, operators: int):
        self.operators = operators
        self.recent: dict[str, dict[int, list[tuple[str, int]]]] = {}

    def messages_to(self, raw: str, index: int) -> list[tuple[str, int]]:
        mine = self.recent.get(raw)
        if mine is None:
            mine = self.recent[raw] = self._index(json.loads(raw))
            if len(self.recent) > self.KEPT:
                del self.recent[next(iter(self.recent))]
        return mine.get(index, [])

    def _index(self, frame: dict) -> dict[int, list[tuple[str, int]]]:
        mine = defaultdict(list)
        for event in frame["events"] if frame.get("type") == "events" else [frame]:  # a batch: one frame
            if event.get("type") != "message.created" or event["payload"]["message"]["direction"] != "in":
                continue
            text = event["payload"]["message"]["text"]
            if CUSTOMER_TEXT.fullmatch(text):
                mine[int(text.rsplit(" ", 1)[-1]) % self.operators].append((text, event["payload"]["conversation_id"]))
        return mine


async def _reply(conversation_id: int, body: bytes, day, http, csrf, headers) -> None:
    path = f"/api/v1/conversations/{conversation_id}/messages/"
    try:
        headers_out = {"Content-Type": "application/json", "X-CSRFToken": csrf, **headers}
        status = await asyncio.wait_for(http.request("POST", path, body, headers_out), timeout=30)
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
        day.errors[f"reply: {type(error).__name__}"] += 1
        return
    if status != 201:
        day.errors[f"reply answered {status}"] += 1


async def _close_when(stop: asyncio.Event, socket) -> None:
    await stop.wait()
    await socket.close()


async def customers(args, urls: list[str], uuids: dict, day: Day, seconds: float) -> None:
    servers = [Http(url) for url in urls]
    pending = set()

    async def post(http, path, body, headers):
        started = time.perf_counter()
        try:
            status = await asyncio.wait_for(http.request("POST", path, body, headers), timeout=30)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            day.errors[f"webhook: {type(error).__name__}"] += 1
            return
        day.ack.append((time.perf_counter() - started) * 1000)
        if status != 200:
            day.errors[f"webhook answered {status}"] += 1

    start = time.perf_counter()
    for number in range(int(args.inbound_rate * seconds)):
        await asyncio.sleep(max(0.0, start + number / args.inbound_rate - time.perf_counter()))
        text = f"where is my order {number}"
        if number % 2:
            body, headers = messenger_webhook(number, text)
            path = f"/webhooks/{uuids['messenger']}/"
        else:
            body = webhook(number, text)
            headers, path = signed_headers(body), f"/webhooks/{uuids['whatsapp']}/"
        day.sent_at[text] = time.perf_counter()
        # Each Http is a pool of keep-alive connections: a request opens one when none is idle.
        pending.add(asyncio.create_task(post(servers[number % len(servers)], path, body, headers)))
        pending = {task for task in pending if not task.done()}
    await asyncio.gather(*pending)
    for http in servers:
        day.resent += http.resent
        http.close()


async def run_day(args, urls: list[str], made: dict, day: Day) -> None:
    stop = asyncio.Event()
    uuids = {"whatsapp": made["whatsapp"].uuid, "messenger": made["messenger"].uuid}
    sockets = [
        asyncio.create_task(operator(n, session, args, urls, day, stop)) for n, session in enumerate(made["operators"])
    ]
    await asyncio.sleep(len(sockets) * 0.1 + 2)  # every operator connected
    await customers(args, urls, uuids, day, args.minutes * 60)
    deadline = time.monotonic() + 20  # the backlog, if any, reaches the operators
    while day.sent_at and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*sockets)


# Processes' CPU and memory ---------------------------------------------------------------------


class Sampler(threading.Thread):
    """Each named process (with its children: prefork workers) once a second: CPU % of one core
    and resident memory; means and peaks at the end."""

    def __init__(self, processes: dict[str, subprocess.Popen]):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.handles = {name: psutil.Process(p.pid) for name, p in processes.items()}
        self.handles["load generator (this)"] = psutil.Process()
        self.alone = {"load generator (this)"}  # its children are the processes above
        # The servers, when they run on this machine (the embedded ones or the local services):
        # they serve other work too, but nothing else runs during a bench.
        for name, binary in (("PostgreSQL (all its processes)", "postgres"), ("Redis", "redis-server")):
            if (root := self._server(binary)) is not None:
                self.handles[name] = root
        self.shared = {"PostgreSQL (all its processes)"}  # shared buffers: counted once, not per backend
        self.samples: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.known: dict = {}
        self.families: dict[int, tuple[float, list]] = {}
        self.done = threading.Event()

    def _server(self, binary: str):
        """The oldest process of that name whose parent is not one too (the postmaster)."""
        found = []
        for process in self.psutil.process_iter(["name", "ppid", "create_time"]):
            if process.info["name"] == binary:
                try:
                    parent = self.psutil.Process(process.info["ppid"]).name()
                except self.psutil.Error:
                    parent = ""
                if parent != binary:
                    found.append(process)
        return min(found, key=lambda p: p.info["create_time"], default=None)

    def _family(self, handle) -> list:
        """The process and its children, the same psutil objects each time: cpu_percent measures
        from the previous call on the same object (a fresh one always says 0). Children are looked
        for every 10 s (each look reads every process of the machine: a tenth of this process's
        CPU when done every second)."""
        cached = self.families.get(handle.pid)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            members = [handle, *handle.children(recursive=True)]
        except self.psutil.Error:
            return []
        family = [self.known.setdefault(member.pid, member) for member in members]
        self.families[handle.pid] = (time.monotonic() + 10, family)
        return family

    def run(self):
        for handle in self.handles.values():
            for member in self._family(handle):
                member.cpu_percent(None)
        while not self.done.wait(1):
            for name, handle in self.handles.items():
                cpu = rss = shared = 0.0
                family = [handle] if name in self.alone else self._family(handle)
                for member in family:
                    try:
                        cpu += member.cpu_percent(None)
                        memory = member.memory_info()
                    except self.psutil.Error:
                        continue
                    if name in self.shared:
                        rss, shared = rss + memory.rss - memory.shared, max(shared, memory.shared)
                    else:
                        rss += memory.rss
                self.samples[name].append((cpu, (rss + shared) / 2**20))

    def report(self) -> None:
        for name, values in self.samples.items():
            if values:
                cpu = sum(v[0] for v in values) / len(values)
                line(f"  {name}", f"CPU {cpu:5.0f}% · peak RSS {max(v[1] for v in values):5.0f} MB")


# Report -----------------------------------------------------------------------------------------


def line(name: str, value: str, target: str = "") -> None:
    print(f"  {name:<52} {value:>22}   {target}")


def provider_received(simulator_url: str) -> dict[str, float]:
    """When the provider's API took each operator's reply (the simulators' outboxes)."""
    import httpx

    got = {}
    outbox = httpx.get(
        f"{simulator_url}/_simulator/outbox", params={"phone_number_id": PHONE_NUMBER_ID}, timeout=120
    ).json()
    for item in outbox:
        text = (item.get("body") or {}).get("text", {}).get("body", "")
        if text.startswith("reply ") and item["http_status"] == 200:
            got.setdefault(text, item["time"])
    outbox = httpx.get(
        f"{simulator_url}/_simulator/outbox", params={"kind": "messenger", "channel": PAGE_ID}, timeout=120
    ).json()
    for item in outbox:
        text = ((item.get("body") or {}).get("message") or {}).get("text", "")
        if text.startswith("reply ") and item["http_status"] < 300:
            got.setdefault(text, item["time"])
    return got


def callbacks_undelivered(simulator_url: str) -> int:
    import httpx

    undelivered = 0
    for number in (PHONE_NUMBER_ID, MARKETING_NUMBER_ID):
        webhooks = httpx.get(
            f"{simulator_url}/_simulator/webhooks", params={"phone_number_id": number}, timeout=120
        ).json()
        undelivered += sum(
            1 for hook in webhooks if not any(s and 200 <= s < 300 for s in hook.get("parley_statuses", []))
        )
    return undelivered


def main(argv=None) -> int:
    args = parse_args(argv)
    # Stopped (kill, a CI timeout): the servers it started and its database go too, as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    database, redis_url = server_urls()
    recreate_database(database)
    env = stack_env(
        database_url=with_database(database, BENCH_DB),
        redis_url=redis_url,
        prefix=PREFIX,
        drainers=max(1, args.workers - 1),
        API_RATE_LIMIT="1000000/minute",
    )
    logs = ROOT / "var" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    simulator_url = f"http://127.0.0.1:{free_port()}"
    simulator_command = [sys.executable, "-m", "apps.connectors.simulator", "--port", simulator_url.rsplit(":", 1)[1]]
    processes = {"simulator": spawn([*simulator_command, "--quiet"], env, logs / "busy-simulator.log")}
    try:
        return run(args, env, database, processes, simulator_url, logs)
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        from django.conf import settings

        if settings.configured:
            from django.db import connections

            connections.close_all()
        recreate_database(database, drop_only=True)


def run(args, env: dict, database: str, processes: dict, simulator_url: str, logs) -> int:
    import httpx

    started = time.monotonic()
    made = prepare(env, args, simulator_url)
    subprocess.run([sys.executable, "manage.py", "setup_schedules"], cwd=ROOT, env=env, check=True)
    ports = [free_port() for _ in range(args.web)]
    for port in ports:
        command = [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
        processes[f"daphne :{port}"] = spawn(command, env, logs / f"busy-daphne-{port}.log")
    celery = [str(BIN / "celery"), "--app", "config"]
    worker = ["nice", "-n", str(args.worker_nice), *celery, "worker", "--queues", PREFIX, "--loglevel", "WARNING"]
    worker += ["--concurrency", str(args.workers)]
    processes[f"worker x{args.workers}"] = spawn(
        [*worker, "--without-gossip", "--without-mingle"], env, logs / "busy-worker.log"
    )
    beat = [*celery, "beat", "--loglevel", "WARNING", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"]
    processes["beat"] = spawn([*beat, "--schedule", str(logs / "busy-beat-schedule")], env, logs / "busy-beat.log")
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    wait_until(lambda: _up(httpx, f"{simulator_url}/_simulator/channels"), 20, "the simulator")
    for url in urls:
        wait_until(lambda u=url: _up(httpx, f"{u}/healthz"), 60, "daphne")
    register(simulator_url, made, urls, args.statuses)
    print(
        f"machine: {os.cpu_count()} cores, shared with other work; {args.web} daphne, Celery prefork "
        f"x{args.workers} at nice {args.worker_nice}, beat; PostgreSQL {database.split('@')[-1]}; "
        f"set up in {time.monotonic() - started:.0f} s",
        flush=True,
    )

    from apps.broadcasts import services
    from apps.broadcasts.models import Broadcast, Recipient

    broadcast = made["broadcast"]
    services.broadcast_start(broadcast=broadcast)
    day = Day(args.operators)
    sampler = Sampler(processes)
    sampler.start()
    sent_before = Recipient.objects.filter(broadcast=broadcast, sent_at__isnull=False).count()
    clock = time.monotonic()
    asyncio.run(run_day(args, urls, made, day))
    sent = Recipient.objects.filter(broadcast=broadcast, sent_at__isnull=False).count() - sent_before
    elapsed = time.monotonic() - clock
    sampler.done.set()
    from apps.core.exceptions import Conflict

    with contextlib.suppress(Conflict):  # unless every recipient was sent already
        services.broadcast_pause(broadcast=Broadcast.objects.get(pk=broadcast.pk))

    time.sleep(5)  # the last replies leave
    received = provider_received(simulator_url)
    day.reply_ms = [(received[text] - at) * 1000 for text, at in day.replied_at.items() if text in received]
    if missing := len(day.replied_at) - len(day.reply_ms):
        day.errors["replies that never reached the provider"] += missing
    if day.sent_at:
        day.errors["customer messages no operator saw"] += len(day.sent_at)
    if undelivered := callbacks_undelivered(simulator_url):
        day.errors["status callbacks the provider could not deliver"] += undelivered

    minutes = args.minutes
    print(
        f"the day: {minutes:g} min asked, {elapsed:.0f} s taken with the backlog; {args.operators} operators; "
        f"{args.inbound_rate}/s inbound; a broadcast"
    )
    line("customer messages (WhatsApp + Messenger)", f"{len(day.ack):,}")
    line(
        "webhook acknowledgement p50 / p99 (ms)",
        f"{percentile(day.ack, 50):.0f} / {percentile(day.ack, 99):.0f}",
        f"target p99 ≤ {TARGETS['ack_p99_ms']}",
    )
    line(
        "webhook → operator's socket p50 / p99 (ms)",
        f"{percentile(day.to_operator, 50):.0f} / {percentile(day.to_operator, 99):.0f}",
        f"target p99 ≤ {TARGETS['operator_p99_ms']}",
    )
    line("operator replies", f"{len(day.replied_at):,}")
    line(
        "operator reply → provider p50 / p99 (ms)",
        f"{percentile(day.reply_ms, 50):.0f} / {percentile(day.reply_ms, 99):.0f}",
        f"target p99 ≤ {TARGETS['reply_p99_ms']}",
    )
    line(
        f"broadcast sent / rate (target {args.broadcast_rate}/s)",
        f"{sent:,} / {sent / elapsed:.1f} per s",
        f"{args.statuses!r} status callbacks each",
    )
    line("requests sent again (a kept-alive connection had closed)", f"{day.resent}", "as browsers do")
    line("errors", f"{sum(day.errors.values())}", "must be 0")
    for what, count in sorted(day.errors.items()):
        line(f"   {what}", f"{count}")
    print("processes (CPU: % of one core, mean over the day; PostgreSQL and Redis when on this machine)")
    sampler.report()
    return 0


def _up(httpx, url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
