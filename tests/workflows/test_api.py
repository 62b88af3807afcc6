"""The workflows' API: FAQ entries and the matcher, workflows (read, switch, export, import, start),
runs (read, cancel) and the public escalation callback; and what the inbox's list learns from them
(the Queue view, the bot badge, the shortcuts offered to agents)."""

from datetime import datetime, timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.connectors.models import Channel
from apps.contacts.services import contact_resolve
from apps.conversations.models import Conversation
from apps.conversations.selectors import inbox_bootstrap
from apps.workflows.api.views import CallbackRateThrottle
from apps.workflows.definition import workflow_import
from apps.workflows.matching import faq_match
from apps.workflows.models import BotSettings, FaqEntry, Run, Workflow
from apps.workspaces.models import Membership, Role
from apps.workspaces.selectors import workspace_context_for_user
from tests.conftest import client_for, token_client
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_member

SURVEY = {
    "name": "Order survey",
    "trigger": "shortcut",
    "trigger_settings": {"shortcut": "survey"},
    "steps": [
        {"key": "ask", "kind": "ask", "settings": {"text": "Your order number?", "input": "text", "save_as": "order"}}
    ],
}
ESCALATION = {
    "name": "Ask the seller",
    "trigger": "api",
    "steps": [
        {
            "key": "seller",
            "kind": "notify",
            "settings": {
                "via": "email",
                "to": "seller@example.com",
                "text": "A customer asks",
                "wait_for_reply": True,
            },
        }
    ],
}
FAQ = {
    "intent": "refund_time",
    "language": "en",
    "examples": [
        "when will I get my money back",
        "how long does a refund take",
        "refund still not received",
        "where is my refund",
        "how many days for the refund",
    ],
    "answer": "Refunds reach your card within 5 working days.",
}


def post(client, url, body=None):
    return client.post(url, body if body is not None else {}, content_type="application/json")


def patch(client, url, body):
    return client.patch(url, body, content_type="application/json")


def membership(user):
    return Membership.objects.get(user=user)


def make_conversation(workspace, *, name="Amira Hassan", wa_id="201001110001", **fields):
    channel = Channel.objects.filter(workspace=workspace).first() or make_whatsapp_channel(workspace)
    contact = contact_resolve(channel=channel, external_id=wa_id, name=name, phone=f"+{wa_id}")
    fields.setdefault("last_message_at", timezone.now())
    fields.setdefault("window_expires_at", timezone.now() + timedelta(hours=23))  # the customer wrote lately
    return Conversation.objects.create(workspace=workspace, contact=contact, channel=channel, **fields)


@pytest.fixture
def survey(tenants):
    return workflow_import(workspace=tenants.a, definition=SURVEY)


@pytest.fixture
def conversation(tenants):
    return make_conversation(tenants.a)


@pytest.fixture
def faq(tenants):
    return FaqEntry.objects.create(workspace=tenants.a, **FAQ)


# FAQ entries -----------------------------------------------------------------------------------


def test_a_supervisor_creates_lists_filters_changes_and_deletes_faq_entries(tenants):
    client = client_for(tenants.supervisor)

    created = post(client, "/api/v1/faq/", FAQ)
    assert created.status_code == 201, created.content
    entry = created.json()
    assert entry["intent"] == "refund_time" and entry["examples"] == FAQ["examples"] and entry["follow_up"] is True
    post(client, "/api/v1/faq/", {**FAQ, "language": "ru", "answer": "Деньги вернутся за 5 рабочих дней."})

    assert len(client.get("/api/v1/faq/").json()["results"]) == 2
    assert [row["language"] for row in client.get("/api/v1/faq/?language=ru").json()["results"]] == ["ru"]
    assert client.get("/api/v1/faq/?intent=nothing_like_it").json()["results"] == []
    changed = patch(client, f"/api/v1/faq/{entry['id']}/", {"answer": "Within a week.", "follow_up": False})
    assert changed.status_code == 200 and changed.json()["answer"] == "Within a week."
    assert client.delete(f"/api/v1/faq/{entry['id']}/").status_code == 204
    assert FaqEntry.objects.filter(workspace=tenants.a).count() == 1


def test_an_api_token_writes_faq_entries_and_an_agent_only_reads_them(tenants, faq):
    agent = client_for(tenants.teammate)

    assert (
        token_client(tenants.token_a)
        .post("/api/v1/faq/", {**FAQ, "language": "ru"}, content_type="application/json")
        .status_code
        == 201
    )
    refused = post(agent, "/api/v1/faq/", {**FAQ, "intent": "delivery"})
    assert refused.status_code == 403 and refused.json()["code"] == "permission_denied"
    assert patch(agent, f"/api/v1/faq/{faq.id}/", {"answer": "x"}).status_code == 403
    assert agent.delete(f"/api/v1/faq/{faq.id}/").status_code == 403
    assert agent.get(f"/api/v1/faq/{faq.id}/").json()["answer"] == FAQ["answer"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"examples": []}, "examples"),
        ({"examples": ["fine"] * 51}, "examples"),
        ({"examples": ["x" * 501]}, "examples.0"),
        ({"examples": ["fine", "  "]}, "examples.1"),
        ({"examples": "not a list"}, "examples"),
        ({"intent": "has spaces"}, "intent"),
        ({"language": "English!"}, "language"),
        ({"language": ""}, "language"),
        ({"answer": ""}, "answer"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_bad_faq_entry_is_a_400_naming_the_field(tenants, change, field):
    response = post(client_for(tenants.owner), "/api/v1/faq/", {**FAQ, **change})

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid" and field in response.json()["fields"]


def test_a_second_entry_for_the_same_intent_and_language_is_a_400_not_a_500(tenants, faq):
    client = client_for(tenants.owner)
    duplicate = post(client, "/api/v1/faq/", {**FAQ, "language": "EN"})
    other = post(client, "/api/v1/faq/", {**FAQ, "intent": "delivery_time"})
    moved = patch(client, f"/api/v1/faq/{other.json()['id']}/", {"intent": "refund_time"})

    assert duplicate.status_code == 400 and set(duplicate.json()["fields"]) == {"intent", "language"}
    assert moved.status_code == 400 and "intent" in moved.json()["fields"]
    # Another workspace may use the same intent.
    assert token_client(tenants.token_b).post("/api/v1/faq/", FAQ, content_type="application/json").status_code == 201


def test_an_outsider_cannot_read_or_change_another_workspaces_faq_entry(tenants, faq):
    url = f"/api/v1/faq/{faq.id}/"
    for outsider in (client_for(tenants.outsider), token_client(tenants.token_b)):
        assert outsider.get(url).status_code == 404
        assert patch(outsider, url, {"answer": "Mine now"}).status_code == 404
        assert outsider.delete(url).status_code == 404
        assert outsider.get("/api/v1/faq/").json()["results"] == []
    assert FaqEntry.objects.get(pk=faq.pk).answer == FAQ["answer"]


def test_match_answers_exactly_as_the_bot_decides(tenants, faq):
    FaqEntry.objects.create(
        workspace=tenants.a,
        intent="delivery_time",
        language="en",
        examples=["when will my order arrive", "how long is delivery", "delivery time to cairo", "is it shipped"],
        answer="2 to 3 days.",
    )
    agent = client_for(tenants.teammate)  # reading the matcher is not a change: any member may

    for text in ("how long until my refund arrives", "when does my order arrive", "what a lovely day", "refund"):
        response = post(agent, "/api/v1/faq/match/", {"text": text, "language": "en"})
        assert response.status_code == 200, response.content
        decision = faq_match(workspace_id=tenants.a.id, text=text, language="en")
        assert response.json() == {
            "faq": decision.faq_id,
            "intent": decision.intent,
            "confidence": decision.confidence,
        }

    answered = post(agent, "/api/v1/faq/match/", {"text": "how long does a refund take"}).json()
    assert answered["faq"] == faq.id and answered["intent"] == "refund_time" and 0 < answered["confidence"] <= 1


def test_match_keeps_to_the_workspaces_threshold_and_entries(tenants, faq):
    text = {"text": "how long does a refund take"}
    BotSettings.objects.create(workspace=tenants.a, faq_threshold=1.0)

    unsure = post(token_client(tenants.token_a), "/api/v1/faq/match/", text).json()
    elsewhere = post(token_client(tenants.token_b), "/api/v1/faq/match/", text).json()

    assert unsure["faq"] is None and unsure["intent"] is None and unsure["confidence"] < 1.0
    assert elsewhere == {"faq": None, "intent": None, "confidence": elsewhere["confidence"]}


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "text"), ({"text": ""}, "text"), ({"text": "x" * 2001}, "text"), ({"text": "hi", "lang": "en"}, "lang")],
)
def test_a_bad_match_request_is_a_400_naming_the_field(tenants, body, field):
    response = post(token_client(tenants.token_a), "/api/v1/faq/match/", body)

    assert response.status_code == 400 and field in response.json()["fields"]


# Workflows -------------------------------------------------------------------------------------


def test_members_list_and_read_workflows_with_their_published_definition(tenants, survey):
    client = client_for(tenants.teammate)

    rows = client.get("/api/v1/workflows/").json()["results"]
    detail = client.get(f"/api/v1/workflows/{survey.id}/").json()

    assert [(row["name"], row["trigger"], row["version"]) for row in rows] == [("Order survey", "shortcut", 1)]
    assert "definition" not in rows[0]
    assert detail["definition"]["steps"][0]["key"] == "ask"
    assert detail["trigger_settings"] == {"shortcut": "survey"}
    assert client.get("/api/v1/workflows/?trigger=api").json()["results"] == []


def test_a_supervisor_switches_a_workflow_off_and_nothing_else_changes_through_patch(tenants, survey):
    url = f"/api/v1/workflows/{survey.id}/"

    off = patch(client_for(tenants.supervisor), url, {"enabled": False})
    renamed = patch(client_for(tenants.supervisor), url, {"name": "Other"})
    by_agent = patch(client_for(tenants.teammate), url, {"enabled": True})
    replaced = client_for(tenants.supervisor).put(url, {"enabled": True}, content_type="application/json")

    assert off.status_code == 200 and off.json()["enabled"] is False
    assert renamed.status_code == 400 and "name" in renamed.json()["fields"]
    assert by_agent.status_code == 403
    assert replaced.status_code == 405
    survey.refresh_from_db()
    assert (survey.enabled, survey.name) == (False, "Order survey")


def test_export_then_import_moves_a_workflow_to_another_workspace(tenants, survey):
    exported = client_for(tenants.owner).get(f"/api/v1/workflows/{survey.id}/export/")
    assert exported.status_code == 200
    definition = exported.json()
    assert definition["name"] == "Order survey" and definition["steps"][0]["kind"] == "ask"

    created = post(token_client(tenants.token_b), "/api/v1/workflows/import/", definition)
    again = post(token_client(tenants.token_b), "/api/v1/workflows/import/", {**definition, "description": "v2"})

    assert created.status_code == 201, created.content
    assert created.json()["definition"]["steps"] == definition["steps"]
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"] and again.json()["version"] == 2
    assert Workflow.objects.get(workspace=tenants.b).description == "v2"
    assert Workflow.objects.get(workspace=tenants.a).description == ""


def test_a_broken_definition_is_a_400_naming_the_mistakes(tenants):
    client = client_for(tenants.supervisor)
    broken = {**SURVEY, "trigger": "sometimes", "steps": [{"key": "a b", "kind": "ask"}]}

    response = post(client, "/api/v1/workflows/import/", broken)
    not_an_object = client.post("/api/v1/workflows/import/", "[1, 2]", content_type="application/json")
    by_agent = post(client_for(tenants.teammate), "/api/v1/workflows/import/", SURVEY)

    assert response.status_code == 400 and response.json()["code"] == "invalid_workflow"
    assert any("trigger" in line for line in response.json()["fields"]["definition"])
    assert not_an_object.status_code == 400
    assert by_agent.status_code == 403
    assert not Workflow.objects.exists()


def test_an_outsider_cannot_see_switch_export_or_start_another_workspaces_workflow(tenants, survey, conversation):
    url = f"/api/v1/workflows/{survey.id}/"
    for outsider in (client_for(tenants.outsider), token_client(tenants.token_b)):
        assert outsider.get(url).status_code == 404
        assert outsider.get(url + "export/").status_code == 404
        assert patch(outsider, url, {"enabled": False}).status_code == 404
        assert post(outsider, url + "start/", {"conversation": conversation.id}).status_code == 404
        assert outsider.get("/api/v1/workflows/").json()["results"] == []
    assert not Run.objects.exists()


# Starting a workflow -------------------------------------------------------------------------


def test_a_supervisor_starts_a_workflow_on_a_conversation_and_the_bot_asks(tenants, survey, conversation):
    response = post(
        client_for(tenants.supervisor),
        f"/api/v1/workflows/{survey.id}/start/",
        {"conversation": conversation.id, "variables": {"source": "crm"}},
    )

    assert response.status_code == 201, response.content
    run = response.json()
    assert (run["workflow"], run["conversation"], run["state"], run["step"]) == (
        survey.id,
        conversation.id,
        "waiting",
        "ask",
    )
    assert run["variables"]["source"] == "crm" and run["started_at"]
    assert conversation.messages.filter(sender_kind="bot", text="Your order number?").exists()


def test_a_conversation_follows_one_workflow_at_a_time_unless_replaced(tenants, survey, conversation):
    client = client_for(tenants.supervisor)
    url = f"/api/v1/workflows/{survey.id}/start/"
    first = post(client, url, {"conversation": conversation.id}).json()

    busy = post(client, url, {"conversation": conversation.id})
    replaced = post(client, url, {"conversation": conversation.id, "replace": True})

    assert busy.status_code == 409 and busy.json()["code"] == "run_active"
    assert replaced.status_code == 201
    assert Run.objects.get(pk=first["id"]).state == "cancelled"
    assert Run.objects.get(pk=replaced.json()["id"]).state == "waiting"


def test_an_api_token_starts_a_workflow_for_a_contact_on_their_last_conversation(tenants, conversation):
    workflow = workflow_import(
        workspace=tenants.a, definition={**SURVEY, "name": "From the CRM", "trigger": "api", "trigger_settings": {}}
    )

    response = post(
        token_client(tenants.token_a), f"/api/v1/workflows/{workflow.id}/start/", {"contact": conversation.contact_id}
    )

    assert response.status_code == 201, response.content
    assert response.json()["conversation"] == conversation.id


def test_an_agent_starts_a_shortcut_only_on_a_conversation_they_may_act_on(tenants, survey, conversation):
    agent = client_for(tenants.teammate)
    api_only = workflow_import(
        workspace=tenants.a, definition={**SURVEY, "name": "Back office", "trigger": "api", "trigger_settings": {}}
    )
    colleagues = make_conversation(
        tenants.a, name="Omar", wa_id="201001110002", assignee=make_member(tenants.a, Role.AGENT)
    )

    not_a_shortcut = post(agent, f"/api/v1/workflows/{api_only.id}/start/", {"conversation": conversation.id})
    not_theirs = post(agent, f"/api/v1/workflows/{survey.id}/start/", {"conversation": colleagues.id})
    started = post(agent, f"/api/v1/workflows/{survey.id}/start/", {"conversation": conversation.id})

    assert not_a_shortcut.status_code == 403
    assert not_theirs.status_code == 403 and not Run.objects.filter(conversation=colleagues).exists()
    assert started.status_code == 201, started.content


def test_a_switched_off_workflow_does_not_start(tenants, survey, conversation):
    Workflow.objects.filter(pk=survey.pk).update(enabled=False)

    response = post(
        client_for(tenants.owner), f"/api/v1/workflows/{survey.id}/start/", {"conversation": conversation.id}
    )

    assert response.status_code == 409 and response.json()["code"] == "workflow_disabled"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "conversation"),
        ({"conversation": "CONVERSATION", "contact": "CONTACT"}, "conversation"),
        ({"conversation": "CONVERSATION", "channel": "CHANNEL"}, "channel"),
        ({"conversation": "CONVERSATION", "variables": {"not a name": 1}}, "variables"),
        ({"conversation": "CONVERSATION", "variables": [1]}, "variables"),
        ({"conversation": "CONVERSATION", "when": "now"}, "when"),
        ({"conversation": 10**12}, "conversation"),
    ],
)
def test_a_bad_start_request_is_a_400_naming_the_field(tenants, survey, conversation, body, field):
    names = {"CONVERSATION": conversation.id, "CONTACT": conversation.contact_id, "CHANNEL": conversation.channel_id}
    body = {key: names.get(value, value) if isinstance(value, str) else value for key, value in body.items()}

    response = post(client_for(tenants.owner), f"/api/v1/workflows/{survey.id}/start/", body)

    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]


def test_nobody_starts_a_workflow_on_another_workspaces_conversation(tenants, conversation):
    theirs = workflow_import(workspace=tenants.b, definition=SURVEY)

    by_token = post(
        token_client(tenants.token_b), f"/api/v1/workflows/{theirs.id}/start/", {"conversation": conversation.id}
    )
    by_contact = post(
        client_for(tenants.outsider), f"/api/v1/workflows/{theirs.id}/start/", {"contact": conversation.contact_id}
    )

    assert by_token.status_code == 400 and "conversation" in by_token.json()["fields"]
    assert by_contact.status_code == 400 and "contact" in by_contact.json()["fields"]
    assert not Run.objects.exists()


# Runs -------------------------------------------------------------------------------------------


def test_runs_are_listed_by_conversation_and_one_run_shows_its_log(tenants, survey, conversation):
    other = make_conversation(tenants.a, name="Omar", wa_id="201001110002")
    client = client_for(tenants.supervisor)
    for target in (conversation, other):
        post(client, f"/api/v1/workflows/{survey.id}/start/", {"conversation": target.id})

    rows = client.get(f"/api/v1/workflow-runs/?conversation={conversation.id}").json()["results"]
    detail = client.get(f"/api/v1/workflow-runs/{rows[0]['id']}/").json()

    assert [(row["conversation"], row["workflow_name"], row["state"]) for row in rows] == [
        (conversation.id, "Order survey", "waiting")
    ]
    assert "log" not in rows[0]
    assert [(line["step"], line["kind"], line["outcome"]) for line in detail["log"]] == [("ask", "ask", "asked")]
    assert len(client.get("/api/v1/workflow-runs/?active=true").json()["results"]) == 2
    assert client.get("/api/v1/workflow-runs/?state=done").json()["results"] == []


def test_a_supervisor_stops_a_bot_and_an_agent_only_on_what_they_may_act_on(tenants, survey, conversation):
    colleagues = make_conversation(tenants.a, name="Omar", wa_id="201001110002")
    supervisor = client_for(tenants.supervisor)
    mine = post(supervisor, f"/api/v1/workflows/{survey.id}/start/", {"conversation": conversation.id}).json()
    theirs = post(supervisor, f"/api/v1/workflows/{survey.id}/start/", {"conversation": colleagues.id}).json()
    Conversation.objects.filter(pk=colleagues.pk).update(assignee=make_member(tenants.a, Role.AGENT))
    agent = client_for(tenants.teammate)

    refused = post(agent, f"/api/v1/workflow-runs/{theirs['id']}/cancel/")
    stopped = post(agent, f"/api/v1/workflow-runs/{mine['id']}/cancel/")
    by_supervisor = post(supervisor, f"/api/v1/workflow-runs/{theirs['id']}/cancel/")

    assert refused.status_code == 403
    assert stopped.status_code == 200 and stopped.json()["state"] == "cancelled"
    assert by_supervisor.status_code == 200 and by_supervisor.json()["state"] == "cancelled"


def test_an_outsider_cannot_see_or_stop_another_workspaces_run(tenants, survey, conversation):
    run = post(client_for(tenants.owner), f"/api/v1/workflows/{survey.id}/start/", {"conversation": conversation.id})
    url = f"/api/v1/workflow-runs/{run.json()['id']}/"

    for outsider in (client_for(tenants.outsider), token_client(tenants.token_b)):
        assert outsider.get(url).status_code == 404
        assert post(outsider, url + "cancel/").status_code == 404
        assert outsider.get(f"/api/v1/workflow-runs/?conversation={conversation.id}").json()["results"] == []
    assert Run.objects.get().state == "waiting"


# The escalation callback ----------------------------------------------------------------------


@pytest.fixture
def escalated(tenants, conversation):
    workflow = workflow_import(workspace=tenants.a, definition=ESCALATION)
    response = post(
        token_client(tenants.token_a), f"/api/v1/workflows/{workflow.id}/start/", {"conversation": conversation.id}
    )
    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["id"])
    assert run.state == "waiting" and run.callback_token
    return run


def test_the_seller_answers_an_escalation_without_signing_in_once(tenants, escalated):
    url = f"/api/v1/workflow-callbacks/{escalated.callback_token}/"
    assert url in mail.outbox[0].body  # what the seller was sent
    anonymous = Client(enforce_csrf_checks=True)

    answered = post(anonymous, url, {"text": "Ships tomorrow", "eta": "2025-01-02"})
    again = post(anonymous, url, {"text": "Ships tomorrow"})

    assert answered.status_code == 200 and answered.json() == {"ok": True}
    escalated.refresh_from_db()
    assert escalated.state == "done" and escalated.variables["reply"]["eta"] == "2025-01-02"
    assert again.status_code == 404 and again.json()["code"] == "not_found"


@pytest.mark.parametrize("token", ["nobody-issued-this-token-0000000000", "short", "x" * 100])
def test_an_unknown_callback_token_is_a_json_404(db, token):
    response = post(Client(), f"/api/v1/workflow-callbacks/{token}/", {"text": "hello"})

    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_a_callback_must_be_a_json_object_of_at_most_64_kb(escalated):
    url = f"/api/v1/workflow-callbacks/{escalated.callback_token}/"

    a_list = Client().post(url, "[1, 2]", content_type="application/json")
    too_big = post(Client(), url, {"text": "x" * 70_000})

    assert a_list.status_code == 400 and "body" in a_list.json()["fields"]
    assert too_big.status_code == 413 and too_big.json()["code"] == "too_large"
    escalated.refresh_from_db()
    assert escalated.state == "waiting"


def test_callbacks_are_throttled_per_address(db, monkeypatch):
    monkeypatch.setattr(CallbackRateThrottle, "rate", "2/min")
    url = "/api/v1/workflow-callbacks/nobody-issued-this-token-0000000000/"

    codes = [post(Client(), url, {"text": "guess"}).status_code for _ in range(3)]

    assert codes == [404, 404, 429]


# What the inbox learns ---------------------------------------------------------------------------


def ids(response):
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_the_queue_view_lists_unassigned_open_conversations_waiting_in_a_team_queue(tenants):
    now = timezone.now()
    first = make_conversation(
        tenants.a, wa_id="201001110001", team=tenants.team_a, queued_at=now - timedelta(minutes=9)
    )
    second = make_conversation(
        tenants.a, wa_id="201001110002", team=tenants.team_a, queued_at=now - timedelta(minutes=2)
    )
    other_team = make_conversation(tenants.a, wa_id="201001110003", queued_at=now - timedelta(minutes=5))
    make_conversation(tenants.a, wa_id="201001110004", team=tenants.team_a)  # not queued
    make_conversation(tenants.a, wa_id="201001110005", queued_at=now, assignee=membership(tenants.teammate))
    make_conversation(tenants.a, wa_id="201001110006", queued_at=now, status="closed")
    client = client_for(tenants.teammate)

    everything = client.get("/api/v1/conversations/?view=queue")
    of_the_team = client.get(f"/api/v1/conversations/?view=queue&team={tenants.team_a.id}")
    row = client.get(f"/api/v1/conversations/{first.id}/").json()

    assert set(ids(everything)) == {first.id, second.id, other_team.id}
    assert set(ids(of_the_team)) == {first.id, second.id}
    assert datetime.fromisoformat(row["queued_at"]) == first.queued_at and row["team_id"] == tenants.team_a.id


def test_a_conversation_says_which_bot_handles_it_and_the_list_costs_no_more_queries(tenants, survey, conversation):
    client = client_for(tenants.teammate)
    with CaptureQueriesContext(connection) as before:
        assert client.get("/api/v1/conversations/?view=all").json()["results"][0]["bot"] is None
    for n in range(5):
        other = make_conversation(tenants.a, name=f"Extra {n}", wa_id=f"2010099900{n:02}")
        post(client_for(tenants.owner), f"/api/v1/workflows/{survey.id}/start/", {"conversation": other.id})
    post(client_for(tenants.owner), f"/api/v1/workflows/{survey.id}/start/", {"conversation": conversation.id})

    with CaptureQueriesContext(connection) as after:
        rows = client.get("/api/v1/conversations/?view=all").json()["results"]
    one = client.get(f"/api/v1/conversations/{conversation.id}/").json()
    of_the_contact = client.get(f"/api/v1/contacts/{conversation.contact_id}/conversations/").json()

    assert len(rows) == 6 and {row["bot"] for row in rows} == {"Order survey"}
    assert len(after.captured_queries) == len(before.captured_queries)
    assert one["bot"] == "Order survey" and of_the_contact[0]["bot"] == "Order survey"
    Run.objects.filter(conversation=conversation).update(state="done")
    assert client.get(f"/api/v1/conversations/{conversation.id}/").json()["bot"] is None


def test_the_inbox_offers_agents_the_enabled_shortcut_workflows(tenants, survey):
    workflow_import(
        workspace=tenants.a, definition={**SURVEY, "name": "Back office", "trigger": "api", "trigger_settings": {}}
    )
    workflow_import(workspace=tenants.a, definition={**SURVEY, "name": "Old survey", "enabled": False})
    workflow_import(workspace=tenants.b, definition={**SURVEY, "name": "Their survey"})
    context = workspace_context_for_user(tenants.teammate, None)

    offered = inbox_bootstrap(context=context, user=tenants.teammate)["workflows"]

    assert offered == [{"id": survey.id, "name": "Order survey", "shortcut": "survey"}]
