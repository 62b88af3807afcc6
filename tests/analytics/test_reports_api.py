"""`/api/v1/reports/`: the export's rows as JSON and as a download, for supervisors, owners and
the workspace's API tokens only; agents get a 403, another workspace a 404, a bad parameter a
400 naming it, and workspace B never sees a row of A's, by session or by token."""

import csv
import io
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.http import FileResponse, StreamingHttpResponse
from django.test import AsyncClient, Client

from apps.analytics import export
from apps.analytics.export import COLUMN_NAMES
from apps.analytics.models import Cycle
from apps.connectors.models import Channel
from apps.contacts.models import Contact
from apps.conversations.models import Conversation
from tests.conftest import client_for, token_client

pytestmark = pytest.mark.django_db

OPENED = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
RANGE = "from=2026-11-01&to=2026-11-07"
LIST = "/api/v1/reports/conversations/"
EXPORT = "/api/v1/reports/export/"
SUMMARY = "/api/v1/reports/summary/"


def make_cycle(workspace, channel, *, minutes=0, **fields) -> Cycle:
    contact = Contact.objects.create(workspace=workspace, name="Amira Hassan")
    conversation = Conversation.objects.create(workspace=workspace, contact=contact, channel=channel)
    return Cycle.objects.create(
        workspace=workspace,
        conversation=conversation,
        number=1,
        contact_id=contact.pk,
        channel=channel,
        source="inbound",
        opened_at=OPENED + timedelta(minutes=minutes),
        **fields,
    )


@pytest.fixture
def reports(tenants):
    """Three cycles in A (two of team Orders), one in B."""
    chat_a = Channel.objects.create(workspace=tenants.a, kind="webchat", name="Alpha chat")
    chat_b = Channel.objects.create(workspace=tenants.b, kind="webchat", name="Beta chat")
    mine = [
        make_cycle(tenants.a, chat_a, minutes=0, team=tenants.team_a, first_response_seconds=40),
        make_cycle(tenants.a, chat_a, minutes=10, team=tenants.team_a),
        make_cycle(tenants.a, chat_a, minutes=20, category="refund"),
    ]
    theirs = make_cycle(tenants.b, chat_b, minutes=5)
    return tenants, mine, theirs


def ids(rows) -> list[int]:
    return [int(row["conversation_id"]) for row in rows]


def csv_rows(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


# Who may read ----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["owner", "supervisor"])
def test_supervisors_and_owners_read_their_workspaces_rows(reports, who):
    tenants, mine, _ = reports

    response = client_for(getattr(tenants, who)).get(f"{LIST}?{RANGE}")

    assert response.status_code == 200, response.content
    assert ids(response.json()["results"]) == [cycle.conversation_id for cycle in mine]


@pytest.mark.parametrize("url", [LIST, EXPORT, SUMMARY])
def test_an_agent_gets_a_403(reports, url):
    tenants, *_ = reports

    response = client_for(tenants.teammate).get(f"{url}?{RANGE}")

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


@pytest.mark.parametrize("url", [LIST, EXPORT, SUMMARY])
def test_without_a_token_or_session_it_is_refused(reports, url):
    assert Client().get(f"{url}?{RANGE}").status_code in (401, 403)


@pytest.mark.parametrize("url", [LIST, EXPORT, SUMMARY])
def test_an_outsider_naming_workspace_a_gets_a_404(reports, url):
    tenants, *_ = reports

    response = client_for(tenants.outsider).get(f"{url}?{RANGE}", headers={"X-Parley-Workspace": "alpha"})

    assert response.status_code == 404


def test_workspace_b_never_sees_as_rows_by_session_or_token(reports):
    tenants, _, theirs = reports

    by_session = client_for(tenants.outsider).get(f"{LIST}?{RANGE}").json()["results"]
    by_token = token_client(tenants.token_b).get(f"{LIST}?{RANGE}").json()["results"]
    download = csv_rows(token_client(tenants.token_b).get(f"{EXPORT}?{RANGE}"))

    assert ids(by_session) == ids(by_token) == ids(download) == [theirs.conversation_id]


def test_an_api_token_reads_its_own_workspace(reports):
    tenants, mine, _ = reports

    rows = csv_rows(token_client(tenants.token_a).get(f"{EXPORT}?{RANGE}"))

    assert ids(rows) == [cycle.conversation_id for cycle in mine]


def test_b_cannot_filter_by_as_team(reports):
    tenants, *_ = reports

    response = token_client(tenants.token_b).get(f"{LIST}?{RANGE}&team={tenants.team_a.pk}")

    assert response.status_code == 400
    assert response.json()["fields"] == {"team": ["Unknown."]}


# Bad parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("from=yesterday", "from"),
        ("from=2026-11-08&to=2026-11-01", "from"),
        ("to=9999-12-31", "to"),
        ("team=abc", "team"),
        ("agent=99999999", "agent"),
        ("channel=-1", "channel"),
        ("team=²", "team"),
    ],
)
@pytest.mark.parametrize("url", [LIST, EXPORT])
def test_a_bad_parameter_is_a_400_naming_it(reports, url, query, named):
    tenants, *_ = reports

    response = token_client(tenants.token_a).get(f"{url}?{query}")

    assert response.status_code == 400, response.content
    assert named in response.json()["fields"]


def test_an_unknown_file_format_is_a_400_naming_format(reports):
    tenants, *_ = reports

    response = token_client(tenants.token_a).get(f"{EXPORT}?format=pdf&{RANGE}")

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid",
        "detail": "'format' is csv or xlsx.",
        "fields": {"format": ["Not csv or xlsx."]},
    }


# The rows as JSON ------------------------------------------------------------------------------


def test_the_json_rows_have_the_export_columns_and_null_for_empty_cells(reports):
    tenants, *_ = reports

    first = token_client(tenants.token_a).get(f"{LIST}?{RANGE}").json()["results"][0]

    assert list(first) == list(COLUMN_NAMES)
    assert first["opened_at"] == "2026-11-02T09:00:00Z" and first["first_response_seconds"] == 40
    assert first["team"] == "Orders" and first["team_id"] == tenants.team_a.pk
    assert first["closed_at"] is None and first["csat"] is None and first["reopened"] is False


def test_the_json_rows_come_a_page_at_a_time_by_cursor(reports):
    tenants, mine, _ = reports
    client = token_client(tenants.token_a)

    page = client.get(f"{LIST}?{RANGE}&limit=2").json()
    rest = client.get(page["next"]).json()

    assert ids(page["results"]) + ids(rest["results"]) == [cycle.conversation_id for cycle in mine]
    assert rest["next"] is None


def test_filters_apply_to_the_json_rows(reports):
    tenants, mine, _ = reports

    by_team = token_client(tenants.token_a).get(f"{LIST}?{RANGE}&team={tenants.team_a.pk}").json()["results"]
    by_category = token_client(tenants.token_a).get(f"{LIST}?{RANGE}&category=refund").json()["results"]

    assert ids(by_team) == [mine[0].conversation_id, mine[1].conversation_id]
    assert ids(by_category) == [mine[2].conversation_id]


# The download ----------------------------------------------------------------------------------


def test_the_csv_download_streams_with_the_session_for_the_dashboards_button(reports, monkeypatch):
    tenants, mine, _ = reports
    monkeypatch.setattr(export, "CSV_CHUNK", 2)

    response = client_for(tenants.supervisor).get(f"{EXPORT}?format=csv&{RANGE}")

    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse) and not isinstance(response, FileResponse)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="conversations-alpha-2026-11-01-2026-11-07.csv"'
    pieces = list(response.streaming_content)
    assert len(pieces) == 2  # header and two rows, then the third row
    rows = list(csv.DictReader(io.StringIO(b"".join(pieces).decode())))
    assert ids(rows) == [cycle.conversation_id for cycle in mine]


def test_the_csv_is_the_default_format(reports):
    tenants, *_ = reports

    response = token_client(tenants.token_a).get(f"{EXPORT}?{RANGE}")

    assert response["Content-Type"] == "text/csv; charset=utf-8" and len(csv_rows(response)) == 3


def test_the_xlsx_download_is_a_workbook_file(reports):
    tenants, *_ = reports

    response = token_client(tenants.token_a).get(f"{EXPORT}?format=xlsx&{RANGE}&team={tenants.team_a.pk}")

    assert response.status_code == 200 and isinstance(response, FileResponse)
    assert response["Content-Type"] == export.XLSX_MEDIA_TYPE
    assert response["Content-Disposition"] == 'attachment; filename="conversations-alpha-2026-11-01-2026-11-07.xlsx"'
    content = b"".join(response.streaming_content)
    assert int(response["Content-Length"]) == len(content)
    with zipfile.ZipFile(io.BytesIO(content)) as book:
        sheet = book.read("xl/worksheets/sheet1.xml").decode()
    assert sheet.count("<row ") == 1 + 2  # the header and team Orders' two cycles
    assert "Alpha chat" in sheet and "conversation_id" in sheet


@pytest.mark.django_db(transaction=True)  # the ASGI handler's thread has a connection of its own
def test_under_asgi_the_csv_is_pulled_a_piece_at_a_time_not_gathered_first(reports, monkeypatch):
    """Daphne serves through ASGI, where Django would make a list of a synchronous iterator
    before sending anything; the view hands it an asynchronous one."""
    tenants, mine, _ = reports
    monkeypatch.setattr(export, "CSV_CHUNK", 1)

    async def download():
        response = await AsyncClient().get(f"{EXPORT}?{RANGE}", headers={"Authorization": f"Bearer {tenants.token_a}"})
        assert response.status_code == 200, response.content
        assert response.is_async  # not a list Django gathered first
        return [piece async for piece in response.streaming_content]

    pieces = async_to_sync(download)()

    assert len(pieces) == 4  # the header with the first row, then one row each, then the end
    assert ids(csv.DictReader(io.StringIO(b"".join(pieces).decode()))) == [c.conversation_id for c in mine]


# The summary -----------------------------------------------------------------------------------


def test_the_summary_is_the_dashboards_for_the_same_filters(reports):
    selectors = pytest.importorskip("apps.analytics.selectors")
    if not hasattr(selectors, "report_summary"):
        pytest.skip("the dashboard's report_summary is not there yet")
    from apps.analytics.filters import report_filters

    tenants, *_ = reports
    query = {"from": "2026-11-01", "to": "2026-11-07", "team": str(tenants.team_a.pk)}

    response = token_client(tenants.token_a).get(SUMMARY, query)

    assert response.status_code == 200, response.content
    expected = selectors.report_summary(report_filters(workspace=tenants.a, query=query))
    assert response.json() == _as_json(expected)


def _as_json(value):
    import json

    from rest_framework.utils.encoders import JSONEncoder

    return json.loads(json.dumps(value, cls=JSONEncoder))
