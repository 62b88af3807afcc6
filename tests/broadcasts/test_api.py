"""The broadcasts and campaigns API: what an order system calls to send a template to a segment,
a tag or a CSV, now or later, and to follow it; every rule's refusal is a JSON 4xx, another
workspace's broadcast is a 404, and agents read but do not write."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from apps.broadcasts.models import Broadcast, Campaign, Recipient, Segment
from apps.connectors.models import MessageTemplate
from apps.contacts.models import Contact, Tag
from apps.contacts.services import contact_index
from tests.conftest import client_for, token_client
from tests.conversations.whatsapp import make_whatsapp_channel

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(tenants):
    """Workspace A (Cairo time) with a WhatsApp number, an approved marketing template with two
    variables, a segment, a tag, and two opted-in customers."""
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
    for name, phone in (("Amira Hassan", "+201001230001"), ("Omar Said", "+201001230002")):
        contact = Contact(
            workspace=tenants.a,
            name=name,
            phone=phone,
            language="ar",
            marketing_consent={"whatsapp": {"opted_in": True, "at": "2024-01-01T00:00:00+00:00"}},
        )
        contact_index(contact)
        contact.save()
        contact.tags.add(tag)
    return tenants, channel, template, segment, tag


def body(channel, template, **fields) -> dict:
    return {
        "name": "Weekend promo",
        "channel": channel.pk,
        "template": template.pk,
        "variables": [{"field": "contact.first_name"}, {"value": "20% off fruit"}],
        "audience": "segment",
        **fields,
    }


def create(client, payload):
    return client.post("/api/v1/broadcasts/", payload, content_type="application/json")


def post(client, broadcast_id, verb, payload=None):
    return client.post(f"/api/v1/broadcasts/{broadcast_id}/{verb}/", payload or {}, content_type="application/json")


# Create ---------------------------------------------------------------------------------------


def test_supervisor_creates_a_draft_broadcast_to_a_segment(shop):
    tenants, channel, template, segment, _ = shop

    response = create(client_for(tenants.supervisor), body(channel, template, segment=segment.pk))

    assert response.status_code == 201, response.content
    data = response.json()
    assert data["state"] == "draft"
    assert (data["segment"], data["channel"], data["template"]["name"]) == (segment.pk, channel.pk, "weekly_promo")
    broadcast = Broadcast.objects.get(pk=data["id"])
    assert broadcast.workspace == tenants.a and broadcast.created_by == tenants.supervisor


def test_an_api_token_schedules_a_broadcast_to_a_tag_at_a_local_time(shop):
    tenants, channel, template, _, tag = shop

    response = create(
        token_client(tenants.token_a),
        body(channel, template, audience="tag", tag=tag.pk, scheduled_at="2030-01-15T11:00:00"),
    )

    assert response.status_code == 201, response.content
    broadcast = Broadcast.objects.get(pk=response.json()["id"])
    # A time without an offset is the workspace's: 11:00 in Cairo (UTC+2 in January) is 09:00 UTC.
    assert broadcast.scheduled_at == datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
    assert broadcast.state == Broadcast.State.SCHEDULED
    assert broadcast.created_by is None


def test_a_csv_upload_makes_a_broadcast_with_per_row_values(shop):
    tenants, channel, template, _, _ = shop
    upload = SimpleUploadedFile(
        "promo.csv", b"phone,name,offer\n+201001230001,Amira,free mangoes\n+201001230009,Lina,10% off\n", "text/csv"
    )

    response = client_for(tenants.owner).post(
        "/api/v1/broadcasts/",
        {
            "name": "CSV promo",
            "channel": channel.pk,
            "template": template.pk,
            "audience": "csv",
            "variables": '[{"column": "name"}, {"column": "offer"}]',
            "csv": upload,
        },
    )

    assert response.status_code == 201, response.content
    assert response.json()["audience"] == "csv"


def test_a_csv_with_bad_rows_is_a_400_naming_each_row(shop):
    tenants, channel, template, _, _ = shop
    upload = SimpleUploadedFile(
        "promo.csv", b"phone,name,offer\nnot-a-phone,Amira,x\n+201001230002,Omar,y\n12,Lina,z\n", "text/csv"
    )

    response = client_for(tenants.owner).post(
        "/api/v1/broadcasts/",
        {
            "name": "CSV promo",
            "channel": channel.pk,
            "template": template.pk,
            "audience": "csv",
            "variables": '[{"column": "name"}, {"column": "offer"}]',
            "csv": upload,
        },
    )

    assert response.status_code == 400, response.content
    text = str(response.json())
    assert "2" in text and "4" in text  # the header is row 1: the bad rows are 2 and 4
    assert not Broadcast.objects.exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"variables": [{"field": "contact.first_name"}]}, "variables"),
        ({"segment": None}, "segment"),
        ({"colour": "red"}, "colour"),
        ({"audience": "everyone"}, "audience"),
        ({"scheduled_at": "tomorrow"}, "scheduled_at"),
    ],
)
def test_a_broadcast_that_breaks_a_rule_is_a_400_naming_the_field(shop, change, field):
    tenants, channel, template, segment, _ = shop

    response = create(client_for(tenants.supervisor), {**body(channel, template, segment=segment.pk), **change})

    assert response.status_code == 400, response.content
    error = response.json()
    assert error["code"] and error["detail"]
    assert field in error.get("fields", {}) or field in error["detail"]
    assert not Broadcast.objects.exists()


def test_a_template_not_approved_cannot_be_sent(shop):
    tenants, channel, template, segment, _ = shop
    MessageTemplate.objects.filter(pk=template.pk).update(status="pending")

    response = create(client_for(tenants.supervisor), body(channel, template, segment=segment.pk))

    assert response.status_code == 400, response.content
    assert not Broadcast.objects.exists()


def test_another_workspaces_channel_or_segment_is_refused(shop):
    tenants, channel, template, _, _ = shop
    theirs = Segment.objects.create(
        workspace=tenants.b,
        name="Theirs",
        definition={"match": "all", "conditions": [{"field": "language", "op": "is", "value": "en"}]},
    )

    response = create(client_for(tenants.supervisor), body(channel, template, segment=theirs.pk))

    assert response.status_code == 400
    assert "segment" in response.json()["fields"]


def test_an_agent_reads_broadcasts_but_cannot_create_or_start_one(shop):
    tenants, channel, template, segment, _ = shop
    made = create(client_for(tenants.supervisor), body(channel, template, segment=segment.pk)).json()
    agent = client_for(tenants.teammate)

    listed = agent.get("/api/v1/broadcasts/")
    created = create(agent, body(channel, template, segment=segment.pk))
    started = post(agent, made["id"], "start")

    assert listed.status_code == 200 and [b["id"] for b in listed.json()["results"]] == [made["id"]]
    assert created.status_code == 403 and started.status_code == 403
    assert Broadcast.objects.get(pk=made["id"]).state == Broadcast.State.DRAFT


# Lifecycle ------------------------------------------------------------------------------------


def test_schedule_start_pause_resume_and_cancel(shop):
    tenants, channel, template, segment, _ = shop
    client = token_client(tenants.token_a)
    broadcast_id = create(client, body(channel, template, segment=segment.pk)).json()["id"]
    later = (timezone.now() + timedelta(days=2)).isoformat()

    scheduled = post(client, broadcast_id, "schedule", {"at": later})
    started = post(client, broadcast_id, "start")
    paused = post(client, broadcast_id, "pause")
    resumed = post(client, broadcast_id, "resume")
    cancelled = post(client, broadcast_id, "cancel")

    assert scheduled.status_code == 200, scheduled.content
    assert scheduled.json()["state"] == "scheduled"
    assert started.json()["state"] in ("running", "completed"), started.content
    if started.json()["state"] == "running":
        assert paused.json()["state"] == "paused", paused.content
        assert resumed.json()["state"] in ("running", "completed"), resumed.content
    assert cancelled.status_code in (200, 409)
    if Broadcast.objects.get(pk=broadcast_id).state != Broadcast.State.COMPLETED:
        assert cancelled.json()["state"] == "cancelled"


def test_a_cancelled_broadcast_cannot_start_again(shop):
    tenants, channel, template, segment, _ = shop
    client = client_for(tenants.supervisor)
    broadcast_id = create(client, body(channel, template, segment=segment.pk)).json()["id"]
    post(client, broadcast_id, "cancel")

    again = post(client, broadcast_id, "start")
    resumed = post(client, broadcast_id, "resume")

    assert again.status_code in (400, 409) and resumed.status_code in (400, 409)
    assert again.json()["code"]
    assert Broadcast.objects.get(pk=broadcast_id).state == Broadcast.State.CANCELLED


def test_scheduling_needs_a_time(shop):
    tenants, channel, template, segment, _ = shop
    client = client_for(tenants.supervisor)
    broadcast_id = create(client, body(channel, template, segment=segment.pk)).json()["id"]

    missing = post(client, broadcast_id, "schedule", {})
    unknown = post(client, broadcast_id, "schedule", {"when": "soon"})

    assert missing.status_code == 400 and "at" in missing.json()["fields"]
    assert unknown.status_code == 400 and "when" in unknown.json()["fields"]


def test_stats_count_the_recipients_by_state(shop):
    tenants, channel, template, segment, _ = shop
    client = client_for(tenants.supervisor)
    broadcast = Broadcast.objects.get(pk=create(client, body(channel, template, segment=segment.pk)).json()["id"])
    for index, contact in enumerate(Contact.objects.filter(workspace=tenants.a).order_by("pk")):
        Recipient.objects.create(
            workspace=tenants.a,
            broadcast=broadcast,
            contact=contact,
            dedupe_key=f"k{index}",
            state=("delivered", "failed")[index],
            reason="" if index == 0 else "131026: Message undeliverable",
            sent_at=timezone.now() if index == 0 else None,
        )

    stats = client.get(f"/api/v1/broadcasts/{broadcast.pk}/stats/").json()

    assert stats["broadcast_id"] == broadcast.pk
    assert stats["total"] == 2
    assert stats["counts"]["delivered"] == 1 and stats["counts"]["failed"] == 1
    assert stats["failed_by_reason"] == [{"reason": "131026: Message undeliverable", "count": 1}]


# Another workspace ------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["schedule", "start", "pause", "resume", "cancel"])
def test_another_workspaces_broadcast_is_not_found_for_any_act(shop, verb):
    tenants, channel, template, segment, _ = shop
    broadcast_id = create(client_for(tenants.supervisor), body(channel, template, segment=segment.pk)).json()["id"]
    later = (timezone.now() + timedelta(days=1)).isoformat()

    for outsider in (client_for(tenants.outsider), token_client(tenants.token_b)):
        response = post(outsider, broadcast_id, verb, {"at": later} if verb == "schedule" else None)
        assert response.status_code == 404, response.content
        assert response.json()["code"] == "not_found"
    assert Broadcast.objects.get(pk=broadcast_id).state == Broadcast.State.DRAFT


def test_another_workspaces_broadcast_is_neither_listed_nor_read(shop):
    tenants, channel, template, segment, _ = shop
    broadcast_id = create(client_for(tenants.supervisor), body(channel, template, segment=segment.pk)).json()["id"]
    outsider = client_for(tenants.outsider)

    assert outsider.get("/api/v1/broadcasts/").json()["results"] == []
    assert outsider.get(f"/api/v1/broadcasts/{broadcast_id}/").status_code == 404
    assert outsider.get(f"/api/v1/broadcasts/{broadcast_id}/stats/").status_code == 404
    assert client_for(tenants.teammate).get(f"/api/v1/broadcasts/{broadcast_id}/").status_code == 200


def test_anonymous_callers_are_refused(shop):
    from django.test import Client

    assert Client().get("/api/v1/broadcasts/").status_code in (401, 403)


# Campaigns --------------------------------------------------------------------------------------


def test_campaigns_are_listed_with_their_schedule_and_run_on_demand(shop):
    tenants, channel, template, segment, _ = shop
    campaign = Campaign.objects.create(
        workspace=tenants.a,
        name="Thursday promotion",
        kind=Campaign.Kind.PROMO,
        channel=channel,
        template=template,
        segment=segment,
        variables=[{"field": "contact.first_name"}, {"value": "20% off"}],
        hour="10",
        day_of_week="thu",
    )
    client = token_client(tenants.token_a)

    listed = client.get("/api/v1/campaigns/").json()["results"]
    run = client.post(f"/api/v1/campaigns/{campaign.pk}/run/", {}, content_type="application/json")
    again = client.post(f"/api/v1/campaigns/{campaign.pk}/run/", {}, content_type="application/json")
    theirs = token_client(tenants.token_b).post(
        f"/api/v1/campaigns/{campaign.pk}/run/", {}, content_type="application/json"
    )

    assert [(c["name"], c["schedule"], c["timezone"]) for c in listed] == [
        ("Thursday promotion", "0 10 * * thu", "Africa/Cairo")
    ]
    assert run.status_code == 201, run.content
    assert Broadcast.objects.get(pk=run.json()["id"]).campaign == campaign
    assert again.status_code == 409 and again.json()["code"] == "campaign_not_run"
    assert theirs.status_code == 404


def test_the_list_costs_the_same_queries_for_one_broadcast_or_many(shop):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    tenants, channel, template, segment, _ = shop
    client = token_client(tenants.token_a)
    create(client, body(channel, template, segment=segment.pk))
    with CaptureQueriesContext(connection) as one:
        assert len(client.get("/api/v1/broadcasts/").json()["results"]) == 1
    for index in range(4):
        create(client, body(channel, template, segment=segment.pk, name=f"Promo {index}"))
    with CaptureQueriesContext(connection) as five:
        assert len(client.get("/api/v1/broadcasts/").json()["results"]) == 5

    assert len(five) == len(one)
