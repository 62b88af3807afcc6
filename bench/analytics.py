"""Analytics: how fast the folder keeps up, and the dashboard over the large data set.

    python -m bench.analytics [--conversations 20000] [--rate 600] [--seconds 60]
                              [--requests 20] [--skip-dashboard | --skip-folding] [--fresh]

It keeps its own database, `parley_bench_analytics`, on the server DATABASE_URL names (or the
embedded one).

1. **Folding**: N conversations' worth of events (a customer message, the bot's greeting, an
   assignment, a person's reply, another exchange, a note, the close, a rating: 11 events each)
   folded from nothing by `events_fold_all`: events/s and conversations/s; then the same log
   rebuilt (`analytics_rebuild`).
2. **Lag under load**: a writer adds events at `--rate` events/s (the inbound bench's 300
   messages/s make about 600 events/s: each customer message and each reply is one) while the
   folder runs the way beat runs it, every 10 s; printed: the oldest event's age when each fold
   ends (the time a fact takes to reach the rollups), max and p95. Target: under 60 s.
3. **Dashboard**: on the inbox's generated data set (1,000,000 conversations, 10,000,000
   messages, 20 workspaces: `manage.py generate_inbox_data`, once), each conversation gets a
   cycle and the cycles' daily rollups are summed by SQL; then `/analytics/` for one workspace
   over 90 days is requested through the whole Django stack in this process, signed in as a
   supervisor: server-side p50/p95. Target: p95 ≤ 1 s.
"""

import argparse
import os
import random
import statistics
import threading
import time
from datetime import timedelta

from bench.inbound import percentile, server_urls, with_database

BENCH_DB = "parley_bench_analytics"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.analytics")
    parser.add_argument("--conversations", type=int, default=20_000, help="conversations for the folding run")
    parser.add_argument("--rate", type=int, default=600, help="events/s written during the lag run")
    parser.add_argument("--seconds", type=int, default=60, help="length of the lag run")
    parser.add_argument("--requests", type=int, default=20, help="dashboard requests measured")
    parser.add_argument("--skip-dashboard", action="store_true", help="only the folding runs")
    parser.add_argument("--skip-folding", action="store_true", help="only the dashboard")
    parser.add_argument("--fresh", action="store_true", help="drop and generate the data set again")
    return parser.parse_args(argv)


def setup(args) -> None:
    import psycopg

    database, redis_url = server_urls()
    with psycopg.connect(with_database(database, "postgres"), autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone()
        if args.fresh or not exists:
            connection.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{BENCH_DB}"')
    os.environ.update(
        {
            "DATABASE_URL": with_database(database, BENCH_DB),
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": "parley-bench-analytics",
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz-0123",
            "ALLOWED_HOSTS": "testserver",
            "SECURE_SSL_REDIRECT": "false",
            "SECURE_COOKIES": "false",
            "LOG_LEVEL": "ERROR",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # the page links its CSS (DEBUG off)


# 1 and 2: folding ------------------------------------------------------------------------------

# (seconds after the start, kind, by, who: "agent" = the assigned person)
TIMELINE = [
    (0, "opened", "contact", None),
    (0, "message_in", "contact", None),
    (2, "message_out", "bot", None),
    (40, "assigned", "system", "agent"),
    (95, "message_out", "agent", "agent"),
    (300, "message_in", "contact", "agent"),
    (340, "message_out", "agent", "agent"),
    (360, "note", "agent", "agent"),
    (400, "closed", "agent", "agent"),
    (460, "rated", "contact", "agent"),
    (460, "message_in", "contact", "agent"),
]


def folding_fixture(count: int):
    """A workspace with agents, a channel and `count` conversations without events."""
    from apps.connectors.models import Channel
    from apps.contacts.models import Contact
    from apps.conversations.models import Conversation
    from apps.workspaces.models import Membership, Role, Team, User, Workspace

    workspace = Workspace.objects.filter(slug="analytics-fold").first()
    if workspace is None:
        workspace = Workspace.objects.create(name="Folding", slug="analytics-fold", timezone="Asia/Hong_Kong")
    agents = list(Membership.objects.filter(workspace=workspace))
    if not agents:
        for n in range(10):
            user = User.objects.create(username=f"analytics-fold-agent-{n}")
            agents.append(Membership.objects.create(workspace=workspace, user=user, role=Role.AGENT))
    team = Team.objects.get_or_create(workspace=workspace, name="Orders")[0]
    channel = Channel.objects.get_or_create(workspace=workspace, kind="webchat", name="Chat")[0]
    have = Conversation.objects.filter(workspace=workspace).count()
    if have < count:
        contacts = Contact.objects.bulk_create(
            [Contact(workspace=workspace, name=f"Customer {n}") for n in range(count - have)], batch_size=2000
        )
        Conversation.objects.bulk_create(
            [Conversation(workspace=workspace, contact=c, channel=channel, team=team) for c in contacts],
            batch_size=2000,
        )
    ids = list(Conversation.objects.filter(workspace=workspace).order_by("id").values_list("id", flat=True))
    return workspace, [a.id for a in agents], team.id, ids[:count]


def write_events(workspace, agents, team_id, conversation_ids, start, rng) -> int:
    from django.utils import timezone

    from apps.analytics.models import Event

    rows = []
    for conversation_id in conversation_ids:
        agent = rng.choice(agents)
        began = start or timezone.now() - timedelta(seconds=rng.randrange(0, 90 * 86400))
        for offset, kind, by, who in TIMELINE:
            assigned = agent if who else None
            rows.append(
                Event(
                    workspace=workspace,
                    conversation_id=conversation_id,
                    kind=kind,
                    by=by,
                    at=began + timedelta(seconds=offset),
                    author_id=agent if by == "agent" else None,
                    agent_id=assigned,
                    team_id=team_id,
                    value=rng.randint(1, 5) if kind == "rated" else None,
                    data={"language": "en"} if kind == "message_in" else {},
                )
            )
    Event.objects.bulk_create(rows, batch_size=5000)
    return len(rows)


def bench_folding(args) -> None:
    from apps.analytics.models import Cycle, Daily, Event
    from apps.analytics.services import analytics_rebuild, events_fold_all

    rng = random.Random(7)
    workspace, agents, team_id, ids = folding_fixture(args.conversations)
    Event.objects.filter(workspace=workspace).delete()
    Cycle.objects.filter(workspace=workspace).delete()
    Daily.objects.filter(workspace=workspace).delete()
    written = write_events(workspace, agents, team_id, ids, None, rng)
    started = time.perf_counter()
    folded = events_fold_all()
    elapsed = time.perf_counter() - started
    print(
        f"  fold from nothing: {folded:,} events of {len(ids):,} conversations in {elapsed:.1f} s: "
        f"{folded / elapsed:,.0f} events/s, {len(ids) / elapsed:,.0f} conversations/s"
    )
    assert folded == written
    started = time.perf_counter()
    analytics_rebuild(workspace=workspace)
    elapsed = time.perf_counter() - started
    print(f"  analytics_rebuild of the same: {elapsed:.1f} s ({len(ids) / elapsed:,.0f} conversations/s)")


def bench_lag(args) -> None:
    """A writer thread adds whole conversations' events at --rate; the folder runs every 10 s."""
    from django.db import connection
    from django.utils import timezone

    from apps.analytics.services import events_fold_all, fold_lag

    rng = random.Random(9)
    workspace, agents, team_id, ids = folding_fixture(args.conversations)
    per_conversation = len(TIMELINE)
    stop = threading.Event()
    written = [0]

    def writer():
        try:
            tick, cursor = time.monotonic(), 0
            while not stop.is_set():
                batch = ids[cursor : cursor + max(1, args.rate // per_conversation)]
                cursor = (cursor + len(batch)) % len(ids)
                written[0] += write_events(workspace, agents, team_id, batch, timezone.now(), rng)
                tick += 1
                time.sleep(max(0.0, tick - time.monotonic()))
        finally:
            connection.close()

    events_fold_all()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    lags, deadline = [], time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        next_run = time.monotonic() + 10
        before = fold_lag()["oldest_seconds"]
        started = time.perf_counter()
        events_fold_all()
        took = time.perf_counter() - started
        lags.append(before + took)  # the oldest event waited this long to be in the rollups
        time.sleep(max(0.0, next_run - time.monotonic()))
    stop.set()
    thread.join()
    print(
        f"  lag with {written[0] / args.seconds:,.0f} events/s written for {args.seconds} s, folder every 10 s: "
        f"oldest event reached the rollups after max {max(lags):.1f} s, p95 {percentile(lags, 95):.1f} s "
        f"(mean fold {statistics.fmean(lags):.1f} s)   [target 60 s]"
    )


# 3: the dashboard ------------------------------------------------------------------------------

HOURS = ", ".join(
    f"count(*) FILTER (WHERE extract(hour FROM c.opened_at AT TIME ZONE w.timezone) = {h})" for h in range(24)
)


def _buckets_sql(column: str) -> str:
    """The folder's buckets (models.BUCKETS) counted by SQL."""
    from apps.analytics.models import BUCKETS

    return ", ".join(
        f"count(*) FILTER (WHERE c.{column} >= {lo} AND c.{column} < {hi})"
        for lo, hi in zip((0, *BUCKETS), (*BUCKETS, 10**9), strict=True)
    )


SCORES = ", ".join(f"count(*) FILTER (WHERE c.csat = {s})" for s in range(1, 6))


def dashboard_data(args) -> None:
    from django.core.management import call_command
    from django.db import connection

    from apps.analytics.models import Cycle
    from apps.conversations.models import Conversation

    if not Conversation.objects.filter(workspace__slug="bench-01").exists():
        print("  generating 1,000,000 conversations and 10,000,000 messages (once)", flush=True)
        call_command("generate_inbox_data")
    if Cycle.objects.filter(workspace__slug__startswith="bench-0").exists():
        totals_from_daily()
        return
    print("  a cycle for each conversation and their daily rollups (once)", flush=True)
    first, resolved = _buckets_sql("first_response_seconds"), _buckets_sql("resolution_seconds")
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO analytics_cycle (
                workspace_id, conversation_id, number, contact_id, channel_id, source, team_id, assignee_id,
                assignees, category, language, opened_at, first_message_at, first_assigned_at,
                first_response_at, first_response_seconds, assigned_response_seconds, responder_id, responses,
                response_seconds, closed_at, resolution_seconds, closed_by, closer_id, summary, csat,
                csat_agent_id, messages_in, messages_out, messages_bot, notes, handle_seconds, queue_seconds,
                bot, handed_over, contained, contribution)
            SELECT c.workspace_id, c.id, 1, c.contact_id, c.channel_id, 'inbound', c.team_id, c.assignee_id,
                CASE WHEN c.assignee_id IS NULL THEN '{}'::bigint[] ELSE ARRAY[c.assignee_id] END,
                c.category, c.language, c.opened_at, c.opened_at, c.opened_at + r.a * interval '60 s',
                CASE WHEN c.assignee_id IS NOT NULL THEN c.opened_at + (r.f * r.f * 3600) * interval '1 s' END,
                CASE WHEN c.assignee_id IS NOT NULL THEN (r.f * r.f * 3600)::int END,
                CASE WHEN c.assignee_id IS NOT NULL THEN greatest(0, (r.f * r.f * 3600 - r.a * 60)::int) END,
                c.assignee_id, 3, (r.f * r.f * 3600 + 400)::int,
                CASE WHEN c.status = 'closed' THEN c.opened_at + (r.g * 86400) * interval '1 s' END,
                CASE WHEN c.status = 'closed' THEN (r.g * 86400)::int END,
                CASE WHEN c.status = 'closed' THEN 'agent' ELSE '' END,
                CASE WHEN c.status = 'closed' THEN c.assignee_id END, '',
                CASE WHEN r.h < 0.3 THEN 1 + floor(r.h * 16)::int % 5 END,
                CASE WHEN r.h < 0.3 THEN c.assignee_id END,
                5, 4, 1, 1, (r.a * 900)::int, NULL, r.h > 0.5, r.h > 0.8, r.h > 0.5 AND r.h < 0.6, '[]'
            FROM conversations_conversation c
            JOIN workspaces_workspace w ON w.id = c.workspace_id AND w.slug ~ '^bench-[0-9]+$'
            CROSS JOIN LATERAL (SELECT random() AS a, random() AS f, random() AS g, random() AS h
                                WHERE c.id IS NOT NULL) r
            """
        )
        cursor.execute(
            f"""
            INSERT INTO analytics_daily (
                workspace_id, day, agent_id, team_id, channel_id, category, language,
                opened, reopened, closed, contained, messages_in, messages_out, messages_bot, notes, assigned,
                transfers, first_responses, first_response_seconds, first_response_buckets, assigned_responses,
                assigned_response_seconds, responses, response_seconds, resolution_seconds, resolution_buckets,
                handle_seconds, csat_count, csat_sum, csat_scores, bot_conversations, handovers, faq_answered,
                faq_accepted, queued, queue_waits, queue_wait_seconds, opened_by_hour)
            SELECT c.workspace_id, (c.opened_at AT TIME ZONE w.timezone)::date, c.assignee_id, c.team_id,
                c.channel_id, c.category, c.language,
                count(*), 0, count(c.closed_at), count(*) FILTER (WHERE c.contained), sum(c.messages_in),
                sum(c.messages_out), sum(c.messages_bot), sum(c.notes), count(c.assignee_id), 0,
                count(c.first_response_seconds), coalesce(sum(c.first_response_seconds), 0), ARRAY[{first}],
                count(c.assigned_response_seconds), coalesce(sum(c.assigned_response_seconds), 0),
                sum(c.responses), sum(c.response_seconds), coalesce(sum(c.resolution_seconds), 0),
                ARRAY[{resolved}], sum(c.handle_seconds), count(c.csat), coalesce(sum(c.csat), 0), ARRAY[{SCORES}],
                count(*) FILTER (WHERE c.bot), count(*) FILTER (WHERE c.handed_over), 0, 0, 0, 0, 0,
                ARRAY[{HOURS}]
            FROM analytics_cycle c JOIN workspaces_workspace w ON w.id = c.workspace_id
            WHERE w.slug ~ '^bench-[0-9]+$'
            GROUP BY 1, 2, 3, 4, 5, 6, 7
            """  # noqa: S608 (constants built above)
        )
        cursor.execute("ANALYZE analytics_cycle")
        cursor.execute("ANALYZE analytics_daily")
    totals_from_daily()


def totals_from_daily() -> None:
    """The per-day workspace totals the folder keeps beside the detailed rows (once)."""
    from django.db import connection

    from apps.analytics.models import ARRAY_COUNTERS, SCALAR_COUNTERS, DailyTotal

    if DailyTotal.objects.filter(workspace__slug__startswith="bench-0").exists():
        return
    print("  repeat contacts and per-day workspace totals (once)", flush=True)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE analytics_cycle c SET came_back = true
            WHERE c.closed_at IS NOT NULL AND EXISTS (
                SELECT 1 FROM analytics_cycle o WHERE o.workspace_id = c.workspace_id AND o.contact_id = c.contact_id
                  AND o.opened_at > c.closed_at AND o.opened_at <= c.closed_at + interval '7 days')
            """
        )
    arrays = ", ".join(
        f"ARRAY[{', '.join(f'sum({name}[{i}])' for i in range(1, size + 1))}]" for name, size in ARRAY_COUNTERS.items()
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO analytics_dailytotal (
                workspace_id, day, {", ".join(SCALAR_COUNTERS)}, {", ".join(ARRAY_COUNTERS)})
            SELECT workspace_id, day, {", ".join(f"sum({name})" for name in SCALAR_COUNTERS)}, {arrays}
            FROM analytics_daily GROUP BY workspace_id, day
            """  # noqa: S608 (names from the model)
        )
        cursor.execute("ANALYZE analytics_dailytotal")


def bench_dashboard(args) -> None:
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from apps.analytics.models import Cycle, Daily
    from apps.workspaces.models import Membership, Team

    dashboard_data(args)
    supervisors = list(
        Membership.objects.filter(workspace__slug__startswith="bench-", role="supervisor").select_related(
            "user", "workspace"
        )
    )
    rng = random.Random(3)
    print(
        f"  data: {Cycle.objects.count():,} cycles, {Daily.objects.count():,} daily rows; "
        f"{args.requests} requests, random supervisors of {len(supervisors)} workspaces, 90 days"
    )
    cases = {
        "/analytics/ (90 days)": lambda today: f"/analytics/?from={today - timedelta(days=89)}&to={today}",
        "/analytics/ (90 days, one team)": None,
        "/api/v1/reports/summary/ (90 days)": lambda today: (
            f"/api/v1/reports/summary/?from={today - timedelta(days=89)}&to={today}"
        ),
    }
    clients = {}
    for name, path_of in cases.items():
        values = []
        for n in range(args.requests + 2):
            supervisor = rng.choice(supervisors)
            client = clients.get(supervisor.pk)
            if client is None:
                client = clients[supervisor.pk] = Client()
                client.force_login(supervisor.user)
            today = timezone.now().astimezone(supervisor.workspace.tz).date()
            if path_of is None:
                team = Team.objects.filter(workspace=supervisor.workspace).order_by("id").first().pk
                path = f"/analytics/?from={today - timedelta(days=89)}&to={today}&team={team}"
            else:
                path = path_of(today)
            started = time.perf_counter()
            response = client.get(path, HTTP_HOST="testserver")
            if response.status_code == 404 and n == 0:
                print(f"  {name}: not there yet (404)")
                break
            if response.status_code != 200:
                raise SystemExit(f"bench: GET {path} answered {response.status_code}: {response.content[:300]!r}")
            if n >= 2:  # the first two warm the caches
                values.append((time.perf_counter() - started) * 1000)
        if values:
            p95 = percentile(values, 95)
            print(
                f"  {name:<38} p50 {percentile(values, 50):7.1f} ms   p95 {p95:7.1f} ms   "
                f"[{'ok' if p95 <= 1000 else 'over'} 1000 ms]"
            )
    connection.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    setup(args)
    if not args.skip_folding:
        print("folding:")
        bench_folding(args)
        bench_lag(args)
    if not args.skip_dashboard:
        print("dashboard:")
        bench_dashboard(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
