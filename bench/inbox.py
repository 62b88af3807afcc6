"""The inbox over a large data set, measured server-side.

    python -m bench.inbox [--requests 200] [--conversations 1000000] [--messages 10000000]
                          [--workspaces 20] [--fresh] [--explain]

It keeps its own database, `parley_bench_inbox`, on the server DATABASE_URL names (or the
embedded one), and fills it once with `manage.py generate_inbox_data` (about five minutes for
the default 1M conversations / 10M messages on two cores); later runs reuse it (`--fresh` makes
it again). Requests go through the whole Django stack in this process (middleware, session,
DRF, serializers, PostgreSQL) of the application daphne serves (config/asgi.py, loaded first),
signed in as generated agents of random workspaces, and what is timed is the server's work for
each request, without a network in between:

- the inbox list, 50 rows, for each view (Mine, Unassigned, My teams, All) and each single
  filter (status, channel, team, tag, priority, language, a contact search, a text search);
- opening a conversation of 200 messages: its timeline (`contacts/{id}/timeline/?limit=200`),
  and everything the page asks for when a conversation opens.

`--explain` prints the plans of the list and timeline queries.
"""

import argparse
import os
import random
import statistics
import sys
import time

from bench.inbound import percentile, server_urls, with_database

BENCH_DB = "parley_bench_inbox"
TARGETS = {"list_p95_ms": 50, "open_p95_ms": 100}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.inbox")
    parser.add_argument("--requests", type=int, default=200, help="requests per measured case")
    parser.add_argument("--workspaces", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--fresh", action="store_true", help="drop and generate the data set again")
    parser.add_argument("--explain", action="store_true", help="print the query plans")
    return parser.parse_args(argv)


def ensure_database(admin_url: str, fresh: bool) -> bool:
    """True when the database was (re)made and needs data."""
    import psycopg

    with psycopg.connect(with_database(admin_url, "postgres"), autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone()
        if exists and not fresh:
            return False
        connection.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{BENCH_DB}"')
        return True


def setup(args) -> None:
    database, redis_url = server_urls()
    made = ensure_database(database, args.fresh)
    os.environ.update(
        {
            "DATABASE_URL": with_database(database, BENCH_DB),
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": "parley-bench-inbox",
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz-0123",
            "ALLOWED_HOSTS": "testserver",
            "SECURE_SSL_REDIRECT": "false",
            "SECURE_COOKIES": "false",
            "LOG_LEVEL": "ERROR",
            "API_RATE_LIMIT": "1000000/minute",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    from apps.workspaces.models import Workspace

    call_command("migrate", verbosity=0)
    if made or not Workspace.objects.filter(slug="bench-01").exists():
        print(
            f"generating {args.conversations:,} conversations and {args.messages:,} messages in "
            f"{args.workspaces} workspaces (once; later runs reuse {BENCH_DB})",
            flush=True,
        )
        call_command(
            "generate_inbox_data",
            workspaces=args.workspaces,
            conversations=args.conversations,
            messages=args.messages,
        )


def load_server() -> None:
    """The process starts as daphne's does, by loading the ASGI application: whatever the server
    does once loaded (config/asgi.py) is done here too, before the first measured request."""
    import importlib

    importlib.import_module("config.asgi")


def timed(client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"bench: GET {path} answered {response.status_code}: {response.content[:300]!r}")
    return elapsed


def report(name: str, values: list[float], target: float) -> dict:
    p95 = percentile(values, 95)
    mark = "ok" if p95 <= target else "over"
    print(
        f"  {name:<34} p50 {percentile(values, 50):7.1f} ms   p95 {p95:7.1f} ms   "
        f"p99 {percentile(values, 99):7.1f} ms   mean {statistics.fmean(values):6.1f}   [{mark} {target} ms]"
    )
    return {"case": name, "p95": p95}


def load_average() -> str:
    """The machine's load (1, 5, 15 minutes) beside the figures: on a shared machine the same
    code measures twice as slow under a load of 4 on 2 cores."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def explain(client, path: str) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        client.get(path)
    slowest = max(queries.captured_queries, key=lambda q: float(q["time"]))
    print(
        f"\n-- {path}: {len(queries.captured_queries)} queries; the slowest ({float(slowest['time']) * 1000:.1f} ms):"
    )
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + slowest["sql"])
        for (line,) in cursor.fetchall():
            print("   ", line)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup(args)
    load_server()
    from django.test import Client

    from apps.connectors.models import Channel
    from apps.contacts.models import Tag
    from apps.conversations.models import Conversation
    from apps.workspaces.models import Membership, Team

    rng = random.Random(11)
    members = list(
        Membership.objects.filter(workspace__slug__startswith="bench-", role="agent").select_related(
            "user", "workspace"
        )
    )
    supervisors = list(
        Membership.objects.filter(workspace__slug__startswith="bench-", role="supervisor").select_related("user")
    )
    clients: dict[int, Client] = {}

    def client_for(membership) -> Client:
        if membership.pk not in clients:
            client = Client()
            client.force_login(membership.user)
            clients[membership.pk] = client
        return clients[membership.pk]

    by_workspace = {
        "channel": {c.workspace_id: c.pk for c in Channel.objects.filter(kind="whatsapp")},
        "team": {t.workspace_id: t.pk for t in Team.objects.filter(name="Orders")},
        "tag": {t.workspace_id: t.pk for t in Tag.objects.filter(name="vip")},
    }
    cases = {
        "list: Mine": lambda m: "view=mine",
        "list: Unassigned": lambda m: "view=unassigned",
        "list: My teams": lambda m: "view=team",
        "list: Mine, open": lambda m: "view=mine&status=open",
        "list: status=open": lambda m: "status=open",
        "list: channel": lambda m: f"channel={by_workspace['channel'][m.workspace_id]}",
        "list: team": lambda m: f"team={by_workspace['team'][m.workspace_id]}",
        "list: tag": lambda m: f"tag={by_workspace['tag'][m.workspace_id]}",
        "list: priority=urgent": lambda m: "priority=urgent",
        "list: language=ru": lambda m: "language=ru",
        "list: search a name": lambda m: "q=" + rng.choice(["amira", "omar hassan", "layla", "kar"]),
        "list: search a phone": lambda m: f"q={rng.randrange(10**5, 10**6)}",
        "list: search message text": lambda m: "q=" + rng.choice(["mango", "refund", "broken eggs", "cancel"]),
    }
    count = Conversation.objects.filter(workspace__slug__startswith="bench-").count()
    print(
        f"data: {count:,} conversations in {len({m.workspace_id for m in members})} workspaces; "
        f"{args.requests} requests per case, signed in as random agents; {load_average()}"
    )
    results = []
    for name, query in cases.items():
        for membership in members[:3]:  # warm the caches and the connection
            timed(client_for(membership), f"/api/v1/conversations/?limit=50&{query(membership)}")
        values = []
        for _ in range(args.requests):
            membership = rng.choice(members)
            values.append(timed(client_for(membership), f"/api/v1/conversations/?limit=50&{query(membership)}"))
        results.append(report(name, values, TARGETS["list_p95_ms"]))
    values = []
    for _ in range(args.requests):
        supervisor = rng.choice(supervisors)
        values.append(timed(client_for(supervisor), "/api/v1/conversations/?limit=50&view=all"))
    results.append(report("list: All (supervisor)", values, TARGETS["list_p95_ms"]))

    # The generator gives 200 messages to each workspace's first conversations.
    long_ones = [
        row
        for workspace_id in sorted({m.workspace_id for m in members})
        for row in Conversation.objects.filter(workspace_id=workspace_id)
        .order_by("id")
        .values_list("pk", "contact_id", "workspace_id")[:100]
    ]
    by_ws = {}
    for membership in members:
        by_ws.setdefault(membership.workspace_id, membership)
    timeline, opening = [], []
    for _ in range(args.requests):
        pk, contact_id, workspace_id = rng.choice(long_ones)
        client = client_for(by_ws[workspace_id])
        timeline.append(timed(client, f"/api/v1/contacts/{contact_id}/timeline/?limit=200"))
        started = time.perf_counter()
        for path in (
            f"/api/v1/conversations/{pk}/",
            f"/api/v1/contacts/{contact_id}/timeline/?limit=200",
            f"/api/v1/contacts/{contact_id}/",
            f"/api/v1/contacts/{contact_id}/conversations/",
        ):
            timed(client, path)
        opening.append((time.perf_counter() - started) * 1000)
    results.append(report("open: timeline of 200 messages", timeline, TARGETS["open_p95_ms"]))
    results.append(report("open: all four requests of the page", opening, TARGETS["open_p95_ms"]))

    if args.explain:
        membership = members[0]
        client = client_for(membership)
        pk, contact_id, workspace_id = next(row for row in long_ones if row[2] == membership.workspace_id)
        for path in (
            "/api/v1/conversations/?limit=50&view=mine",
            "/api/v1/conversations/?limit=50&status=open",
            "/api/v1/conversations/?limit=50&q=mango",
            "/api/v1/conversations/?limit=50&q=amira",
            "/api/v1/conversations/?limit=50&q=omar%20hassan",
            f"/api/v1/contacts/{contact_id}/timeline/?limit=200",
        ):
            explain(client, path)
    print(f"at the end: {load_average()}")
    over = [r["case"] for r in results if r["p95"] > (TARGETS["open_p95_ms"] if "open" in r["case"] else 50)]
    print("all cases within target" if not over else f"over target: {', '.join(over)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
