"""The per-conversation export over 1,000,000 cycles: rows/s and memory.

    python -m bench.analytics_export [--rows 1000000] [--fresh] [--skip-xlsx] [--skip-daphne]

It keeps its own database, `parley_bench_export`, on the server DATABASE_URL names (or the
embedded one): a workspace with 20 agents in 4 teams, 3 channels and 20,000 conversations, and
`--rows` cycles spread over the last year, inserted by one `INSERT … SELECT generate_series`.
Then each measurement runs in a fresh process, so that its peak memory starts from a known base:

1. the CSV of every cycle through the Django test client (the whole stack: token auth, the view,
   the streamed response read to the end): rows/s, and how much the process's peak RSS grew;
   the same for a tenth of the rows, to show that memory does not grow with the size;
2. the XLSX of a tenth of them the same way (written in constant-memory mode, then sent; every
   cycle with `--full-xlsx`: xlsxwriter writes about 2,500 rows/s, so 1,000,000 take minutes);
3. the CSV from a live daphne (ASGI, as in production) read with httpx: rows/s and the growth of
   daphne's own peak RSS (VmHWM).

Target: ≥ 20,000 rows/s for the CSV, with flat memory.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.inbound import ROOT, free_port, server_urls, wait_until, with_database

BENCH_DB = "parley_bench_export"
CONVERSATIONS = 20_000
TARGET_ROWS_PER_S = 20_000
SECRET = "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz-0123"  # noqa: S105


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.analytics_export")
    parser.add_argument("--rows", type=int, default=1_000_000, help="cycles in the export")
    parser.add_argument("--fresh", action="store_true", help="make the data set again")
    parser.add_argument("--skip-xlsx", action="store_true")
    parser.add_argument(
        "--full-xlsx", action="store_true", help="the XLSX of every row too (about 7 minutes for 1,000,000)"
    )
    parser.add_argument("--skip-daphne", action="store_true")
    parser.add_argument("--child", choices=["prepare", "csv", "xlsx"], help=argparse.SUPPRESS)
    parser.add_argument("--tenth", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def bench_env() -> dict:
    database, redis_url = server_urls()
    return {
        **os.environ,
        "DATABASE_URL": with_database(database, BENCH_DB),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": "parley-bench-export",
        "DEBUG": "false",
        "SECRET_KEY": SECRET,
        "ALLOWED_HOSTS": "testserver,127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_COOKIES": "false",
        "LOG_LEVEL": "ERROR",
        "API_RATE_LIMIT": "100000/min",
    }


def create_database(fresh: bool) -> bool:
    """Makes the bench database if need be; True when it was (re)made."""
    import psycopg

    database, _ = server_urls()
    with psycopg.connect(with_database(database, "postgres"), autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone()
        if exists and not fresh:
            return False
        connection.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{BENCH_DB}"')
    return True


def child(mode: str, args, env: dict) -> dict:
    command = [sys.executable, "-m", "bench.analytics_export", "--child", mode, "--rows", str(args.rows)]
    if args.tenth:
        command.append("--tenth")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: the {mode} run failed\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# In the child process ----------------------------------------------------------------------------

CYCLES_SQL = """
INSERT INTO analytics_cycle (
    workspace_id, conversation_id, number, contact_id, channel_id, source, team_id, assignee_id,
    assignees, category, language, opened_at, first_message_at, first_assigned_at, first_response_at,
    first_response_seconds, assigned_response_seconds, responder_id, responses, response_seconds,
    closed_at, resolution_seconds, closed_by, closer_id, summary, csat, csat_agent_id, messages_in,
    messages_out, messages_bot, notes, handle_seconds, queue_seconds, bot, handed_over, contained,
    contribution)
SELECT %(workspace)s, c.id, 1 + i / %(count)s, c.contact_id, c.channel_id,
       (ARRAY['inbound', 'inbound', 'outbound', 'broadcast'])[1 + i %% 4],
       (%(teams)s::bigint[])[1 + i %% 4], (%(agents)s::bigint[])[1 + i %% 20],
       ARRAY[(%(agents)s::bigint[])[1 + (i + 7) %% 20], (%(agents)s::bigint[])[1 + i %% 20]],
       (ARRAY['delivery', 'refund', 'payment', ''])[1 + i %% 4], (ARRAY['en', 'ar', 'ru'])[1 + i %% 3],
       o.at, o.at, o.at + interval '20 seconds', o.at + (30 + i %% 600) * interval '1 second',
       30 + i %% 600, 10 + i %% 590, (%(agents)s::bigint[])[1 + i %% 20], 3, 300 + i %% 900,
       o.at + (600 + i %% 7200) * interval '1 second', 600 + i %% 7200, 'agent',
       (%(agents)s::bigint[])[1 + i %% 20], 'Delivered, "thanks" ' || i, NULLIF(i %% 6, 0),
       (%(agents)s::bigint[])[1 + i %% 20], 4, 3, i %% 2, i %% 3, 200 + i %% 400, NULLIF(i %% 120, 0),
       i %% 2 = 0, i %% 4 = 0, false, '[]'::jsonb
FROM generate_series(0, %(rows)s - 1) AS s(i)
JOIN conversations_conversation c ON c.id = (%(conversations)s::bigint[])[1 + i %% %(count)s]
CROSS JOIN LATERAL (SELECT now() - (i %% 525000) * interval '1 minute' AS at) AS o
"""


def prepare(args) -> dict:
    """Migrates and fills the bench database (once; --fresh again)."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from apps.analytics.models import Cycle
    from apps.connectors.models import Channel
    from apps.contacts.models import Contact
    from apps.conversations.models import Conversation
    from apps.workspaces import services
    from apps.workspaces.models import Membership, Role, Team, User, Workspace

    call_command("migrate", verbosity=0)
    if Cycle.objects.count() == args.rows:
        return {"rows": args.rows, "seconds": 0.0, "made": False}
    started = time.perf_counter()
    Cycle.objects.all().delete()
    workspace = Workspace.objects.filter(slug="bench").first() or services.workspace_create(
        name="Bench", slug="bench", timezone_name="UTC", default_language="en"
    )
    if not Membership.objects.filter(workspace=workspace).exists():
        for number in range(20):
            user = User.objects.create(username=f"agent{number}", first_name="Agent", last_name=str(number))
            services.membership_add(workspace=workspace, user=user, role=Role.AGENT)
        for name in ("Orders", "Returns", "Payments", "VIP"):
            Team.objects.create(workspace=workspace, name=name)
        for kind in ("whatsapp", "telegram", "webchat"):
            Channel.objects.create(workspace=workspace, kind=kind, name=f"Shop {kind}")
    if not Conversation.objects.filter(workspace=workspace).exists():
        channels = list(Channel.objects.filter(workspace=workspace))
        contacts = Contact.objects.bulk_create(
            Contact(workspace=workspace, name=f"Customer {n}") for n in range(CONVERSATIONS)
        )
        Conversation.objects.bulk_create(
            Conversation(workspace=workspace, contact=contact, channel=channels[n % 3], status="closed")
            for n, contact in enumerate(contacts)
        )
    conversations = list(Conversation.objects.filter(workspace=workspace).order_by("id").values_list("id", flat=True))
    with connection.cursor() as cursor:
        cursor.execute(
            CYCLES_SQL,
            {
                "workspace": workspace.pk,
                "teams": list(Team.objects.filter(workspace=workspace).values_list("id", flat=True)),
                "agents": list(Membership.objects.filter(workspace=workspace).values_list("id", flat=True)),
                "conversations": conversations,
                "count": len(conversations),
                "rows": args.rows,
            },
        )
        cursor.execute("ANALYZE analytics_cycle")
    return {"rows": Cycle.objects.count(), "seconds": time.perf_counter() - started, "made": True}


def _token() -> str:
    from apps.workspaces import services
    from apps.workspaces.models import Workspace

    _, token = services.api_token_create(workspace=Workspace.objects.get(slug="bench"), name="bench")
    return token


def _range(args) -> str:
    from datetime import timedelta

    from django.utils import timezone

    today = timezone.now().date()
    days = 37 if args.tenth else 366  # the cycles are spread evenly over the last 365 days
    return f"from={today - timedelta(days=days - 1)}&to={today}"


def download(args, mode: str) -> dict:
    """One export through the whole Django stack in this process, read to its end."""
    import django

    django.setup()
    from django.http import QueryDict
    from django.test import Client

    from apps.analytics.export import cycles_for_report
    from apps.analytics.filters import report_filters
    from apps.workspaces.models import Workspace

    client = Client(headers={"Authorization": f"Bearer {_token()}"})
    query = _range(args)
    filters = report_filters(workspace=Workspace.objects.get(slug="bench"), query=QueryDict(query))
    rows = cycles_for_report(filters).count()
    client.get(f"/api/v1/reports/export/?format={mode}&from=2020-01-01&to=2020-01-01")  # warm: imports, caches
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    response = client.get(f"/api/v1/reports/export/?format={mode}&{query}")
    size = pieces = 0
    for piece in response.streaming_content:
        size += len(piece)
        pieces += 1
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert response.status_code == 200, response.status_code
    return {"rows": rows, "seconds": seconds, "bytes": size, "pieces": pieces, "base_kb": base_kb, "peak_kb": peak_kb}


# Through daphne -----------------------------------------------------------------------------------


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def through_daphne(args, env: dict) -> dict:
    import httpx

    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "parley-bench-export-daphne.log"  # noqa: S108
    daphne = subprocess.Popen(
        [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(httpx, f"{url}/healthz"), 30, "daphne")
        token = child_token(env)
        headers = {"Authorization": f"Bearer {token}"}
        httpx.get(f"{url}/api/v1/reports/export/?from=2020-01-01&to=2020-01-01", headers=headers, timeout=30)
        base_kb = _vm_hwm_kb(daphne.pid)
        query = _range(argparse.Namespace(tenth=False))
        started = time.perf_counter()
        lines = size = 0
        with httpx.stream("GET", f"{url}/api/v1/reports/export/?{query}", headers=headers, timeout=600) as response:
            response.raise_for_status()
            for piece in response.iter_bytes():
                size += len(piece)
                lines += piece.count(b"\n")
        seconds = time.perf_counter() - started
        return {
            "rows": lines - 1,
            "seconds": seconds,
            "bytes": size,
            "base_kb": base_kb,
            "peak_kb": _vm_hwm_kb(daphne.pid),
        }
    finally:
        daphne.terminate()
        daphne.wait(timeout=10)


def _up(httpx, url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def child_token(env: dict) -> str:
    code = "import django; django.setup(); from bench.analytics_export import _token; print(_token())"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


# Report ---------------------------------------------------------------------------------------------


def line(name: str, result: dict) -> None:
    rate = result["rows"] / result["seconds"]
    growth = (result["peak_kb"] - result["base_kb"]) / 1024
    verdict = "" if not name.startswith("CSV") else (" ok" if rate >= TARGET_ROWS_PER_S else " BELOW TARGET")
    print(
        f"  {name:<32} {result['rows']:>9,} rows in {result['seconds']:6.1f} s = {rate:>8,.0f} rows/s{verdict}; "
        f"{result['bytes'] / 2**20:,.0f} MB; peak RSS +{growth:,.1f} MB (from {result['base_kb'] / 1024:,.0f} MB)"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child == "prepare":
        print(json.dumps(prepare(args)))
        return 0
    if args.child:
        print(json.dumps(download(args, args.child)))
        return 0
    create_database(args.fresh)
    env = bench_env()
    made = child("prepare", args, env)
    print(
        f"  data set: {made['rows']:,} cycles"
        + (f" inserted in {made['seconds']:.1f} s" if made["made"] else " (kept)")
    )
    line("CSV, test client", child("csv", args, env))
    line("CSV, a tenth of the range", child("csv", argparse.Namespace(**{**vars(args), "tenth": True}), env))
    if not args.skip_xlsx:
        line("XLSX, a tenth of the range", child("xlsx", argparse.Namespace(**{**vars(args), "tenth": True}), env))
    if args.full_xlsx:
        line("XLSX, test client", child("xlsx", args, env))
    if not args.skip_daphne:
        line("CSV, live daphne (its RSS)", through_daphne(args, env))
    print(f"  target: CSV >= {TARGET_ROWS_PER_S:,} rows/s with flat memory")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
