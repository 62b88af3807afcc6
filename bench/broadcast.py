"""A broadcast to 100,000 recipients against the channel simulator.

    python -m bench.broadcast [--recipients 100000] [--seconds 30] [--rate 80] [--fast-rate 1000]
                              [--workers 3] [--web 1|2] [--statuses sent|delivered]

It makes its own database (`parley_bench_broadcast`, dropped at the end) and Redis key prefix on
the servers DATABASE_URL / REDIS_URL name (or the embedded ones), starts the WhatsApp simulator, a
daphne and a Celery worker, and measures:

1. audience resolution: the recipient rows of a segment of N contacts (one INSERT … SELECT), its
   time and the peak RSS of the process doing it, run in a fresh process, and the same for a
   segment a tenth the size: memory does not grow with the audience;
2. sending at the channel's default 80 messages/s (`--rate`), over `--seconds` once steady: the
   rate and its spread second by second. Meanwhile the simulator's status callbacks (`sent`, one
   per message; `--statuses delivered`: two) pour into daphne and the worker, and the inbox list
   (GET /api/v1/conversations/)
   is timed as a supervisor: p50 / p95 against the same list before the broadcast (`--web 2`: on a
   daphne apart from the one taking the webhooks, as a load balancer in front of several would
   spread them); then how long the worker takes to apply every status once the sending stops,
   and the list once more with nothing running (its rows now show the broadcast's messages).
   The database server may be shared: should the web process's connections pass 50 (one per
   webhook it is still handling), callbacks are switched off and the report says when;
3. the cap lifted (1,000/s, WhatsApp's ceiling for upgraded numbers; status callbacks off so
   the two cores send): the rate reached.
"""

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.inbound import (
    BIN,
    ROOT,
    free_port,
    percentile,
    server_urls,
    spawn,
    stack_env,
    wait_until,
    with_database,
)

BENCH_DB = "parley_bench_broadcast"
PREFIX = "parley-bench-broadcast"
PHONE_NUMBER_ID = "900000002"
APP_SECRET = "bench-broadcast-secret"  # noqa: S105 (a throwaway channel of the bench database)
TARGETS = {"resolve_s": 30, "rate_tolerance": 0.05, "fast_rate": 1000}

RESOLVE = """
import json, resource, sys, time
import django
django.setup()
from apps.broadcasts.services import broadcast_audience_resolve
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
total = broadcast_audience_resolve(broadcast_id=int(sys.argv[1]))
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"total": total, "seconds": seconds, "baseline_kb": baseline, "peak_kb": peak}))
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.broadcast")
    parser.add_argument("--recipients", type=int, default=100_000, help="contacts in the audience")
    parser.add_argument("--seconds", type=int, default=30, help="length of each measured sending window")
    parser.add_argument(
        "--rate", type=int, default=80, help="the channel's messages/s for phase 2 (WhatsApp's default: 80)"
    )
    parser.add_argument("--fast-rate", type=int, default=1000, help="messages/s once the cap is lifted")
    parser.add_argument(
        "--workers", type=int, default=3, help="Celery worker processes (the sender + status drainers)"
    )
    parser.add_argument(
        "--web", type=int, default=1, choices=(1, 2), help="2: the inbox on a daphne apart from the webhooks'"
    )
    parser.add_argument("--worker-nice", type=int, default=10, help="the worker's nice level (as in the Procfile)")
    parser.add_argument(
        "--statuses",
        default="sent",
        choices=("sent", "delivered"),
        help="status callbacks per message while sending at 80/s: sent (1) or sent + delivered (2)",
    )
    return parser.parse_args(argv)


# Servers and data ------------------------------------------------------------------------------


def recreate_database(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(with_database(admin_url, "postgres"), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{BENCH_DB}"')


def drop_database(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(with_database(admin_url, "postgres"), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def prepare(env: dict, recipients: int, simulator_url: str) -> dict:
    """Migrates the bench database; makes a workspace, a supervisor (and a session), a WhatsApp
    number on the simulator, a marketing template, N opted-in contacts and two segments."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.sessions.backends.cached_db import SessionStore
    from django.core.management import call_command

    from apps.broadcasts.models import BroadcastSettings, Segment
    from apps.connectors.models import MessageTemplate
    from apps.workspaces import services
    from apps.workspaces.models import Role, User

    call_command("migrate", verbosity=0)
    workspace = services.workspace_create(
        name="Bench", slug="bench", timezone_name="Africa/Cairo", default_language="en"
    )
    user = User.objects.create_user("bench-supervisor", password="unused-bench-password")  # noqa: S106
    services.membership_add(workspace=workspace, user=user, role=Role.SUPERVISOR)
    channel = whatsapp_number(workspace, simulator_url, PHONE_NUMBER_ID, "Bench number", APP_SECRET)
    template = MessageTemplate.objects.create(
        workspace=workspace,
        channel=channel,
        name="bench_promo",
        body="Hi {{1}}, {{2}} off fruit this week.",
        category="marketing",
    )
    midnight = time_of(0)
    BroadcastSettings.objects.create(workspace=workspace, weekly_cap=100, quiet_from=midnight, quiet_until=midnight)
    started = time.perf_counter()
    make_contacts(workspace, recipients)
    made_s = time.perf_counter() - started
    segments = {
        name: Segment.objects.create(
            workspace=workspace,
            name=name,
            definition={"match": "all", "conditions": [{"field": "tag", "op": "is", "value": name}]},
        )
        for name in ("everyone", "a-tenth")
    }
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    return {
        "workspace": workspace,
        "channel": channel,
        "template": template,
        "segments": segments,
        "session": session.session_key,
        "contacts_s": made_s,
    }


def time_of(hour: int):
    from datetime import time as clock

    return clock(hour, 0)


def whatsapp_number(workspace, simulator_url: str, phone_number_id: str, name: str, app_secret: str, **fields):
    """A WhatsApp channel on the simulator whose webhooks are signed with `app_secret`."""
    from apps.connectors.models import Channel

    credentials = {"access_token": "t", "app_secret": app_secret, "phone_number_id": phone_number_id, "waba_id": "W"}
    return Channel.objects.create(
        workspace=workspace,
        kind="whatsapp",
        name=name,
        credentials=credentials,
        settings={"base_url": simulator_url},
        **fields,
    )


def make_contacts(workspace, count: int) -> None:
    """N opted-in contacts (names and phones encrypted, blind-indexed), all tagged `everyone`, a
    tenth `a-tenth`; a thousand have an open conversation, so the inbox has a page to show."""
    from django.utils import timezone

    from apps.contacts.models import Contact, Tag
    from apps.conversations.models import Conversation
    from apps.core.crypto import blind_index

    everyone = Tag.objects.create(workspace=workspace, name="everyone")
    tenth = Tag.objects.create(workspace=workspace, name="a-tenth")
    consent = {"whatsapp": {"opted_in": True, "at": "2025-01-01T00:00:00Z"}}
    through = Contact.tags.through
    for start in range(0, count, 5000):
        batch = []
        for n in range(start, min(count, start + 5000)):
            phone = f"+2010{n:08d}"
            batch.append(
                Contact(
                    workspace=workspace,
                    name=f"Customer {n}",
                    phone=phone,
                    phone_index=blind_index(phone),
                    country="EG",
                    marketing_consent=consent,
                )
            )
        Contact.objects.bulk_create(batch)
        links = [through(contact_id=c.pk, tag_id=everyone.pk) for c in batch]
        links += [through(contact_id=c.pk, tag_id=tenth.pk) for c in batch[::10]]
        through.objects.bulk_create(links)
    from apps.connectors.models import Channel

    number = Channel.objects.get(workspace=workspace)
    now = timezone.now()
    Conversation.objects.bulk_create(
        [
            Conversation(workspace=workspace, contact=contact, channel=number, last_message_at=now, status="open")
            for contact in Contact.objects.filter(workspace=workspace).order_by("-id")[:1000]
        ]
    )


def resolve_in_fresh_process(env: dict, broadcast_id: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", RESOLVE, str(broadcast_id)],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# Measures --------------------------------------------------------------------------------------


def sent_count(broadcast_id: int) -> int:
    from apps.broadcasts.models import Recipient

    return Recipient.objects.filter(broadcast_id=broadcast_id, sent_at__isnull=False).count()


def measure_rate(broadcast_id: int, seconds: int, warmup: float = 5) -> dict:
    """Sent per second, sampled each second for `seconds` after `warmup`."""
    time.sleep(warmup)
    samples = [(time.monotonic(), sent_count(broadcast_id))]
    for _ in range(seconds):
        time.sleep(max(0.0, samples[0][0] + len(samples) - time.monotonic()))
        samples.append((time.monotonic(), sent_count(broadcast_id)))
    per_second = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(samples)]
    return {
        "rate": (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0]),
        "per_second": per_second,
        "sent": samples[-1][1],
    }


class ConnectionGuard:
    """The PostgreSQL server is shared: should the web process's connections pile up (one per
    webhook it is still handling), status callbacks are switched off before they crowd everyone
    else out, and the report says so."""

    LIMIT = 50

    def __init__(self, sim):
        self.sim, self.tripped_at, self.peak = sim, None, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def _run(self):
        from django.db import connection

        while not self.stop.wait(1):
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
                count = cursor.fetchone()[0]
            self.peak = max(self.peak, count)
            if count > self.LIMIT and self.tripped_at is None:
                self.tripped_at = time.monotonic() - self.started
                self.sim.post("/_simulator/settings", json={"auto_status": "none"})
        connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


class InboxProbe:
    """A supervisor's inbox list, requested again and again on one connection."""

    def __init__(self, url: str, session: str):
        import httpx

        self.client = httpx.Client(base_url=url, cookies={"sessionid": session}, timeout=30)
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            started = time.perf_counter()
            response = self.client.get("/api/v1/conversations/?limit=50")
            self.latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"bench: the inbox list answered {response.status_code}: {response.text[:300]}")
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.client.close()


def wait_released(broadcast_id: int, timeout: float = 60) -> None:
    from apps.broadcasts.models import Broadcast

    wait_until(lambda: Broadcast.objects.get(pk=broadcast_id).claimed_at is None, timeout, "the sender to stop")


# Report ----------------------------------------------------------------------------------------


def line(name: str, value: str, target: str = "") -> None:
    print(f"  {name:<48} {value:>18}   {target}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
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
    simulator_port, web_port = free_port(), free_port()
    simulator_url, web_url = f"http://127.0.0.1:{simulator_port}", f"http://127.0.0.1:{web_port}"
    processes = [
        spawn(
            [sys.executable, "-m", "apps.connectors.simulator", "--port", str(simulator_port), "--quiet"],
            env,
            logs / "broadcast-simulator.log",
        )
    ]
    try:
        return run(args, env, database, processes, simulator_url, web_url, web_port, logs)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        from django.conf import settings

        if settings.configured:
            from django.db import connections

            connections.close_all()
        drop_database(database)


def run(args, env, database, processes, simulator_url, web_url, web_port, logs: Path) -> int:
    import httpx

    print(
        f"machine: {os.cpu_count()} cores; {args.recipients:,} contacts; {args.web} daphne, "
        f"Celery prefork x{args.workers}{f' at nice {args.worker_nice}' if args.worker_nice else ''}; "
        f"PostgreSQL at {database.split('@')[-1]}",
        flush=True,
    )
    made = prepare(env, args.recipients, simulator_url)
    channel, template, segments = made["channel"], made["template"], made["segments"]
    type(channel).objects.filter(pk=channel.pk).update(rate_limit_per_second=args.rate)
    channel.refresh_from_db()
    print(f"  ({args.recipients:,} contacts made in {made['contacts_s']:.0f} s)", flush=True)
    inbox_port = free_port() if args.web == 2 else web_port
    webs = []
    for port in sorted({web_port, inbox_port}):
        command = [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
        webs.append(spawn(command, env, logs / f"broadcast-daphne-{port}.log"))
    processes.extend(webs)
    inbox_url = f"http://127.0.0.1:{inbox_port}"
    worker = ["nice", "-n", str(args.worker_nice)] if args.worker_nice else []
    worker += [str(BIN / "celery"), "--app", "config", "worker", "--queues", PREFIX, "--loglevel", "WARNING"]
    worker += ["--concurrency", str(args.workers), "--without-gossip", "--without-mingle"]
    processes.append(spawn(worker, env, logs / "broadcast-worker.log"))
    wait_until(lambda: _up(httpx, f"{simulator_url}/_simulator/channels"), 20, "the simulator")
    for url in {web_url, inbox_url}:
        wait_until(lambda u=url: _up(httpx, f"{u}/healthz"), 30, "daphne")
    sim = httpx.Client(base_url=simulator_url, timeout=30)
    sim.post(
        "/_simulator/channels",
        json={
            "kind": "whatsapp",
            "phone_number_id": PHONE_NUMBER_ID,
            "access_token": "t",
            "app_secret": APP_SECRET,
            "verify_token": channel.verify_token,
            "webhook_url": f"{web_url}/webhooks/{channel.uuid}/",
        },
    ).raise_for_status()
    # The simulator's own throughput limit well above ours: what is measured is Parley's pacing.
    # A webhook it gives up on after 10 s (not 3) is retried less: Parley is measured, not a storm.
    sim.post(
        "/_simulator/settings",
        json={"rate_per_second": 100_000, "auto_status": args.statuses, "status_delay": 0.2, "webhook_timeout": 10},
    ).raise_for_status()

    from apps.broadcasts import services
    from apps.broadcasts.models import Broadcast

    def make(segment):
        return services.broadcast_create(
            workspace=channel.workspace,
            name=f"Bench {segment.name}",
            channel=channel,
            template=template,
            variables=[{"field": "contact.first_name"}, {"value": "20%"}],
            audience=Broadcast.Audience.SEGMENT,
            segment=segment,
        )

    print("1. audience resolution (a fresh process each; one INSERT … SELECT)")
    small, large = make(segments["a-tenth"]), make(segments["everyone"])
    for broadcast in (small, large):
        # What a start does first (the segment's conditions copied), without queueing the sender.
        Broadcast.objects.filter(pk=broadcast.pk).update(audience_definition=broadcast.segment.definition)
        measured = resolve_in_fresh_process(env, broadcast.pk)
        line(
            f"{measured['total']:,} recipients: time / rows per s",
            f"{measured['seconds']:.1f} s / {measured['total'] / measured['seconds']:,.0f}",
            f"target ≤ {TARGETS['resolve_s']} s" if broadcast is large else "",
        )
        line(
            "   peak RSS (after django.setup → peak)",
            f"{measured['baseline_kb'] / 1024:.0f} → {measured['peak_kb'] / 1024:.0f} MB",
        )

    with InboxProbe(inbox_url, made["session"]) as idle:
        time.sleep(5)
    where = "the same daphne as the webhooks" if args.web == 1 else "a daphne of its own"
    per_message = {"sent": 1, "delivered": 2}[args.statuses]
    print(f"2. sending at {channel.rate_limit_per_second}/s; {per_message} status callback(s) per message")
    services.broadcast_start(broadcast=large)
    with ConnectionGuard(sim) as guard, InboxProbe(inbox_url, made["session"]) as busy:
        steady = measure_rate(large.pk, args.seconds)
    report_rate(steady, args.seconds, channel.rate_limit_per_second, exact=True)
    for name, probe in (("idle", idle), ("during the broadcast", busy)):
        values = probe.latencies
        line(
            f"inbox list p50 / p95 {name}, n={len(values)} (ms)",
            f"{percentile(values, 50):.0f} / {percentile(values, 95):.0f}",
            where if name != "idle" else "",
        )
    services.broadcast_pause(broadcast=Broadcast.objects.get(pk=large.pk))
    wait_released(large.pk)
    sent = sent_count(large.pk)
    inbound = _inbound_counts()
    line(
        "status callbacks sent / stored / applied by then",
        f"{per_message * sent:,} / {inbound['stored']:,} / {inbound['processed']:,}",
    )
    if inbound["failed"]:
        line(f"   callbacks that failed to apply: {inbound['failed']:,}", _inbound_error())
    line("   database connections, peak", f"{guard.peak}")
    if guard.tripped_at is not None:
        line(f"   over {guard.LIMIT} connections after {guard.tripped_at:.0f} s", "callbacks switched off")
    caught_up = wait_statuses(timeout=180)
    inbound = _inbound_counts()
    line(
        "   applied when the pipeline was idle again",
        f"{inbound['processed']:,} after {caught_up:.0f} s" if caught_up is not None else "not within 180 s",
    )
    # The same list with the broadcast's conversations in it (each row now has a last message to
    # show), nothing running: what the load itself costs is "during" against this, not "idle".
    with InboxProbe(inbox_url, made["session"]) as after:
        time.sleep(5)
    values = after.latencies
    line(
        f"inbox list p50 / p95 after, idle again, n={len(values)} (ms)",
        f"{percentile(values, 50):.0f} / {percentile(values, 95):.0f}",
        "the rows the broadcast touched",
    )
    for web in webs:  # not needed any more; whatever database connections they hold go with them
        web.kill()
        web.wait()

    from apps.connectors.models import Channel

    duplicates = _duplicates(sim)
    # A fresh outbox: the simulator keeps every send in memory, and phase 3 is about Parley's pace.
    sim.post("/_simulator/reset", json={}).raise_for_status()
    sim.post(
        "/_simulator/settings", json={"rate_per_second": 100_000, "auto_status": "none", "webhook_timeout": 10}
    ).raise_for_status()
    Channel.objects.filter(pk=channel.pk).update(rate_limit_per_second=args.fast_rate)
    print(f"3. the cap lifted: {args.fast_rate}/s (status callbacks off: the two cores send)")
    services.broadcast_resume(broadcast=Broadcast.objects.get(pk=large.pk))
    report_rate(measure_rate(large.pk, args.seconds, warmup=3), args.seconds, args.fast_rate, exact=False)
    from apps.core.exceptions import Conflict

    with contextlib.suppress(Conflict):  # a small audience is all sent by now
        services.broadcast_cancel(broadcast=Broadcast.objects.get(pk=large.pk))
    wait_released(large.pk)
    line("numbers sent to more than once (simulator's outbox)", f"{duplicates + _duplicates(sim)}")
    line("messages retried (a provider error, then sent)", f"{_retried(large.pk)}")
    return 0


def report_rate(measured: dict, seconds: int, rate: int, *, exact: bool) -> None:
    per_second = measured["per_second"]
    if exact:
        target = "ok" if abs(measured["rate"] - rate) <= TARGETS["rate_tolerance"] * rate else f"over ±5% of {rate}"
    else:
        target = f"target ≥ {TARGETS['fast_rate']}"
    line(f"messages/s over {seconds} s", f"{measured['rate']:.1f}", target)
    spread = f"{min(per_second):.0f} / {statistics.median(per_second):.0f} / {max(per_second):.0f}"
    line("   each second: min / median / max", spread)


def wait_statuses(timeout: float) -> float | None:
    """Seconds until no status callback is stored for 3 s and none waits to be applied (None: not
    within `timeout`)."""
    started, last, still = time.monotonic(), None, 0
    while time.monotonic() - started < timeout:
        counts = _inbound_counts()
        still = still + 1 if counts["stored"] == last and counts["processed"] == counts["stored"] else 0
        if still >= 3:
            return time.monotonic() - started - 3
        last = counts["stored"]
        time.sleep(1)
    return None


def _retried(broadcast_id: int) -> int:
    from apps.conversations.models import Message

    return Message.objects.filter(payload__broadcast_id=broadcast_id, attempts__gt=1).count()


def _duplicates(sim) -> int:
    """Numbers the simulator accepted more than one message for (it keeps every send)."""
    from collections import Counter

    sent = Counter(item["to"] for item in sim.get("/_simulator/outbox").json() if item["http_status"] == 200)
    return sum(1 for count in sent.values() if count > 1)


def _inbound_counts() -> dict:
    from django.db.models import Count, Q

    from apps.conversations.models import InboundEvent

    return InboundEvent.objects.aggregate(
        stored=Count("pk"),
        processed=Count("pk", filter=Q(state=InboundEvent.State.PROCESSED)),
        failed=Count("pk", filter=Q(state=InboundEvent.State.FAILED) | ~Q(error="")),
    )


def _inbound_error() -> str:
    from apps.conversations.models import InboundEvent

    failed = InboundEvent.objects.exclude(error="").values_list("error", flat=True).first()
    return (failed or "")[:160]


def _up(httpx, url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
