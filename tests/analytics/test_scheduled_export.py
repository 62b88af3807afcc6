"""The scheduled export: every due workspace gets one file of the cycles closed in its window,
written to the "exports" storage as <prefix>/<slug>/conversations-<UTC time>.<csv|xlsx>; files
put together hold each closed cycle exactly once; a run is claimed so two beats never write
twice, and a failed one is given back."""

import csv
import io
import zipfile
from datetime import UTC, datetime, timedelta

import pytest

from apps.analytics import export
from apps.analytics.export import EXPORT_SETTLE, exports_run_due
from apps.analytics.models import Cycle, Event, Settings
from apps.connectors.models import Channel
from apps.contacts.models import Contact
from apps.conversations.models import Conversation
from tests.conftest import client_for
from tests.factories import make_workspace

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def folder(settings, tmp_path):
    """The exports storage in a fresh local folder."""
    settings.STORAGES = {
        **settings.STORAGES,
        "exports": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "exports"},
        },
    }
    return tmp_path / "exports"


def make_shop(slug: str, **export_settings):
    workspace = make_workspace(slug=slug, timezone="Africa/Cairo")
    channel = Channel.objects.create(workspace=workspace, kind="webchat", name=f"{slug} chat")
    Settings.objects.create(workspace=workspace, **export_settings)
    return workspace, channel


def closed(workspace, channel, *, closed_at, number=1, conversation=None) -> Cycle:
    if conversation is None:
        contact = Contact.objects.create(workspace=workspace, name="Amira")
        conversation = Conversation.objects.create(workspace=workspace, contact=contact, channel=channel)
    return Cycle.objects.create(
        workspace=workspace,
        conversation=conversation,
        number=number,
        contact_id=conversation.contact_id,
        channel=channel,
        source="inbound",
        opened_at=closed_at - timedelta(minutes=20),
        closed_at=closed_at,
        resolution_seconds=1200,
        closed_by="agent",
    )


def files(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def rows(path) -> list[tuple[int, int]]:
    return [(int(row["conversation_id"]), int(row["cycle"])) for row in csv.DictReader(io.StringIO(path.read_text()))]


def test_each_due_workspace_gets_one_file_and_the_others_none(folder):
    due, due_channel = make_shop("due-shop", export_enabled=True)
    recent, _ = make_shop("recent-shop", export_enabled=True, last_export_at=NOW - timedelta(minutes=10))
    make_shop("off-shop", export_enabled=False)
    cycle = closed(due, due_channel, closed_at=NOW - timedelta(hours=2))

    written = exports_run_due(now=NOW)

    assert written == 1
    assert files(folder) == ["exports/due-shop/conversations-20261202T120000Z.csv"]
    assert rows(folder / files(folder)[0]) == [(cycle.conversation_id, 1)]
    assert Settings.objects.get(workspace=due).last_export_at == NOW
    assert Settings.objects.get(workspace=recent).last_export_at == NOW - timedelta(minutes=10)


def test_a_second_run_at_the_same_time_writes_nothing(folder):
    make_shop("nile", export_enabled=True)

    assert exports_run_due(now=NOW) == 1
    assert exports_run_due(now=NOW) == 0
    assert exports_run_due(now=NOW + timedelta(minutes=29)) == 0
    assert len(files(folder)) == 1


def test_two_beats_racing_for_the_same_workspace_write_once(folder):
    workspace, _ = make_shop("nile", export_enabled=True)
    seen_by_both = list(export.exports_due(now=NOW))

    first = export._claim(seen_by_both[0], now=NOW)
    second = export._claim(seen_by_both[0], now=NOW + timedelta(seconds=1))

    assert (first, second) == (True, False)
    assert Settings.objects.get(workspace=workspace).last_export_at == NOW


def test_successive_files_hold_each_closed_cycle_exactly_once(folder):
    workspace, channel = make_shop("nile", export_enabled=True, export_every_minutes=30)
    early = closed(workspace, channel, closed_at=NOW - timedelta(hours=3))
    settling = closed(workspace, channel, closed_at=NOW - EXPORT_SETTLE + timedelta(seconds=1))
    exports_run_due(now=NOW)
    later = closed(workspace, channel, closed_at=NOW + timedelta(minutes=10))
    reopened = closed(
        workspace, channel, closed_at=NOW + timedelta(minutes=20), number=2, conversation=early.conversation
    )
    still_open = Cycle.objects.create(
        workspace=workspace,
        conversation=later.conversation,
        number=2,
        contact_id=later.contact_id,
        channel=channel,
        source="inbound",
        opened_at=NOW + timedelta(minutes=21),
    )

    exports_run_due(now=NOW + timedelta(minutes=30))

    first, second = (folder / name for name in files(folder))
    assert rows(first) == [(early.conversation_id, 1)]
    assert rows(second) == [
        (settling.conversation_id, 1),  # closed too near the first run: in the next file
        (later.conversation_id, 1),
        (reopened.conversation_id, 2),
    ]
    assert (still_open.conversation_id, 2) not in rows(first) + rows(second)


def test_the_first_file_covers_the_day_before(folder):
    workspace, channel = make_shop("nile", export_enabled=True)
    closed(workspace, channel, closed_at=NOW - EXPORT_SETTLE - timedelta(days=1, minutes=1))
    yesterday = closed(workspace, channel, closed_at=NOW - EXPORT_SETTLE - timedelta(hours=23))

    exports_run_due(now=NOW)

    assert rows(folder / files(folder)[0]) == [(yesterday.conversation_id, 1)]


def test_a_quiet_window_still_gets_its_file_with_the_header(folder):
    make_shop("nile", export_enabled=True)

    exports_run_due(now=NOW)

    (name,) = files(folder)
    assert (folder / name).read_text().startswith("workspace,conversation_id,cycle,")
    assert rows(folder / name) == []


def test_the_prefix_and_xlsx_format_name_the_file(folder):
    workspace, channel = make_shop("nile", export_enabled=True, export_format="xlsx", export_prefix="/analyst/drop/")
    closed(workspace, channel, closed_at=NOW - timedelta(hours=1))

    exports_run_due(now=NOW)

    assert files(folder) == ["analyst/drop/nile/conversations-20261202T120000Z.xlsx"]
    with zipfile.ZipFile(folder / files(folder)[0]) as book:
        assert book.read("xl/worksheets/sheet1.xml").count(b"<row ") == 2


def test_a_workspace_only_gets_its_own_cycles(folder):
    a, a_channel = make_shop("alpha-shop", export_enabled=True)
    b, b_channel = make_shop("beta-shop", export_enabled=True)
    mine = closed(a, a_channel, closed_at=NOW - timedelta(hours=1))
    theirs = closed(b, b_channel, closed_at=NOW - timedelta(hours=1))

    assert exports_run_due(now=NOW) == 2

    assert rows(folder / "exports/alpha-shop/conversations-20261202T120000Z.csv") == [(mine.conversation_id, 1)]
    assert rows(folder / "exports/beta-shop/conversations-20261202T120000Z.csv") == [(theirs.conversation_id, 1)]


def test_a_failed_write_gives_the_run_back_for_the_next_beat(folder, monkeypatch):
    workspace, channel = make_shop("nile", export_enabled=True)
    cycle = closed(workspace, channel, closed_at=NOW - timedelta(hours=1))

    def unreachable(*args, **kwargs):
        raise OSError("bucket unreachable")

    monkeypatch.setattr("django.core.files.storage.FileSystemStorage.save", unreachable)
    assert exports_run_due(now=NOW) == 0
    assert Settings.objects.get(workspace=workspace).last_export_at is None
    monkeypatch.undo()

    assert exports_run_due(now=NOW + timedelta(minutes=1)) == 1
    assert rows(folder / files(folder)[0]) == [(cycle.conversation_id, 1)]


def test_a_run_waits_while_the_folder_is_behind_the_windows_end(folder):
    workspace, channel = make_shop("nile", export_enabled=True)
    cycle = closed(workspace, channel, closed_at=NOW - timedelta(hours=1))
    unfolded = Event.objects.create(
        workspace=workspace, conversation=cycle.conversation, kind="closed", at=NOW - timedelta(minutes=30)
    )

    assert exports_run_due(now=NOW) == 0
    assert files(folder) == []

    Event.objects.filter(pk=unfolded.pk).update(folded=True)
    assert exports_run_due(now=NOW + timedelta(minutes=1)) == 1


# The admin -------------------------------------------------------------------------------------


def test_a_supervisor_switches_the_scheduled_export_on_in_the_admin(tenants):
    client = client_for(tenants.supervisor)
    form = {
        "service_level_seconds": 30,
        "email_service_level_seconds": 14400,
        "export_enabled": "on",
        "export_every_minutes": 15,
        "export_format": "xlsx",
        "export_prefix": "reports",
    }

    theirs = client.post("/admin/analytics/settings/add/", {**form, "workspace": tenants.b.pk})
    ours = client.post("/admin/analytics/settings/add/", {**form, "workspace": tenants.a.pk})

    assert theirs.status_code == 200 and not Settings.objects.filter(workspace=tenants.b).exists()
    assert ours.status_code == 302, ours.content
    saved = Settings.objects.get(workspace=tenants.a)
    assert (saved.export_enabled, saved.export_every_minutes, saved.export_format) == (True, 15, "xlsx")
    assert client.get("/admin/analytics/settings/add/").status_code == 403  # one per workspace


@pytest.mark.parametrize("prefix", ["../outside", "a/../../b", "with space", "a//b"])
def test_the_export_folder_stays_inside_the_export_storage(tenants, prefix):
    form = {
        "workspace": tenants.a.pk,
        "service_level_seconds": 30,
        "email_service_level_seconds": 14400,
        "export_every_minutes": 30,
        "export_format": "csv",
        "export_prefix": prefix,
    }

    response = client_for(tenants.supervisor).post("/admin/analytics/settings/add/", form)

    assert response.status_code == 200 and "export_prefix" in response.context["adminform"].form.errors
    assert not Settings.objects.filter(workspace=tenants.a).exists()


def test_the_event_log_is_for_reading_only_in_the_admin(tenants):
    contact = Contact.objects.create(workspace=tenants.a, name="Amira")
    channel = Channel.objects.create(workspace=tenants.a, kind="webchat", name="Chat")
    conversation = Conversation.objects.create(workspace=tenants.a, contact=contact, channel=channel)
    event = Event.objects.create(workspace=tenants.a, conversation=conversation, kind="opened", by="contact")
    client = client_for(tenants.supervisor)

    listed = client.get("/admin/analytics/event/")
    page = client.get(f"/admin/analytics/event/{event.pk}/change/")
    changed = client.post(f"/admin/analytics/event/{event.pk}/change/", {"kind": "closed"})

    assert listed.status_code == 200 and event in listed.context["cl"].queryset
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert changed.status_code == 403 and Event.objects.get(pk=event.pk).kind == "opened"
    assert client.get("/admin/analytics/event/add/").status_code == 403
