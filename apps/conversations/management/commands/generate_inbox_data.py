"""A large inbox to measure against: by default 1,000,000 conversations and 10,000,000 messages
across 20 workspaces (`bench/inbox.py` runs it on its own database).

    python manage.py generate_inbox_data [--workspaces 20] [--conversations 1000000]
                                         [--messages 10000000] [--long 100]

Each workspace gets a supervisor, ten agents, three teams, a WhatsApp number and a web chat,
tags, and contacts with encrypted names and phones (with their blind indexes, as the pipeline
writes them). Conversations and messages are made by PostgreSQL itself (INSERT … SELECT over
generate_series), with the message and conversation indexes dropped and rebuilt around the load
as pg_restore does, all in one transaction: an interrupted run leaves nothing behind. `--long`
conversations per workspace get 200 messages each, for "open a long conversation".

It refuses to run twice on the same database (the workspaces it makes are `bench-01` …).
"""

import io
import random
import sys
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from apps.connectors.models import Channel
from apps.contacts.models import Contact, Tag
from apps.contacts.services import search_tokens_for
from apps.conversations.models import Conversation, Message
from apps.core.crypto import blind_index, encrypt
from apps.workspaces import services
from apps.workspaces.models import Role, Team, User, Workspace

FIRST = [
    "Amira",
    "Omar",
    "Layla",
    "Karim",
    "Nour",
    "Sara",
    "Youssef",
    "Mona",
    "Hassan",
    "Fatma",
    "Ahmed",
    "Salma",
    "Ali",
    "Hana",
    "Mostafa",
    "Dina",
]
LAST = [
    "Hassan",
    "Farouk",
    "Said",
    "Mahmoud",
    "Ibrahim",
    "Naguib",
    "Fathy",
    "Adel",
    "Sami",
    "Kamal",
    "Tarek",
    "Zaki",
    "Lotfy",
    "Shawky",
]
PHRASES = [
    "Where is my order {n}?",
    "The eggs arrived broken, order {n}",
    "Can I pay by card on delivery?",
    "Thank you, received!",
    "When will my money come back for {n}?",
    "I want to change the delivery address",
    "Your order {n} is on its way",
    "We are sorry, a courier will bring a replacement tomorrow",
    "Do you have fresh mango this week?",
    "Please cancel order {n}",
    "Your refund for {n} was sent today",
    "Is the discount still valid?",
]
PASSWORD = "parley-bench"  # noqa: S105 (the generated agents of a benchmark database)


def progress(label: str, done: int, total: int, started: float) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    rate = done / max(time.monotonic() - started, 1e-6)
    sys.stderr.write(f"\r{label:<14} [{'#' * filled}{' ' * (width - filled)}] {done:>10,}/{total:,} {rate:>9,.0f}/s")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _table_indexes(table: str) -> list[tuple[str, str]]:
    """The indexes of a table that are not its primary key: (name, CREATE statement)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.tablename = %s AND i.indexname NOT IN (
                SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN ('p', 'u')
            )
            """,
            [table, table],
        )
        return cursor.fetchall()


class Command(BaseCommand):
    help = "Generate a large inbox (1M conversations, 10M messages over 20 workspaces) for benchmarks."

    def add_arguments(self, parser):
        parser.add_argument("--workspaces", type=int, default=20)
        parser.add_argument("--conversations", type=int, default=1_000_000)
        parser.add_argument("--messages", type=int, default=10_000_000)
        parser.add_argument("--long", type=int, default=100, help="conversations with 200 messages, per workspace")
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args, workspaces, conversations, messages, long, seed, **options):
        if workspaces < 1 or conversations < 2 * workspaces or messages < conversations:
            raise CommandError("Need at least one workspace, two conversations per workspace, a message each.")
        if Workspace.objects.filter(slug="bench-01").exists():
            raise CommandError("This database already has the generated inbox (workspace bench-01).")
        self.random = random.Random(seed)  # noqa: S311 (sample data, not secrets)
        per_workspace = conversations // workspaces
        contacts = per_workspace // 2  # each contact writes on WhatsApp and on web chat
        started = time.monotonic()
        with transaction.atomic():
            with connection.cursor() as cursor:
                # Foreign keys are checked per statement, so no trigger events wait for the
                # index rebuild (PostgreSQL refuses CREATE INDEX on a table with pending ones).
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            made = [self._workspace(number) for number in range(1, workspaces + 1)]
            self._contacts(made, contacts)
            dropped = self._drop_indexes([Conversation._meta.db_table, Message._meta.db_table])
            self._conversations(made)
            self._messages(made, messages // workspaces, long)
            self._rebuild_indexes(dropped)
        with connection.cursor() as cursor:
            tables = [Contact._meta.db_table, Conversation._meta.db_table, Message._meta.db_table]
            tables += [Contact.tags.through._meta.db_table, Conversation.tags.through._meta.db_table]
            for table in tables:
                cursor.execute(f"ANALYZE {table}")
        total = Conversation.objects.filter(workspace__slug__startswith="bench-").count()
        self.stdout.write(
            f"Generated {total:,} conversations in {workspaces} workspaces in {time.monotonic() - started:,.0f} s. "
            f"Agents log in as bench-01-agent-1 … with password {PASSWORD!r}."
        )

    # Setup through the services ------------------------------------------------------------

    def _workspace(self, number: int) -> dict:
        slug = f"bench-{number:02d}"
        workspace = services.workspace_create(name=f"Bench {number:02d}", slug=slug)
        users = [User(username=f"{slug}-supervisor", first_name="Supervisor")] + [
            User(username=f"{slug}-agent-{n}", first_name=f"Agent {n}") for n in range(1, 11)
        ]
        password = User(username="x")
        password.set_password(PASSWORD)  # one hash for all of them: hashing 220 times takes a minute
        for user in users:
            user.password = password.password
        User.objects.bulk_create(users)
        members = [
            services.membership_add(workspace=workspace, user=user, role=Role.SUPERVISOR if i == 0 else Role.AGENT)
            for i, user in enumerate(users)
        ]
        agents = members[1:]
        teams = []
        for index, name in enumerate(("Orders", "Complaints", "Delivery")):
            team = Team.objects.create(workspace=workspace, name=name)
            team.members.set(agents[index::3])
            teams.append(team)
        tags = [Tag.objects.create(workspace=workspace, name=name) for name in ("vip", "refund", "wholesale")]
        channels = [
            Channel.objects.create(
                workspace=workspace,
                kind="whatsapp",
                name=f"{slug} WhatsApp",
                credentials={"access_token": "t", "app_secret": "s", "phone_number_id": f"8{number:08d}"},
                settings={"base_url": "http://127.0.0.1:9"},
            ),
            Channel.objects.create(workspace=workspace, kind="webchat", name=f"{slug} web chat"),
        ]
        return {
            "workspace": workspace,
            "agents": [m.pk for m in agents],
            "teams": [t.pk for t in teams],
            "tags": [t.pk for t in tags],
            "channels": [c.pk for c in channels],
        }

    # Bulk rows -------------------------------------------------------------------------------

    def _contacts(self, made: list[dict], per_workspace: int) -> None:
        total, done, started = per_workspace * len(made), 0, time.monotonic()
        columns = (
            "workspace_id, name, phone, phone_index, email, email_index, search_tokens, external_id, language, "
            "country, custom_fields, lifecycle_stage, marketing_consent, created_at"
        )
        table = Contact._meta.db_table
        now = timezone.now().isoformat()
        for entry in made:
            workspace_id = entry["workspace"].pk
            for start in range(0, per_workspace, 10_000):
                rows = io.StringIO()
                for n in range(start, min(start + 10_000, per_workspace)):
                    name = f"{self.random.choice(FIRST)} {self.random.choice(LAST)}"
                    phone = f"+2010{workspace_id % 100:02d}{n:06d}"
                    tokens = (
                        "{"
                        + ",".join(search_tokens_for(workspace_id=workspace_id, name=name, phone=phone, email=""))
                        + "}"
                    )
                    language = self.random.choice(("ar", "en", "ru"))
                    rows.write(
                        f"{workspace_id}\t{encrypt(name)}\t{encrypt(phone)}\t{blind_index(phone)}\t\t\t{tokens}\t"
                        f"\t{language}\tEG\t{{}}\tcustomer\t{{}}\t{now}\n"
                    )
                    done += 1
                with connection.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    copy.write(rows.getvalue())
                progress("contacts", done, total, started)
        for entry in made:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"""
                    INSERT INTO {Contact.tags.through._meta.db_table} (contact_id, tag_id)
                    SELECT c.id, (%s::bigint[])[1 + c.id %% 3] FROM {table} c
                    WHERE c.workspace_id = %s AND c.id %% 10 = 0
                    """,  # noqa: S608 (table names come from the models)
                    [entry["tags"], entry["workspace"].pk],
                )

    def _drop_indexes(self, tables: list[str]) -> list[tuple[str, str]]:
        dropped = []
        with connection.cursor() as cursor:
            for table in tables:
                for name, definition in _table_indexes(table):
                    cursor.execute(f'DROP INDEX "{name}"')
                    dropped.append((name, definition))
        return dropped

    def _rebuild_indexes(self, dropped: list[tuple[str, str]]) -> None:
        started = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL maintenance_work_mem = '1GB'")
            cursor.execute("SET LOCAL max_parallel_maintenance_workers = 2")
            for done, (_, definition) in enumerate(dropped, 1):
                cursor.execute(definition)
                progress("indexes", done, len(dropped), started)

    def _conversations(self, made: list[dict]) -> None:
        started = time.monotonic()
        for done, entry in enumerate(made, 1):
            with connection.cursor() as cursor:
                cursor.execute(
                    f"""
                    INSERT INTO {Conversation._meta.db_table} (
                        workspace_id, contact_id, channel_id, status, assignee_id, team_id, category,
                        priority, language, window_expires_at, opened_at, first_response_at, closed_at,
                        snoozed_until, last_message_at, last_inbound_at, waiting_since, unread_count,
                        authorized, csat_score, csat_comment, closing_summary, automation_cursor)
                    SELECT %(workspace)s, c.id, ch.id,
                        CASE WHEN r.s < 0.30 THEN 'open' WHEN r.s < 0.35 THEN 'pending'
                             WHEN r.s < 0.37 THEN 'snoozed' ELSE 'closed' END,
                        CASE WHEN r.a < 0.2 THEN NULL ELSE (%(agents)s::bigint[])[1 + floor(r.b * 10)::int] END,
                        (%(teams)s::bigint[])[1 + floor(r.t * 3)::int],
                        (ARRAY['delivery', 'refund', 'product', 'payment'])[1 + floor(r.b * 4)::int],
                        CASE WHEN r.p < 0.05 THEN 'urgent' WHEN r.p < 0.2 THEN 'high' ELSE 'normal' END,
                        c.language, last + interval '24 hours', last - interval '1 day',
                        last - interval '23 hours', CASE WHEN r.s >= 0.37 THEN last + interval '1 hour' END,
                        CASE WHEN r.s >= 0.35 AND r.s < 0.37 THEN now() + interval '1 day' END,
                        last, last,
                        CASE WHEN r.s < 0.30 AND r.a < 0.5 THEN last END,
                        CASE WHEN r.s < 0.30 THEN floor(r.a * 4)::int ELSE 0 END,
                        false, NULL, '', '', 0
                    FROM {Contact._meta.db_table} c
                    CROSS JOIN unnest(%(channels)s::bigint[]) AS ch(id)
                    CROSS JOIN LATERAL (
                        SELECT random() AS s, random() AS a, random() AS b, random() AS t, random() AS p,
                               now() - random() * interval '90 days' AS last
                        WHERE c.id IS NOT NULL AND ch.id IS NOT NULL
                    ) r
                    WHERE c.workspace_id = %(workspace)s
                    """,  # noqa: S608 (table names come from the models)
                    {
                        "workspace": entry["workspace"].pk,
                        "agents": entry["agents"],
                        "teams": entry["teams"],
                        "channels": entry["channels"],
                    },
                )
                cursor.execute(
                    f"""
                    INSERT INTO {Conversation.tags.through._meta.db_table} (conversation_id, tag_id)
                    SELECT v.id, (%s::bigint[])[1 + v.id %% 3] FROM {Conversation._meta.db_table} v
                    WHERE v.workspace_id = %s AND v.id %% 7 = 0
                    """,  # noqa: S608 (table names come from the models)
                    [entry["tags"], entry["workspace"].pk],
                )
            progress("conversations", done, len(made), started)

    def _messages(self, made: list[dict], per_workspace: int, long: int) -> None:
        started, done = time.monotonic(), 0
        total = per_workspace * len(made)
        for entry in made:
            workspace_id = entry["workspace"].pk
            count = Conversation.objects.filter(workspace_id=workspace_id).count()
            long = min(long, count // 2)
            # The rest share what the long ones leave: a base count and one more for some.
            rest = max(per_workspace - long * 200, count - long)
            base, extra = divmod(rest, count - long)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"""
                    INSERT INTO {Message._meta.db_table} (
                        workspace_id, conversation_id, channel_id, direction, sender_kind, author_id, kind,
                        text, payload, reply_to_id, provider_id, client_id, state, error_code, error_reason,
                        attempts, claimed_at, created_at, provider_timestamp, sent_at, delivered_at, read_at,
                        failed_at)
                    SELECT v.workspace_id, v.id, v.channel_id,
                        CASE WHEN g %% 2 = 1 THEN 'in' ELSE 'out' END,
                        CASE WHEN g %% 2 = 1 THEN 'contact' ELSE 'agent' END,
                        NULL, 'text',
                        replace((%(phrases)s::text[])[1 + (v.id * 7 + g * 13) %% %(phrase_count)s],
                                '{{n}}', (1000 + (v.id * 31 + g) %% 90000)::text),
                        '{{}}'::jsonb, NULL,
                        CASE WHEN g %% 2 = 1 THEN 'wamid.bench.' || v.id || '.' || g ELSE '' END, '',
                        CASE WHEN g %% 2 = 1 THEN 'received' ELSE 'read' END, '', '', 0, NULL,
                        v.last_message_at - (v.n - g) * interval '3 minutes',
                        NULL, NULL, NULL, NULL, NULL
                    FROM (
                        SELECT id, workspace_id, channel_id, last_message_at,
                               CASE WHEN row_number() OVER (ORDER BY id) <= %(long)s THEN 200
                                    WHEN row_number() OVER (ORDER BY id) - %(long)s <= %(extra)s THEN %(base)s + 1
                                    ELSE %(base)s END AS n
                        FROM {Conversation._meta.db_table} WHERE workspace_id = %(workspace)s
                    ) v
                    CROSS JOIN LATERAL generate_series(1, v.n) AS g
                    """,  # noqa: S608 (table names come from the models)
                    {
                        "workspace": workspace_id,
                        "phrases": PHRASES,
                        "phrase_count": len(PHRASES),
                        "long": long,
                        "base": base,
                        "extra": extra,
                    },
                )
                done += cursor.rowcount
            progress("messages", min(done, total - 1), total, started)
        progress("messages", total, total, started)
