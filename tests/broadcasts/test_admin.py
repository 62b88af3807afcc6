"""The supervisor's pages: making a broadcast (its time in the workspace's zone, the services'
refusals as form errors, a CSV's bad rows one by one), its buttons, the live progress page, the
report and the CSV export; campaigns kept in step with beat; the workspace's rules. Another
workspace's broadcast is a 404 on every page."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.broadcasts.models import Broadcast, BroadcastSettings, Campaign, Recipient, Segment
from apps.connectors.models import MessageTemplate
from apps.contacts.models import Contact, Tag
from apps.contacts.services import contact_index
from tests.browser.conftest import browser  # noqa: F401 (the browser tests' chromium fixture)
from tests.conftest import client_for
from tests.conversations.whatsapp import make_whatsapp_channel

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(tenants):
    """Workspace A keeps Cairo time, has a WhatsApp number, an approved marketing template with
    two variables, a segment, a tag and two opted-in customers."""
    tenants.a.timezone = "Africa/Cairo"
    tenants.a.save(update_fields=["timezone"])
    channel = make_whatsapp_channel(tenants.a)
    template = MessageTemplate.objects.create(
        workspace=tenants.a,
        channel=channel,
        name="weekly_promo",
        body="Hi {{1}}, this week: {{2}}.",
        category="marketing",
    )
    segment = Segment.objects.create(
        workspace=tenants.a,
        name="Arabic speakers",
        definition={"match": "all", "conditions": [{"field": "language", "op": "is", "value": "ar"}]},
    )
    tag = Tag.objects.create(workspace=tenants.a, name="vip")
    contacts = []
    for name, phone in (("Amira Hassan", "+201001230001"), ("Omar Said", "+201001230002")):
        contact = Contact(workspace=tenants.a, name=name, phone=phone, language="ar")
        contact_index(contact)
        contact.save()
        contacts.append(contact)
    return tenants, channel, template, segment, tag, contacts


def add_form(channel, template, **fields) -> dict:
    return {
        "workspace": channel.workspace_id,
        "name": "Weekend promo",
        "channel": channel.pk,
        "template": template.pk,
        "variables": '[{"field": "contact.first_name"}, {"value": "free mangoes"}]',
        "audience": "segment",
        "segment": "",
        "tag": "",
        "when": "draft",
        "send_at": "",
        **fields,
    }


def a_broadcast(channel, template, segment, **fields) -> Broadcast:
    from apps.broadcasts.services import broadcast_create

    return broadcast_create(
        workspace=channel.workspace,
        name=fields.pop("name", "Weekend promo"),
        channel=channel,
        template=template,
        variables=[{"field": "contact.first_name"}, {"value": "free mangoes"}],
        audience="segment",
        segment=segment,
        **fields,
    )


def errors_of(response) -> dict:
    form = response.context["adminform"].form
    return {name: [str(e) for e in errors] for name, errors in form.errors.items()}


# Making a broadcast ---------------------------------------------------------------------------


def test_the_add_page_shows_the_workspace_time_zone_and_the_templates_variables(shop):
    tenants, *_ = shop

    response = client_for(tenants.supervisor).get("/admin/broadcasts/broadcast/add/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Africa/Cairo" in page
    assert "weekly_promo" in page and "body {{1}}, body {{2}}" in page


def test_supervisor_schedules_a_broadcast_to_a_segment_in_the_workspace_time_zone(shop):
    tenants, channel, template, segment, _, _ = shop

    response = client_for(tenants.supervisor).post(
        "/admin/broadcasts/broadcast/add/",
        add_form(channel, template, segment=segment.pk, when="at", send_at="2030-01-15T11:00"),
    )

    assert response.status_code == 302, errors_of(response)
    broadcast = Broadcast.objects.get()
    # 11:00 on a Cairo clock (UTC+2 in January) is 09:00 UTC, whatever the server's zone.
    assert broadcast.scheduled_at == datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
    assert (broadcast.state, broadcast.segment, broadcast.created_by) == ("scheduled", segment, tenants.supervisor)
    page = client_for(tenants.supervisor).get(f"/admin/broadcasts/broadcast/{broadcast.pk}/change/").content.decode()
    assert "2030-01-15 11:00 (Africa/Cairo)" in page


def test_a_time_that_the_clocks_skip_is_a_form_error(shop):
    tenants, channel, template, segment, _, _ = shop

    # Egypt moves its clocks from 00:00 to 01:00 on the last Friday of April (2030-04-26).
    response = client_for(tenants.supervisor).post(
        "/admin/broadcasts/broadcast/add/",
        add_form(channel, template, segment=segment.pk, when="at", send_at="2030-04-26T00:30"),
    )

    assert response.status_code == 200
    assert "send_at" in errors_of(response)
    assert not Broadcast.objects.exists()


def test_the_services_refusals_are_form_errors_and_nothing_is_made(shop):
    tenants, channel, template, segment, _, _ = shop

    response = client_for(tenants.supervisor).post(
        "/admin/broadcasts/broadcast/add/",
        add_form(channel, template, segment=segment.pk, variables='[{"field": "contact.shoe_size"}]'),
    )

    assert response.status_code == 200
    assert any("variable" in message for message in errors_of(response)["variables"])
    assert not Broadcast.objects.exists()


def test_a_csv_with_bad_rows_lists_each_bad_row(shop):
    tenants, channel, template, _, _, _ = shop
    upload = SimpleUploadedFile(
        "promo.csv",
        b"phone,name,offer\n+201001230001,Amira,mangoes\nnot-a-phone,Omar,dates\n+201001230001,Amira,again\n",
        "text/csv",
    )

    response = client_for(tenants.supervisor).post(
        "/admin/broadcasts/broadcast/add/",
        add_form(
            channel,
            template,
            audience="csv",
            variables='[{"column": "name"}, {"column": "offer"}]',
            csv_upload=upload,
        ),
    )

    assert response.status_code == 200
    problems = errors_of(response)["csv_upload"]
    assert [p.split(":")[0] for p in problems] == ["row 3", "row 4"]
    assert not Broadcast.objects.exists()


def test_a_good_csv_makes_the_broadcast(shop):
    tenants, channel, template, _, _, _ = shop
    upload = SimpleUploadedFile("promo.csv", b"phone,name,offer\n+201001230001,Amira,mangoes\n", "text/csv")

    response = client_for(tenants.supervisor).post(
        "/admin/broadcasts/broadcast/add/",
        add_form(
            channel,
            template,
            audience="csv",
            variables='[{"column": "name"}, {"column": "offer"}]',
            csv_upload=upload,
        ),
    )

    assert response.status_code == 302, errors_of(response)
    broadcast = Broadcast.objects.get()
    assert (broadcast.audience, broadcast.state) == ("csv", "draft")
    assert broadcast.csv_file


def test_the_template_choices_are_the_approved_ones_of_the_persons_workspaces(shop):
    tenants, channel, *_ = shop
    MessageTemplate.objects.create(workspace=tenants.a, channel=channel, name="draft_one", body="x", status="draft")
    theirs = make_whatsapp_channel(tenants.b)
    MessageTemplate.objects.create(workspace=tenants.b, channel=theirs, name="their_promo", body="Hi {{1}}")

    response = client_for(tenants.supervisor).get("/admin/broadcasts/broadcast/add/")

    choices = {str(label) for _, label in response.context["adminform"].form.fields["template"].choices}
    assert any("weekly_promo" in label for label in choices)
    assert not any("draft_one" in label or "their_promo" in label for label in choices)


# Buttons --------------------------------------------------------------------------------------


def test_the_buttons_follow_the_state(shop):
    tenants, channel, template, segment, _, _ = shop
    broadcast = a_broadcast(channel, template, segment)
    client = client_for(tenants.supervisor)
    act = f"/admin/broadcasts/broadcast/{broadcast.pk}/act"

    draft_page = client.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/change/").content.decode()
    scheduled = client.post(f"{act}/schedule/", {"send_at": "2030-01-15T11:00"})
    broadcast.refresh_from_db()
    at = broadcast.scheduled_at
    started = client.post(f"{act}/start/")
    paused = client.post(f"{act}/pause/")
    broadcast.refresh_from_db()
    state_after_pause = broadcast.state
    refused = client.post(f"{act}/pause/", follow=True)
    cancelled = client.post(f"{act}/cancel/")

    assert 'id="broadcast-start"' in draft_page and 'id="broadcast-pause"' not in draft_page
    assert scheduled.status_code == 302 and at == datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
    assert started.status_code == 302 and started["Location"].endswith(f"/{broadcast.pk}/progress/")
    assert paused.status_code == 302 and state_after_pause == "paused"
    assert any("cannot" in str(message) for message in refused.context["messages"])
    assert cancelled.status_code == 302
    broadcast.refresh_from_db()
    assert broadcast.state == "cancelled"


def test_list_actions_start_and_cancel_and_say_what_they_could_not_do(shop):
    tenants, channel, template, segment, _, _ = shop
    first = a_broadcast(channel, template, segment, name="First")
    second = a_broadcast(channel, template, segment, name="Second")
    Broadcast.objects.filter(pk=second.pk).update(state="cancelled")
    client = client_for(tenants.supervisor)

    response = client.post(
        "/admin/broadcasts/broadcast/",
        {"action": "start_selected", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )

    texts = [str(m) for m in response.context["messages"]]
    assert Broadcast.objects.get(pk=first.pk).state == "running"
    assert any("Second" in text for text in texts) and any("1 broadcast" in text for text in texts)


def test_only_the_name_of_a_made_broadcast_changes_and_the_senders_fields_are_kept(shop):
    tenants, channel, template, segment, _, _ = shop
    broadcast = a_broadcast(channel, template, segment)
    Broadcast.objects.filter(pk=broadcast.pk).update(state="running", total=2)  # what the sender wrote meanwhile

    response = client_for(tenants.supervisor).post(
        f"/admin/broadcasts/broadcast/{broadcast.pk}/change/", {"name": "Renamed", "state": "draft"}
    )

    assert response.status_code == 302
    broadcast.refresh_from_db()
    assert (broadcast.name, broadcast.state, broadcast.total) == ("Renamed", "running", 2)


# Progress, report, export ---------------------------------------------------------------------


@pytest.fixture
def sent_broadcast(shop):
    tenants, channel, template, segment, _, contacts = shop
    broadcast = a_broadcast(channel, template, segment)
    Broadcast.objects.filter(pk=broadcast.pk).update(state="running", started_at=timezone.now(), total=2)
    now = timezone.now()
    Recipient.objects.create(
        workspace=tenants.a,
        broadcast=broadcast,
        contact=contacts[0],
        dedupe_key="a",
        state="read",
        sent_at=now - timedelta(seconds=30),
        delivered_at=now - timedelta(seconds=20),
        read_at=now - timedelta(seconds=10),
        replied_at=now,
    )
    Recipient.objects.create(
        workspace=tenants.a,
        broadcast=broadcast,
        contact=contacts[1],
        dedupe_key="b",
        state="failed",
        reason="131026: Message undeliverable",
        failed_at=now,
    )
    broadcast.refresh_from_db()
    return broadcast


def test_the_progress_page_shows_the_figures_and_listens_to_the_workspace_socket(shop, sent_broadcast):
    tenants, *_ = shop

    response = client_for(tenants.supervisor).get(f"/admin/broadcasts/broadcast/{sent_broadcast.pk}/progress/")

    assert response.status_code == 200
    live = response.context["live"]
    assert live["workspace"] == "alpha" and live["broadcast_id"] == sent_broadcast.pk
    assert live["stats"]["counts"]["read"] == 1 and live["stats"]["counts"]["failed"] == 1
    page = response.content.decode()
    assert "bc-live-data" in page and "broadcasts/progress.js" in page
    stats = client_for(tenants.supervisor).get(live["stats_url"]).json()
    assert stats["replied"] == 1 and stats["total"] == 2


def test_the_report_shows_the_funnel_and_the_failures_by_reason(shop, sent_broadcast):
    tenants, *_ = shop

    response = client_for(tenants.supervisor).get(f"/admin/broadcasts/broadcast/{sent_broadcast.pk}/report/")

    assert response.status_code == 200
    funnel = {row["stage"]: row["count"] for row in response.context["funnel"]}
    assert (funnel["sent"], funnel["delivered"], funnel["read"], funnel["replied"]) == (1, 1, 1, 1)
    assert response.context["failures"][0]["reason"] == "131026: Message undeliverable"
    assert "131026: Message undeliverable" in response.content.decode()


def test_the_recipients_export_streams_a_csv(shop, sent_broadcast):
    tenants, *_ = shop

    response = client_for(tenants.supervisor).get(f"/admin/broadcasts/broadcast/{sent_broadcast.pk}/recipients.csv")

    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:3] == ["Name", "Phone", "State"]
    assert sorted((row[0], row[2]) for row in rows[1:]) == [("Amira Hassan", "read"), ("Omar Said", "failed")]


@pytest.mark.parametrize(
    ("method", "page"),
    [
        ("get", "change/"),
        ("get", "progress/"),
        ("get", "stats/"),
        ("get", "report/"),
        ("get", "recipients.csv"),
        ("post", "act/start/"),
        ("post", "act/cancel/"),
    ],
)
def test_another_workspaces_broadcast_is_not_found_on_any_page(shop, sent_broadcast, method, page):
    tenants, *_ = shop
    outsider = client_for(tenants.outsider)  # owner of workspace B

    response = getattr(outsider, method)(f"/admin/broadcasts/broadcast/{sent_broadcast.pk}/{page}")

    assert response.status_code == 404
    assert Broadcast.objects.get(pk=sent_broadcast.pk).state == "running"


def test_an_agent_is_not_let_into_the_admin(shop, sent_broadcast):
    tenants, *_ = shop

    response = client_for(tenants.teammate).get(f"/admin/broadcasts/broadcast/{sent_broadcast.pk}/progress/")

    assert response.status_code == 302 and "/login/" in response["Location"]


# Campaigns and rules --------------------------------------------------------------------------


def campaign_form(channel, template, **fields) -> dict:
    return {
        "workspace": channel.workspace_id,
        "name": "Thursday promotion",
        "kind": "promo",
        "enabled": "on",
        "channel": channel.pk,
        "template": template.pk,
        "variables": '[{"field": "contact.first_name"}, {"value": "20% off"}]',
        "segment": "",
        "settings": "{}",
        "minute": "0",
        "hour": "10",
        "day_of_week": "thu",
        "day_of_month": "*",
        "month_of_year": "*",
        **fields,
    }


def test_saving_a_campaign_in_the_admin_schedules_it_in_the_workspace_zone(shop):
    tenants, channel, template, segment, _, _ = shop
    client = client_for(tenants.supervisor)

    response = client.post("/admin/broadcasts/campaign/add/", campaign_form(channel, template, segment=segment.pk))

    assert response.status_code == 302, errors_of(response)
    campaign = Campaign.objects.get()
    task = PeriodicTask.objects.get(pk=campaign.periodic_task_id)
    assert (task.crontab.hour, task.crontab.day_of_week, str(task.crontab.timezone)) == ("10", "thu", "Africa/Cairo")

    client.post(
        "/admin/broadcasts/campaign/",
        {"action": "disable", "_selected_action": [campaign.pk]},
    )
    task.refresh_from_db()
    assert task.enabled is False


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hour": "25"}, "hour"),
        ({"segment": ""}, "segment"),
        ({"variables": '[{"field": "contact.first_name"}]'}, "variables"),
        ({"variables": '[{"field": "contact.first_name"}, {"field": "product.name"}]'}, "variables"),
        ({"settings": '{"inactive_days": 30}'}, "settings"),
    ],
)
def test_a_campaign_with_a_mistake_is_a_form_error(shop, change, field):
    tenants, channel, template, segment, _, _ = shop
    form = {**campaign_form(channel, template, segment=segment.pk), **change}

    response = client_for(tenants.supervisor).post("/admin/broadcasts/campaign/add/", form)

    assert response.status_code == 200
    assert field in errors_of(response)
    assert not Campaign.objects.exists() and not PeriodicTask.objects.filter(task="broadcasts.run_campaign").exists()


def test_run_now_makes_a_broadcast_and_the_campaign_page_lists_it(shop):
    tenants, channel, template, segment, _, _ = shop
    client = client_for(tenants.supervisor)
    client.post("/admin/broadcasts/campaign/add/", campaign_form(channel, template, segment=segment.pk))
    campaign = Campaign.objects.get()

    client.post("/admin/broadcasts/campaign/", {"action": "run_now", "_selected_action": [campaign.pk]})
    page = client.get(f"/admin/broadcasts/campaign/{campaign.pk}/change/").content.decode()

    broadcast = Broadcast.objects.get(campaign=campaign)
    assert broadcast.state == "running"
    assert f"/admin/broadcasts/broadcast/{broadcast.pk}/change/" in page


def test_deleting_a_campaign_removes_its_beat_task(shop):
    tenants, channel, template, segment, _, _ = shop
    client = client_for(tenants.supervisor)
    client.post("/admin/broadcasts/campaign/add/", campaign_form(channel, template, segment=segment.pk))
    campaign = Campaign.objects.get()

    client.post(f"/admin/broadcasts/campaign/{campaign.pk}/delete/", {"post": "yes"})

    assert not Campaign.objects.exists()
    assert not PeriodicTask.objects.filter(task="broadcasts.run_campaign").exists()


def test_the_workspace_rules_are_edited_once_per_workspace(shop):
    tenants, *_ = shop
    client = client_for(tenants.supervisor)
    form = {
        "workspace": tenants.a.pk,
        "stop_words": '["stop", "إيقاف"]',
        "start_words": '["start"]',
        "stop_confirmation": '{"en": "Unsubscribed."}',
        "weekly_cap": "2",
        "quiet_from": "22:00",
        "quiet_until": "08:00",
        "conversion_window_hours": "48",
    }

    first = client.post("/admin/broadcasts/broadcastsettings/add/", form)
    second = client.post("/admin/broadcasts/broadcastsettings/add/", form)
    bad = client.post("/admin/broadcasts/broadcastsettings/add/", {**form, "stop_words": '"stop"'})

    assert first.status_code == 302
    assert second.status_code == 200 and "workspace" in errors_of(second)
    assert "stop_words" in errors_of(bad)
    settings = BroadcastSettings.objects.get(workspace=tenants.a)
    assert (settings.weekly_cap, settings.stop_words) == (2, ["stop", "إيقاف"])


# The progress page in a browser ---------------------------------------------------------------


@pytest.mark.live
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_progress_page_follows_the_broadcast_live_over_the_websocket(live_server_process, browser, shop):  # noqa: F811
    from django.conf import settings

    from apps.broadcasts.results import broadcast_progress_publish

    tenants, channel, template, segment, _, contacts = shop
    broadcast = a_broadcast(channel, template, segment)
    Broadcast.objects.filter(pk=broadcast.pk).update(state="running", started_at=timezone.now())
    context = browser.new_context()
    cookie = client_for(tenants.supervisor).cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server_process.url}])
    page = context.new_page()
    page.goto(f"{live_server_process.url}/admin/broadcasts/broadcast/{broadcast.pk}/progress/")
    page.wait_for_selector("#bc-live[data-state=online]")
    assert page.text_content("#bc-sent") == "0"

    now = timezone.now()
    for index, contact in enumerate(contacts):
        Recipient.objects.create(
            workspace=tenants.a,
            broadcast=broadcast,
            contact=contact,
            dedupe_key=f"k{index}",
            state=("delivered", "read")[index],
            sent_at=now,
            delivered_at=now,
            read_at=now if index else None,
        )
    broadcast.refresh_from_db()
    broadcast_progress_publish(broadcast=broadcast, force=True)

    # A selector, not wait_for_function: a string predicate is eval'd in the page, which its
    # Content-Security-Policy refuses (the test failed whenever the update was not there at once).
    page.wait_for_selector("#bc-sent:text-is('2')")
    assert page.text_content("#bc-delivered") == "2"
    assert page.text_content("#bc-read") == "1"
    assert page.text_content("#bc-done") == "2 / 2"
    context.close()
