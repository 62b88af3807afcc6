"""The per-conversation export: one row per cycle with the columns docs/reports.md defines, the
same values as CSV and XLSX, read from a server-side cursor with the names looked up once, and
the dashboard's range and filters. The last test drives the real services and the folder."""

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.analytics import export
from apps.analytics.export import (
    AS_ISO,
    COLUMN_NAMES,
    csv_chunks,
    cycles_for_report,
    export_csv_stream,
    export_rows,
    export_xlsx_file,
    names_of,
)
from apps.analytics.filters import report_filters
from apps.analytics.models import Cycle
from apps.connectors.models import Channel
from apps.contacts.models import Contact
from apps.conversations.models import Conversation
from apps.workspaces.models import Membership, Role
from tests.factories import make_member, make_team, make_user, make_workspace

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
OPENED = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def make_cycle(workspace, channel, *, opened_at=OPENED, number=1, conversation=None, **fields) -> Cycle:
    if conversation is None:
        contact = Contact.objects.create(workspace=workspace, name="Amira Hassan")
        conversation = Conversation.objects.create(workspace=workspace, contact=contact, channel=channel)
    fields.setdefault("source", Cycle.Source.INBOUND)
    return Cycle.objects.create(
        workspace=workspace,
        conversation=conversation,
        number=number,
        contact_id=conversation.contact_id,
        channel=channel,
        opened_at=opened_at,
        **fields,
    )


@dataclass
class Shop:
    workspace: object
    supervisor: object
    ann: object
    bob: object
    orders: object
    whatsapp: object
    chat: object


@pytest.fixture
def shop() -> Shop:
    """A Cairo shop: a WhatsApp number and a web chat, two agents in a team, a supervisor."""
    workspace = make_workspace(slug="nile-basket", timezone="Africa/Cairo")
    supervisor = make_member(workspace, Role.SUPERVISOR, make_user(first_name="Sara", last_name="Nabil"))
    ann = make_member(workspace, user=make_user(first_name="Ann", last_name="Lee"))
    bob = make_member(workspace, user=make_user(username="bob"))
    orders = make_team(workspace, name="Orders", members=[ann, bob])
    whatsapp = Channel.objects.create(workspace=workspace, kind="whatsapp", name="Support number")
    chat = Channel.objects.create(workspace=workspace, kind="webchat", name="Shop chat")
    return Shop(workspace, supervisor, ann, bob, orders, whatsapp, chat)


def closed_cycle(shop, **fields) -> Cycle:
    """Answered by Ann 2 minutes after the customer wrote, handed to her by Bob, closed in 30 min."""
    workspace, ann, bob, orders, whatsapp = shop.workspace, shop.ann, shop.bob, shop.orders, shop.whatsapp
    values = {
        "first_message_at": OPENED,
        "first_assigned_at": OPENED + timedelta(seconds=30),
        "first_response_at": OPENED + timedelta(seconds=120),
        "first_response_seconds": 120,
        "assigned_response_seconds": 90,
        "responder": ann,
        "responses": 3,
        "response_seconds": 400,
        "closed_at": OPENED + timedelta(minutes=30),
        "resolution_seconds": 1800,
        "closed_by": "agent",
        "closer": ann,
        "summary": '=Refund sent, "tracked"\nnext line',
        "csat": 4,
        "csat_agent": ann,
        "messages_in": 4,
        "messages_out": 3,
        "messages_bot": 1,
        "notes": 2,
        "handle_seconds": 640,
        "queue_seconds": 25,
        "bot": True,
        "handed_over": True,
        "team": orders,
        "assignee": ann,
        "assignees": [bob.pk, ann.pk],
        "category": "refund",
        "language": "ar",
    }
    return make_cycle(workspace, whatsapp, **{**values, **fields})


def as_dicts(cycles, workspace) -> list[dict]:
    return [dict(zip(COLUMN_NAMES, row, strict=True)) for row in export_rows(cycles, names_of(workspace))]


def csv_of(cycles, workspace) -> list[dict]:
    text = b"".join(export_csv_stream(cycles, names_of(workspace))).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_a_closed_cycle_exports_every_column_with_its_value(shop):
    workspace, ann, orders, whatsapp = shop.workspace, shop.ann, shop.orders, shop.whatsapp
    cycle = closed_cycle(shop)

    (row,) = as_dicts(Cycle.objects.all(), workspace)

    assert row == {
        "workspace": "nile-basket",
        "conversation_id": cycle.conversation_id,
        "cycle": 1,
        "channel_id": whatsapp.pk,
        "channel": "Support number",
        "channel_kind": "whatsapp",
        "contact_id": cycle.contact_id,
        "source": "inbound",
        "opened_at": OPENED,
        "first_customer_message_at": OPENED,
        "first_assigned_at": OPENED + timedelta(seconds=30),
        "first_response_at": OPENED + timedelta(seconds=120),
        "closed_at": OPENED + timedelta(minutes=30),
        "first_response_seconds": 120,
        "assigned_response_seconds": 90,
        "average_response_seconds": 133,  # 400 s over 3 responses
        "responses": 3,
        "resolution_seconds": 1800,
        "handle_seconds": 640,
        "queue_wait_seconds": 25,
        "assignee_id": ann.pk,
        "assignee": "Ann Lee",
        "assignees": "bob; Ann Lee",
        "first_responder": "Ann Lee",
        "team_id": orders.pk,
        "team": "Orders",
        "category": "refund",
        "language": "ar",
        "summary": '=Refund sent, "tracked"\nnext line',
        "closed_by": "agent",
        "closed_by_name": "Ann Lee",
        "csat": 4,
        "csat_agent": "Ann Lee",
        "messages_in": 4,
        "messages_out": 3,
        "messages_bot": 1,
        "notes": 2,
        "bot_involved": True,
        "handed_over": True,
        "contained": False,
        "reopened": False,
    }


def test_the_csv_has_iso_utc_moments_true_false_and_empty_cells_for_what_did_not_happen(shop):
    workspace, chat = shop.workspace, shop.chat
    closed_cycle(shop)
    contact = Contact.objects.create(workspace=workspace, name="Li")
    waiting = Conversation.objects.create(workspace=workspace, contact=contact, channel=chat)
    make_cycle(workspace, chat, conversation=waiting, opened_at=OPENED + timedelta(hours=1), number=2)

    closed, open_ = csv_of(Cycle.objects.all(), workspace)

    assert list(closed) == list(COLUMN_NAMES)
    assert closed["opened_at"] == "2026-11-02T09:00:00Z" and closed["closed_at"] == "2026-11-02T09:30:00Z"
    assert closed["summary"] == '=Refund sent, "tracked"\nnext line'  # quoted, read back whole
    assert (closed["bot_involved"], closed["contained"], closed["csat"]) == ("true", "false", "4")
    assert open_["closed_at"] == open_["first_response_seconds"] == open_["average_response_seconds"] == ""
    assert open_["assignee"] == open_["assignees"] == open_["team"] == open_["csat"] == ""
    assert (open_["cycle"], open_["reopened"], open_["channel"]) == ("2", "true", "Shop chat")


def test_a_removed_member_is_still_counted_among_the_assignees_by_id(shop):
    workspace, bob = shop.workspace, shop.bob
    closed_cycle(shop)
    bob_id = bob.pk
    Membership.objects.filter(pk=bob_id).delete()

    (row,) = as_dicts(Cycle.objects.all(), workspace)

    assert row["assignees"] == f"#{bob_id}; Ann Lee"


def test_the_csv_comes_in_pieces_of_rows_not_all_at_once(shop, monkeypatch):
    workspace, chat = shop.workspace, shop.chat
    for minute in range(7):
        make_cycle(workspace, chat, opened_at=OPENED + timedelta(minutes=minute))
    monkeypatch.setattr(export, "CSV_CHUNK", 3)

    pieces = list(csv_chunks(export_rows(Cycle.objects.all(), names_of(workspace), moments=AS_ISO)))

    assert [piece.count(b"\n") for piece in pieces] == [1 + 3, 3, 1]  # header and 3 rows, 3 rows, 1 row


def test_the_export_reads_the_same_few_queries_whatever_the_number_of_rows(shop):

    workspace = shop.workspace

    def queries_for(count: int) -> int:
        Cycle.objects.all().delete()
        for minute in range(count):
            closed_cycle(shop, opened_at=OPENED + timedelta(minutes=minute))
        with CaptureQueriesContext(connection) as queries:
            rows = csv_of(Cycle.objects.all(), workspace)
        assert len(rows) == count
        return len(queries)

    assert queries_for(2) == queries_for(40)


def test_rows_are_read_through_a_server_side_cursor(shop, monkeypatch):
    workspace = shop.workspace
    closed_cycle(shop)
    chunked = []
    original = connection.chunked_cursor

    def spy():
        chunked.append(True)
        return original()

    monkeypatch.setattr(connection, "chunked_cursor", spy)
    csv_of(Cycle.objects.all(), workspace)

    assert chunked


# XLSX ------------------------------------------------------------------------------------------

NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}


def xlsx_sheets(content) -> dict[str, list[list]]:
    """Each sheet's rows of cell values (text, number or bool), read with zipfile and XML."""
    with zipfile.ZipFile(content) as book:
        shared = []
        if "xl/sharedStrings.xml" in book.namelist():
            root = ElementTree.fromstring(book.read("xl/sharedStrings.xml"))  # noqa: S314
            shared = ["".join(t.text or "" for t in si.iter(f"{{{NS['m']}}}t")) for si in root.findall("m:si", NS)]
        workbook = ElementTree.fromstring(book.read("xl/workbook.xml"))  # noqa: S314
        names = [sheet.get("name") for sheet in workbook.find("m:sheets", NS)]
        sheets = {}
        for index, name in enumerate(names, start=1):
            root = ElementTree.fromstring(book.read(f"xl/worksheets/sheet{index}.xml"))  # noqa: S314
            sheets[name] = [_xlsx_row(row, shared) for row in root.iter(f"{{{NS['m']}}}row")]
        return sheets


def _xlsx_row(row, shared) -> list:
    cells = {}
    for cell in row.findall("m:c", NS):
        column = re.match(r"[A-Z]+", cell.get("r")).group()
        kind, value = cell.get("t"), cell.find("m:v", NS)
        if kind == "inlineStr":
            cells[column] = "".join(t.text or "" for t in cell.iter(f"{{{NS['m']}}}t"))
        elif kind == "s":
            cells[column] = shared[int(value.text)]
        elif kind == "b":
            cells[column] = value.text == "1"
        else:
            cells[column] = float(value.text)
    return [cells.get(_letters(index)) for index in range(len(COLUMN_NAMES))]


def _letters(index: int) -> str:
    return chr(65 + index) if index < 26 else "A" + chr(65 + index - 26)


def excel_moment(moment: datetime) -> float:
    return (moment.replace(tzinfo=None) - datetime(1899, 12, 30)).total_seconds() / 86400


def test_the_xlsx_holds_the_same_row_with_numbers_dates_and_text_cells(shop):
    workspace = shop.workspace
    cycle = closed_cycle(shop)

    with export_xlsx_file(Cycle.objects.all(), names_of(workspace)) as content:
        sheets = xlsx_sheets(content)

    header, row = sheets["conversations"]
    values = dict(zip(header, row, strict=True))
    assert header == list(COLUMN_NAMES)
    assert values["conversation_id"] == cycle.conversation_id and values["first_response_seconds"] == 120
    assert values["opened_at"] == pytest.approx(excel_moment(OPENED))
    assert values["summary"] == '=Refund sent, "tracked"\nnext line'  # a text, never a formula
    assert values["assignees"] == "bob; Ann Lee" and values["bot_involved"] is True
    assert values["queue_wait_seconds"] == 25 and values["closed_by_name"] == "Ann Lee"


def test_more_rows_than_an_excel_sheet_holds_go_on_to_further_sheets(shop, monkeypatch):
    workspace, chat = shop.workspace, shop.chat
    for minute in range(5):
        make_cycle(workspace, chat, opened_at=OPENED + timedelta(minutes=minute))
    monkeypatch.setattr(export, "XLSX_MAX_ROWS", 2)

    with export_xlsx_file(Cycle.objects.all(), names_of(workspace)) as content:
        sheets = xlsx_sheets(content)

    assert list(sheets) == ["conversations", "conversations 2", "conversations 3"]
    assert [len(rows) for rows in sheets.values()] == [3, 3, 2]  # each with its header


def test_an_empty_export_is_a_header_only(shop):

    workspace = shop.workspace
    assert csv_of(Cycle.objects.all(), workspace) == []
    with export_xlsx_file(Cycle.objects.all(), names_of(workspace)) as content:
        assert xlsx_sheets(content) == {"conversations": [list(COLUMN_NAMES)]}


# Range and filters -----------------------------------------------------------------------------


def test_the_range_is_workspace_local_days_by_opening(shop):
    # Cairo is UTC+2: Nov 2 local runs from Nov 1 22:00 UTC to Nov 2 22:00 UTC.
    workspace, chat = shop.workspace, shop.chat
    before = make_cycle(workspace, chat, opened_at=datetime(2026, 11, 1, 21, 59, tzinfo=UTC))
    first = make_cycle(workspace, chat, opened_at=datetime(2026, 11, 1, 22, 0, tzinfo=UTC))
    last = make_cycle(workspace, chat, opened_at=datetime(2026, 11, 2, 21, 59, tzinfo=UTC))
    after = make_cycle(workspace, chat, opened_at=datetime(2026, 11, 2, 22, 0, tzinfo=UTC))

    filters = report_filters(workspace=workspace, query={"from": "2026-11-02", "to": "2026-11-02"})
    picked = {row["conversation_id"] for row in as_dicts(cycles_for_report(filters), workspace)}

    assert picked == {first.conversation_id, last.conversation_id}
    assert before.conversation_id not in picked and after.conversation_id not in picked


@pytest.mark.parametrize("name", ["team", "agent", "channel", "category", "language"])
def test_each_dashboard_filter_narrows_the_export(shop, name):
    workspace, ann, bob, orders, whatsapp, chat = (
        shop.workspace,
        shop.ann,
        shop.bob,
        shop.orders,
        shop.whatsapp,
        shop.chat,
    )
    wanted = closed_cycle(shop)
    make_cycle(workspace, chat, category="delivery", language="en", assignee=bob)
    value = {
        "team": orders.pk,
        "agent": ann.pk,
        "channel": whatsapp.pk,
        "category": "refund",
        "language": "ar",
    }[name]

    query = {"from": "2026-11-01", "to": "2026-11-03", name: str(value)}
    rows = as_dicts(cycles_for_report(report_filters(workspace=workspace, query=query)), workspace)

    assert [row["conversation_id"] for row in rows] == [wanted.conversation_id]


def test_another_workspaces_cycles_are_never_in_the_export(shop):
    workspace = shop.workspace
    mine = closed_cycle(shop)
    other = make_workspace(slug="other-shop", timezone="Africa/Cairo")
    make_cycle(other, Channel.objects.create(workspace=other, kind="webchat", name="Theirs"))

    filters = report_filters(workspace=workspace, query={"from": "2026-11-01", "to": "2026-11-03"})

    assert [row["conversation_id"] for row in as_dicts(cycles_for_report(filters), workspace)] == [
        mine.conversation_id
    ]


def test_every_column_is_documented_in_docs_reports_md():
    text = (ROOT / "docs" / "reports.md").read_text()

    undocumented = [name for name in COLUMN_NAMES if f"| `{name}` |" not in text]

    assert undocumented == []


# From the real services ------------------------------------------------------------------------


def test_a_conversation_played_through_the_services_exports_its_folded_numbers(shop):
    workspace, supervisor, ann, orders, chat = shop.workspace, shop.supervisor, shop.ann, shop.orders, shop.chat
    from apps.analytics.models import Event
    from apps.analytics.services import events_fold
    from apps.connectors.base import InboundMessage
    from apps.conversations.services.actions import conversation_assign, conversation_close
    from apps.conversations.services.messages import inbound_message_apply, message_send

    seen = [0]

    def at(seconds: int) -> None:  # the step's events happened `seconds` after OPENED
        Event.objects.filter(pk__gt=seen[0]).update(at=OPENED + timedelta(seconds=seconds))
        seen[0] = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
        events_fold()

    inbound = InboundMessage(provider_id="in-1", sender_id="amira", timestamp=OPENED, kind="text", text="Hi")
    conversation = inbound_message_apply(channel=chat, inbound=inbound).conversation
    at(0)
    conversation_assign(
        conversation=conversation, actor=supervisor.user, membership=supervisor, assignee=ann, team=orders
    )
    at(20)
    message_send(conversation=Conversation.objects.get(pk=conversation.pk), author=ann.user, text="Hello!")
    at(50)
    conversation_close(
        conversation=Conversation.objects.get(pk=conversation.pk),
        actor=ann.user,
        membership=ann,
        category="delivery",
        summary="Told her the date",
    )
    at(600)

    (row,) = csv_of(Cycle.objects.filter(workspace=workspace), workspace)

    assert (row["channel"], row["source"], row["opened_at"]) == ("Shop chat", "inbound", "2026-11-02T09:00:00Z")
    assert (row["first_response_seconds"], row["assigned_response_seconds"]) == ("50", "30")
    assert (row["resolution_seconds"], row["closed_at"]) == ("600", "2026-11-02T09:10:00Z")
    assert (row["assignee"], row["team"], row["closed_by"], row["closed_by_name"]) == (
        "Ann Lee",
        "Orders",
        "agent",
        "Ann Lee",
    )
    assert (row["category"], row["summary"], row["messages_in"], row["messages_out"]) == (
        "delivery",
        "Told her the date",
        "1",
        "1",
    )
