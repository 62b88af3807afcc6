"""The inbox's list (views, filters, search) and what operators do to a conversation, through
the API the inbox page uses."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.contacts.models import Tag
from apps.contacts.services import contact_resolve
from apps.conversations import services
from apps.conversations.models import Conversation, Message, Notification
from apps.core import realtime
from apps.workspaces.models import Membership, Role
from tests.conftest import client_for, token_client
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_member, make_team


@pytest.fixture
def inbox(tenants):
    channel = make_whatsapp_channel(tenants.a)
    people = [
        ("201001110001", "Amira Hassan", "Where is my order 1001?"),
        ("201001110002", "Omar Farouk", "The eggs arrived broken"),
        ("201001110003", "Layla Said", "Can I pay by card?"),
    ]
    conversations = []
    for wa_id, name, text in people:
        contact = contact_resolve(channel=channel, external_id=wa_id, name=name, phone=f"+{wa_id}")
        conversation = Conversation.objects.create(
            workspace=tenants.a, contact=contact, channel=channel, last_message_at=timezone.now()
        )
        Message.objects.create(
            workspace=tenants.a,
            conversation=conversation,
            channel=channel,
            direction="in",
            sender_kind="contact",
            text=text,
            state="received",
            provider_id=f"wamid.{wa_id}",
        )
        conversations.append(conversation)
    return conversations


def ids(response):
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def membership(user):
    return Membership.objects.get(user=user)


def test_views_mine_unassigned_team_and_all(tenants, inbox):
    amira, omar, layla = inbox
    Conversation.objects.filter(pk=amira.pk).update(assignee=membership(tenants.teammate))
    Conversation.objects.filter(pk=omar.pk).update(team=tenants.team_a)
    client = client_for(tenants.teammate)

    assert ids(client.get("/api/v1/conversations/?view=mine")) == [amira.id]
    assert set(ids(client.get("/api/v1/conversations/?view=unassigned"))) == {omar.id, layla.id}
    assert ids(client.get("/api/v1/conversations/?view=team")) == [omar.id]
    assert set(ids(client.get("/api/v1/conversations/?view=all"))) == {amira.id, omar.id, layla.id}


def test_search_finds_encrypted_names_by_prefix_phones_by_last_digits_and_message_words(tenants, inbox):
    amira, omar, layla = inbox
    client = client_for(tenants.teammate)

    assert ids(client.get("/api/v1/conversations/?q=ami")) == [amira.id]
    assert ids(client.get("/api/v1/conversations/?q=farouk")) == [omar.id]
    assert ids(client.get("/api/v1/conversations/?q=0003")) == [layla.id]
    assert ids(client.get("/api/v1/conversations/?q=%2B201001110002")) == [omar.id]
    assert ids(client.get("/api/v1/conversations/?q=broken")) == [omar.id]
    assert ids(client.get("/api/v1/conversations/?q=nobody")) == []


def test_rows_carry_the_last_message_and_the_list_costs_the_same_queries_for_3_or_30_rows(tenants, inbox):
    client = client_for(tenants.teammate)
    row = client.get("/api/v1/conversations/?view=all").json()["results"][0]
    assert row["last_message"]["text"] == "Can I pay by card?"
    assert row["contact_name"] == "Layla Said" and row["channel_kind"] == "whatsapp"

    with CaptureQueriesContext(connection) as few:
        client.get("/api/v1/conversations/?view=all&status=open")
    channel = inbox[0].channel
    for n in range(27):
        contact = contact_resolve(channel=channel, external_id=f"2010099900{n:02}", name=f"Extra {n}")
        Conversation.objects.create(workspace=tenants.a, contact=contact, channel=channel)
    with CaptureQueriesContext(connection) as many:
        rows = client.get("/api/v1/conversations/?view=all&status=open").json()["results"]
    assert len(rows) == 30
    assert len(many.captured_queries) == len(few.captured_queries) <= 8


def test_assigning_leaves_an_event_notifies_the_assignee_and_reaches_the_stream(
    tenants, inbox, django_capture_on_commit_callbacks
):
    amira = inbox[0]
    last = realtime.last_event_id(tenants.a.id)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(tenants.supervisor).post(
            f"/api/v1/conversations/{amira.id}/assign/",
            {"assignee": membership(tenants.teammate).id, "note": "VIP customer, be quick"},
            content_type="application/json",
        )
    assert response.status_code == 200, response.content
    assert response.json()["assignee_id"] == membership(tenants.teammate).id

    kinds = list(Message.objects.filter(conversation=amira).order_by("id").values_list("kind", flat=True))
    assert kinds[-2:] == ["event", "note"]
    assert Notification.objects.get().recipient == membership(tenants.teammate)
    types = [event["type"] for event in realtime.events_since(tenants.a.id, last)]
    assert "conversation.updated" in types and types.count("message.created") == 2


def test_an_agent_cannot_take_a_colleagues_conversation_but_a_supervisor_can(tenants, inbox):
    amira = inbox[0]
    colleague = make_member(tenants.a, Role.AGENT)
    Conversation.objects.filter(pk=amira.pk).update(assignee=colleague)
    url = f"/api/v1/conversations/{amira.id}/assign/"
    me = membership(tenants.teammate).id

    refused = client_for(tenants.teammate).post(url, {"assignee": me}, content_type="application/json")
    taken = client_for(tenants.supervisor).post(
        url, {"assignee": membership(tenants.supervisor).id}, content_type="application/json"
    )

    assert refused.status_code == 403 and refused.json()["code"] == "permission_denied"
    assert taken.status_code == 200


def test_close_with_a_category_and_summary_then_reopen(tenants, inbox):
    amira = inbox[0]
    tenants.a.closing_categories = ["order status", "refund"]
    tenants.a.save(update_fields=["closing_categories"])
    client = client_for(tenants.teammate)
    url = f"/api/v1/conversations/{amira.id}/"

    wrong = client.post(url + "close/", {"category": "weather"}, content_type="application/json")
    closed = client.post(
        url + "close/", {"category": "order status", "summary": "Shipped today"}, content_type="application/json"
    )
    reopened = client.post(url + "reopen/", {}, content_type="application/json")

    assert wrong.status_code == 400 and "category" in wrong.json()["fields"]
    assert closed.json()["status"] == "closed"
    amira.refresh_from_db()
    assert (amira.category, amira.closing_summary) == ("order status", "Shipped today")
    assert reopened.json()["status"] == "open"


def test_snooze_must_be_in_the_future_and_wakes_up_when_due(tenants, inbox):
    amira = inbox[0]
    client = client_for(tenants.teammate)
    url = f"/api/v1/conversations/{amira.id}/snooze/"

    past = client.post(url, {"until": (timezone.now() - timedelta(hours=1)).isoformat()}, "application/json")
    snoozed = client.post(url, {"until": (timezone.now() + timedelta(hours=1)).isoformat()}, "application/json")
    assert past.status_code == 400
    assert snoozed.json()["status"] == "snoozed"

    assert services.conversations_wake_snoozed(now=timezone.now() + timedelta(hours=2)) == 1
    amira.refresh_from_db()
    assert amira.status == "open" and amira.snoozed_until is None


@pytest.mark.parametrize("plan", ["lists of ids", "a probe per row", "a semi-join of contacts"])
def test_search_and_tag_filters_answer_the_same_whichever_plan_they_take(tenants, inbox, monkeypatch, plan):
    """On a large inbox, a rare tag, word or name is answered as a list of ids, a common one by
    probing the newest conversations row by row, and a name common but not lately as a semi-join;
    all must find the same conversations."""
    from apps.conversations import selectors

    amira, omar, layla = inbox
    vip = Tag.objects.create(workspace=tenants.a, name="vip")
    amira.tags.add(vip)
    layla.tags.add(vip)
    Message.objects.create(
        workspace=tenants.a,
        conversation=layla,
        channel=layla.channel,
        direction="in",
        sender_kind="contact",
        text="Broken eggs again",
        state="received",
        provider_id="wamid.again",
    )
    Message.objects.create(
        workspace=tenants.a,
        conversation=omar,
        channel=omar.channel,
        direction="out",
        sender_kind="agent",
        text="Layla said it was fine",
        state="sent",
    )
    if plan == "a probe per row":
        monkeypatch.setattr(selectors, "FEW", 0)  # every tag and word counts as common
        shares = {"broken": 0.2, "eggs": 0.2, "card": 0.2, "said": 0.2}
        monkeypatch.setattr(selectors, "_word_shares", lambda: shares)
        monkeypatch.setattr(selectors, "RECENT_MATCHES", 1)
        monkeypatch.setattr(selectors, "RECENT_NAMED", 1)
    if plan == "a semi-join of contacts":
        monkeypatch.setattr(selectors, "FEW", 0)  # names are common, but not among the newest (RECENT_NAMED)
    client = client_for(tenants.teammate)

    assert set(ids(client.get(f"/api/v1/conversations/?tag={vip.id}"))) == {amira.id, layla.id}
    assert set(ids(client.get("/api/v1/conversations/?q=broken eggs"))) == {omar.id, layla.id}
    assert ids(client.get("/api/v1/conversations/?q=card")) == [layla.id]
    assert ids(client.get("/api/v1/conversations/?q=eggs&status=closed")) == []
    assert ids(client.get(f"/api/v1/conversations/?q=eggs&tag={vip.id}")) == [layla.id]
    assert ids(client.get("/api/v1/conversations/?q=ami")) == [amira.id]
    assert ids(client.get("/api/v1/conversations/?q=omar farouk")) == [omar.id]
    assert ids(client.get("/api/v1/conversations/?q=hassan&view=unassigned&status=open")) == [amira.id]
    assert set(ids(client.get("/api/v1/conversations/?q=said"))) == {omar.id, layla.id}  # a word and a name
    assert ids(client.get("/api/v1/conversations/?q=said&status=closed")) == []


def test_priority_category_and_tags_are_set_and_another_workspaces_tag_is_refused(tenants, inbox):
    amira = inbox[0]
    vip = Tag.objects.create(workspace=tenants.a, name="vip")
    foreign = Tag.objects.create(workspace=tenants.b, name="vip")
    client = client_for(tenants.teammate)
    url = f"/api/v1/conversations/{amira.id}/"

    ok = client.patch(url, {"priority": "urgent", "category": "delivery", "tags": [vip.id]}, "application/json")
    refused = client.patch(url, {"tags": [foreign.id]}, "application/json")

    assert ok.status_code == 200, ok.content
    assert (ok.json()["priority"], ok.json()["category"], ok.json()["tag_ids"]) == ("urgent", "delivery", [vip.id])
    assert refused.status_code == 400 and "tags" in refused.json()["fields"]
    assert ids(client.get(f"/api/v1/conversations/?tag={vip.id}")) == [amira.id]


def test_a_mention_in_a_note_notifies_that_colleague_only(tenants, inbox):
    amira = inbox[0]
    response = client_for(tenants.supervisor).post(
        f"/api/v1/conversations/{amira.id}/messages/",
        {"kind": "note", "text": f"@{tenants.teammate.username} please call her, cc @nobody"},
        content_type="application/json",
    )
    assert response.status_code == 201
    notification = Notification.objects.get()
    assert (notification.recipient.user, notification.kind) == (tenants.teammate, "mention")


def test_reading_a_conversation_clears_its_unread_count(tenants, inbox):
    amira = inbox[0]
    Conversation.objects.filter(pk=amira.pk).update(unread_count=3)
    response = client_for(tenants.teammate).post(f"/api/v1/conversations/{amira.id}/read/")
    assert response.json()["unread_count"] == 0


def test_outsiders_get_404_on_every_action(tenants, inbox):
    amira = inbox[0]
    outsider = client_for(tenants.outsider)
    for action in ("assign/", "close/", "reopen/", "snooze/", "read/"):
        assert outsider.post(f"/api/v1/conversations/{amira.id}/{action}", {}, "application/json").status_code == 404
    assert outsider.patch(f"/api/v1/conversations/{amira.id}/", {}, "application/json").status_code == 404
    assert token_client(tenants.token_b).get("/api/v1/conversations/?q=amira").json()["results"] == []
    team_b = make_team(tenants.b, name="Other")
    foreign_team = client_for(tenants.supervisor).post(
        f"/api/v1/conversations/{amira.id}/assign/", {"team": team_b.id}, "application/json"
    )
    assert foreign_team.status_code == 400 and "team" in foreign_team.json()["fields"]


def test_outside_the_window_an_approved_template_goes_with_its_parameters(tenants, inbox):
    from apps.connectors.models import MessageTemplate

    amira = inbox[0]
    template = MessageTemplate.objects.create(
        workspace=tenants.a, channel=amira.channel, name="order_update", body="Hi {{1}}, your order {{2}} is {{3}}."
    )
    client = client_for(tenants.teammate)
    url = f"/api/v1/conversations/{amira.id}/messages/"

    free_text = client.post(url, {"text": "hello?"}, "application/json")
    missing = client.post(
        url, {"kind": "template", "payload": {"template_id": template.id, "parameters": ["Amira"]}}, "application/json"
    )
    sent = client.post(
        url,
        {"kind": "template", "payload": {"template_id": template.id, "parameters": ["Amira", "#1001", "on its way"]}},
        "application/json",
    )

    assert free_text.status_code == 400 and free_text.json()["code"] == "window_closed"
    assert missing.status_code == 400 and "parameters" in missing.json()["fields"]
    assert sent.status_code == 201, sent.content
    assert sent.json()["text"] == "Hi Amira, your order #1001 is on its way."
    message = Message.objects.get(pk=sent.json()["id"])
    assert message.payload["template"]["name"] == "order_update"
    assert message.payload["template"]["components"][0]["parameters"][2] == {"type": "text", "text": "on its way"}
