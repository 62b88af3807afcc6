"""A draft template submitted to Meta (the channel simulator's Business Management API, over HTTP)
in Meta's exact shape; Meta's refusals as clear errors; its verdict arriving as the account's
status webhook, parsed into a neutral event and applied to the template (and to the broadcasts
using it); quality updates; deletion at Meta; the same from the admin and the REST API."""

import json

import pytest

from apps.broadcasts.models import Broadcast
from apps.connectors.base import ParseError, TemplateStatusUpdate
from apps.connectors.models import MessageTemplate
from apps.connectors.providers.whatsapp import template_definition
from apps.connectors.registry import connector_for
from apps.connectors.services import templates_sync
from apps.connectors.templates import (
    ProviderUnavailable,
    template_delete,
    template_draft_create,
    template_status_apply,
    template_submit,
)
from apps.core.exceptions import Conflict, DomainError
from tests.conftest import client_for, token_client
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.simulator.harness import eventually

pytestmark = pytest.mark.django_db

Status = MessageTemplate.Status


@pytest.fixture
def channel(tenants, simulator):
    channel = make_whatsapp_channel(tenants.a, base_url=simulator.url)
    simulator.register(channel)
    # Nothing listens at the channel's webhook address here: one attempt, kept in the simulator's log.
    simulator.post("/_simulator/settings", {"webhook_attempts": 1, "template_review": "manual"})
    return channel


def draft(channel, **fields) -> MessageTemplate:
    values = {
        "name": "autumn_offer",
        "language": "en",
        "category": "marketing",
        "header_format": "text",
        "header": "Autumn at {{1}}",
        "body": "Hi {{1}}, pumpkins are in: {{2}} this week.",
        "footer": "Reply STOP to opt out",
        "buttons": [
            {"type": "url", "text": "See the offer", "url": "https://shop.example/offer/{{1}}"},
            {"type": "phone_number", "text": "Call us", "phone_number": "+201001230000"},
            {"type": "quick_reply", "text": "Stop promotions"},
        ],
        "example": ["Nile Basket", "Amira", "2 for 1", "autumn"],
        **fields,
    }
    return template_draft_create(channel=channel, fields=values)


def review(simulator, event: str, name: str = "autumn_offer", **details) -> dict:
    body = {"waba_id": "WABA1", "name": name, "language": "en", "event": event, **details}
    return simulator.post("/_simulator/templates/review", body)


def last_webhook(simulator) -> bytes:
    """The account webhook the simulator last sent, as bytes for the connector's parser."""
    return json.dumps(simulator.get("/_simulator/webhooks")[-1]["body"]).encode()


def delivered(channel, simulator) -> list:
    """What the drainer would do with it: parse (checked neutral events), apply the template ones."""
    events = connector_for(channel).parse(channel, last_webhook(simulator))
    return [template_status_apply(channel=channel, update=e) for e in events if isinstance(e, TemplateStatusUpdate)]


def created_at_meta(simulator) -> list[dict]:
    return [
        r["body"]
        for r in simulator.get("/_simulator/requests")
        if r["method"] == "POST" and r["path"].endswith("/message_templates")
    ]


# Meta's shape ---------------------------------------------------------------------------------------


def test_a_draft_goes_to_meta_with_every_part_and_an_example_of_every_variable(channel):
    definition = template_definition(draft(channel))

    assert definition == {
        "name": "autumn_offer",
        "language": "en",
        "category": "MARKETING",
        "parameter_format": "POSITIONAL",
        "components": [
            {
                "type": "HEADER",
                "format": "TEXT",
                "text": "Autumn at {{1}}",
                "example": {"header_text": ["Nile Basket"]},
            },
            {
                "type": "BODY",
                "text": "Hi {{1}}, pumpkins are in: {{2}} this week.",
                "example": {"body_text": [["Amira", "2 for 1"]]},
            },
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {
                "type": "BUTTONS",
                "buttons": [
                    {
                        "type": "URL",
                        "text": "See the offer",
                        "url": "https://shop.example/offer/{{1}}",
                        "example": ["https://shop.example/offer/autumn"],
                    },
                    {"type": "PHONE_NUMBER", "text": "Call us", "phone_number": "+201001230000"},
                    {"type": "QUICK_REPLY", "text": "Stop promotions"},
                ],
            },
        ],
    }


def test_a_named_draft_gives_its_examples_by_name(channel):
    named = draft(
        channel,
        name="spring_again",
        parameter_format="named",
        header_format="",
        header="",
        body="Hi {{first_name}}, take {{discount}} off this week.",
        buttons=[{"type": "copy_code", "text": "Copy code"}],
        example=["Amira", "20%", "SPRING20"],
    )

    components = template_definition(named)["components"]

    assert template_definition(named)["parameter_format"] == "NAMED"
    assert components[0]["example"] == {
        "body_text_named_params": [
            {"param_name": "first_name", "example": "Amira"},
            {"param_name": "discount", "example": "20%"},
        ]
    }
    assert components[-1] == {"type": "BUTTONS", "buttons": [{"type": "COPY_CODE", "example": "SPRING20"}]}


# Submitting ------------------------------------------------------------------------------------------


def test_a_submitted_draft_is_pending_with_metas_id_until_the_verdict(channel, simulator):
    template = template_submit(template=draft(channel))

    assert template.status == Status.PENDING and template.provider_id
    assert template.synced_at is not None and template.rejected_reason == ""
    (sent,) = created_at_meta(simulator)
    assert sent == template_definition(template)
    listed = simulator.get("/_simulator/templates", waba_id="WABA1")
    assert {"name": "autumn_offer", "status": "PENDING", "id": template.provider_id}.items() <= next(
        t for t in listed if t["name"] == "autumn_offer"
    ).items()


def test_the_verdict_arrives_by_webhook_and_is_applied_once(channel, simulator):
    template = template_submit(template=draft(channel))

    review(simulator, "APPROVED")
    first = delivered(channel, simulator)
    again = delivered(channel, simulator)  # Meta retries a webhook it thinks was lost

    template.refresh_from_db()
    assert first == [[template.pk]] and again == [[]]
    assert template.status == Status.APPROVED and template.rejected_reason == ""


def test_the_inbound_pipeline_applies_the_verdict_it_stores(channel, simulator):
    """The webhook as Parley takes it: stored by the webhook view, applied by the drainer."""
    from apps.conversations.models import InboundEvent
    from apps.conversations.services import inbound_event_store, inbound_events_drain

    template = template_submit(template=draft(channel))
    review(simulator, "APPROVED")
    inbound_event_store(channel=channel, body=last_webhook(simulator), headers={})

    inbound_events_drain(slot=0, seconds=60)

    template.refresh_from_db()
    assert template.status == Status.APPROVED
    assert InboundEvent.objects.get(channel=channel).state == InboundEvent.State.PROCESSED


def test_a_rejection_keeps_metas_reason_and_advice(channel, simulator):
    template = template_submit(template=draft(channel))

    review(
        simulator,
        "REJECTED",
        reason="INVALID_FORMAT",
        rejection_info={"reason": "Too many variables.", "recommendation": "Use fewer variables."},
    )
    delivered(channel, simulator)

    template.refresh_from_db()
    assert template.status == Status.REJECTED
    assert template.rejected_reason == "INVALID_FORMAT: Too many variables. Use fewer variables."


def test_the_simulators_automatic_review_takes_a_draft_from_pending_to_approved(channel, simulator):
    simulator.post("/_simulator/settings", {"template_review": "approve", "template_review_delay": 0.05})
    template = template_submit(template=draft(channel))

    hooks = eventually(lambda: [w for w in simulator.get("/_simulator/webhooks") if w["what"] == "template APPROVED"])
    events = connector_for(channel).parse(channel, json.dumps(hooks[0]["body"]).encode())
    template_status_apply(channel=channel, update=events[0])

    template.refresh_from_db()
    assert template.status == Status.APPROVED


def test_a_name_meta_already_has_is_a_name_error(channel, simulator):
    taken = draft(channel, name="we_miss_you", header_format="", header="", buttons=[], example=["A", "B"])

    with pytest.raises(DomainError) as refused:
        template_submit(template=taken)

    assert refused.value.code == "template_name_taken"
    assert "Meta already has we_miss_you in en" in refused.value.fields["name"][0]
    taken.refresh_from_db()
    assert taken.status == Status.DRAFT and taken.provider_id == ""


def test_metas_words_come_back_when_it_refuses_the_content(channel):
    starts_with_a_variable = draft(channel, body="{{1}}, pumpkins are in: {{2}} this week.")

    with pytest.raises(DomainError) as refused:
        template_submit(template=starts_with_a_variable)

    assert refused.value.code == "template_refused"
    assert "Variable parameters can't be at the start or end of the body" in refused.value.detail


def test_a_refused_token_and_an_unreachable_meta_are_told_apart(tenants, channel):
    channel.credentials = {**channel.credentials, "access_token": "wrong"}
    channel.save(update_fields=["credentials"])
    unreachable = make_whatsapp_channel(tenants.a, base_url="http://127.0.0.1:9")
    unreachable.credentials = {**unreachable.credentials, "phone_number_id": "1000002"}
    unreachable.save(update_fields=["credentials"])

    with pytest.raises(Conflict) as credentials:
        template_submit(template=draft(channel))
    with pytest.raises(ProviderUnavailable) as down:
        template_submit(template=draft(unreachable))

    assert credentials.value.code == "credentials" and "190" in credentials.value.detail
    assert down.value.status == 503 and "try again" in down.value.detail


def test_only_a_draft_is_submitted(channel):
    template = draft(channel)
    MessageTemplate.objects.filter(pk=template.pk).update(status=Status.APPROVED)
    template.refresh_from_db()

    with pytest.raises(Conflict) as refused:
        template_submit(template=template)

    assert refused.value.code == "template_not_draft" and "Copy it to a new draft" in refused.value.detail


# The provider's word, parsed and applied ---------------------------------------------------------------


def test_status_and_quality_webhooks_parse_into_neutral_events(channel, simulator):
    template = template_submit(template=draft(channel))

    review(simulator, "PAUSED", other_info={"title": "FIRST_PAUSE", "description": "Customers blocked it."})
    (paused,) = connector_for(channel).parse(channel, last_webhook(simulator))
    simulator.post("/_simulator/templates/quality", {"waba_id": "WABA1", "name": "autumn_offer", "quality": "RED"})
    (rated,) = connector_for(channel).parse(channel, last_webhook(simulator))

    assert (paused.account_id, paused.template_id, paused.name, paused.language) == (
        "WABA1",
        template.provider_id,
        "autumn_offer",
        "en",
    )
    assert (paused.status, paused.event) == ("paused", "PAUSED")
    assert paused.reason == "Paused by Meta (low quality) — FIRST_PAUSE: Customers blocked it.."
    assert (rated.status, rated.quality) == ("", "red")


def test_a_template_event_without_a_name_is_a_parse_error(channel):
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA1", "changes": [{"field": "message_template_status_update", "value": {"event": "X"}}]}],
    }

    with pytest.raises(ParseError):
        connector_for(channel).parse(channel, json.dumps(body).encode())


def test_a_paused_template_pauses_its_running_broadcasts_with_the_reason(channel, simulator):
    templates_sync(channel=channel)
    template = channel.templates.get(name="we_miss_you", language="en")
    other = channel.templates.get(name="order_update", language="en")
    running = Broadcast.objects.create(
        workspace=channel.workspace, name="Miss you", channel=channel, template=template, state="running"
    )
    unrelated = Broadcast.objects.create(
        workspace=channel.workspace, name="Orders", channel=channel, template=other, state="running"
    )

    review(simulator, "PAUSED", name="we_miss_you", other_info={"title": "FIRST_PAUSE", "description": "Low."})
    delivered(channel, simulator)

    running.refresh_from_db()
    unrelated.refresh_from_db()
    template.refresh_from_db()
    assert template.status == Status.PAUSED and "FIRST_PAUSE" in template.rejected_reason
    assert running.state == "paused"
    assert running.paused_reason.startswith("paused: the provider made the template we_miss_you paused (")
    assert unrelated.state == "running" and unrelated.paused_reason == ""


def test_flagged_reinstated_and_quality_show_on_the_template(channel, simulator):
    templates_sync(channel=channel)
    template = channel.templates.get(name="we_miss_you", language="en")

    review(simulator, "FLAGGED", name="we_miss_you")
    delivered(channel, simulator)
    template.refresh_from_db()
    assert (template.status, template.quality) == (Status.APPROVED, "flagged")

    review(simulator, "REINSTATED", name="we_miss_you")
    delivered(channel, simulator)
    template.refresh_from_db()
    assert (template.status, template.quality) == (Status.APPROVED, "")

    simulator.post("/_simulator/templates/quality", {"waba_id": "WABA1", "name": "we_miss_you", "quality": "GREEN"})
    delivered(channel, simulator)
    template.refresh_from_db()
    assert template.quality == "green"


def test_a_disabled_template_reads_as_paused_with_what_that_means(channel, simulator):
    templates_sync(channel=channel)

    review(simulator, "DISABLED", name="we_miss_you", disable_info={"disable_date": 1751234563})
    delivered(channel, simulator)

    template = channel.templates.get(name="we_miss_you", language="en")
    assert template.status == Status.PAUSED and "Disabled by Meta" in template.rejected_reason


def test_an_older_event_changes_nothing_and_drafts_are_never_matched_by_name(channel, simulator):
    templates_sync(channel=channel)
    template = channel.templates.get(name="we_miss_you", language="en")
    unsent = draft(channel, name="spring_points", header_format="", header="", buttons=[], example=["A", "B"])
    then = template.synced_at.replace(year=template.synced_at.year - 1)

    stale = TemplateStatusUpdate(
        account_id="WABA1",
        template_id=template.provider_id,
        name="we_miss_you",
        language="en",
        timestamp=then,
        status="paused",
        event="PAUSED",
    )
    by_name = TemplateStatusUpdate(
        account_id="WABA1",
        template_id="999",
        name="spring_points",
        language="en",
        timestamp=template.synced_at,
        status="approved",
        event="APPROVED",
    )

    assert template_status_apply(channel=channel, update=stale) == []
    assert template_status_apply(channel=channel, update=by_name) == []
    template.refresh_from_db()
    unsent.refresh_from_db()
    assert template.status == Status.APPROVED and unsent.status == Status.DRAFT


def test_another_workspaces_template_of_the_same_id_is_left_alone(tenants, channel, simulator):
    templates_sync(channel=channel)
    theirs = make_whatsapp_channel(tenants.b)
    mine = channel.templates.get(name="we_miss_you", language="en")
    same = MessageTemplate.objects.create(
        workspace=tenants.b, channel=theirs, name="we_miss_you", body="Hi {{1}}", provider_id=mine.provider_id
    )

    review(simulator, "PAUSED", name="we_miss_you")
    delivered(channel, simulator)

    same.refresh_from_db()
    mine.refresh_from_db()
    assert mine.status == Status.PAUSED and same.status == Status.APPROVED


# Deleting ----------------------------------------------------------------------------------------------


def test_deleting_a_synced_template_deletes_this_language_at_meta(channel, simulator):
    templates_sync(channel=channel)
    english = channel.templates.get(name="order_update", language="en")

    assert template_delete(template=english) is True

    at_meta = {(t["name"], t["language"]) for t in simulator.get("/_simulator/templates", waba_id="WABA1")}
    assert ("order_update", "en") not in at_meta and ("order_update", "ar") in at_meta
    assert not channel.templates.filter(name="order_update", language="en").exists()
    (call,) = [r for r in simulator.get("/_simulator/requests") if r["method"] == "DELETE"]
    assert call["query"] == {"name": "order_update", "hsm_id": english.provider_id}


def test_a_template_a_broadcast_may_still_send_is_not_deleted(channel, simulator):
    templates_sync(channel=channel)
    template = channel.templates.get(name="we_miss_you", language="en")
    Broadcast.objects.create(workspace=channel.workspace, name="Miss you", channel=channel, template=template)

    with pytest.raises(Conflict) as refused:
        template_delete(template=template)

    assert refused.value.code == "template_in_use" and "Miss you" in refused.value.detail
    assert not [r for r in simulator.get("/_simulator/requests") if r["method"] == "DELETE"]


def test_a_template_finished_broadcasts_used_is_deleted_at_meta_and_kept_paused(channel, simulator):
    templates_sync(channel=channel)
    template = channel.templates.get(name="we_miss_you", language="en")
    Broadcast.objects.create(
        workspace=channel.workspace, name="Miss you", channel=channel, template=template, state="completed"
    )

    assert template_delete(template=template) is False

    template.refresh_from_db()
    assert template.status == Status.PAUSED and template.provider_id == ""
    assert "kept for the broadcasts" in template.rejected_reason


# The REST API --------------------------------------------------------------------------------------------


DRAFT_BODY = {
    "name": "autumn_offer",
    "language": "en",
    "category": "marketing",
    "body": "Hi {{1}}, pumpkins are in this week.",
    "example": ["Amira"],
}


def test_the_order_system_writes_submits_and_copies_a_draft_over_the_api(tenants, channel, simulator):
    api = token_client(tenants.token_a)

    created = api.post("/api/v1/templates/", {**DRAFT_BODY, "channel": channel.pk}, content_type="application/json")
    pk = created.json()["id"]
    changed = api.patch(f"/api/v1/templates/{pk}/", {"footer": "Reply STOP"}, content_type="application/json")
    submitted = api.post(f"/api/v1/templates/{pk}/submit/", content_type="application/json")
    again = api.patch(f"/api/v1/templates/{pk}/", {"footer": "Bye"}, content_type="application/json")
    copied = api.post(f"/api/v1/templates/{pk}/copy/", content_type="application/json")

    assert created.status_code == 201 and created.json()["status"] == "draft"
    assert changed.status_code == 200 and changed.json()["footer"] == "Reply STOP"
    assert submitted.status_code == 200, submitted.json()
    assert submitted.json()["status"] == "pending" and submitted.json()["provider_id"]
    assert again.status_code == 409 and again.json()["code"] == "template_not_draft"
    assert copied.status_code == 201 and copied.json()["name"] == "autumn_offer_v2"
    assert copied.json()["status"] == "draft"


def test_bad_drafts_and_metas_refusals_are_json_400s_naming_the_problem(tenants, channel):
    api = token_client(tenants.token_a)

    bad = api.post(
        "/api/v1/templates/",
        {**DRAFT_BODY, "channel": channel.pk, "name": "Autumn Offer", "example": []},
        content_type="application/json",
    )
    taken = api.post(
        "/api/v1/templates/",
        {**DRAFT_BODY, "channel": channel.pk, "name": "we_miss_you"},
        content_type="application/json",
    )
    refused = api.post(f"/api/v1/templates/{taken.json()['id']}/submit/", content_type="application/json")

    assert bad.status_code == 400 and bad.json()["code"] == "invalid_template"
    assert set(bad.json()["fields"]) == {"name"}  # the examples are checked once the rest is right
    assert refused.status_code == 400
    assert refused.json()["code"] == "template_name_taken" and "name" in refused.json()["fields"]


def test_another_workspace_and_an_agent_cannot_touch_the_templates(tenants, channel):
    template = draft(channel)

    theirs = token_client(tenants.token_b)
    agent = client_for(tenants.teammate)

    assert theirs.post(f"/api/v1/templates/{template.pk}/submit/", content_type="application/json").status_code == 404
    assert theirs.delete(f"/api/v1/templates/{template.pk}/").status_code == 404
    assert (
        theirs.post(
            "/api/v1/templates/", {**DRAFT_BODY, "channel": channel.pk}, content_type="application/json"
        ).status_code
        == 400
    )  # A's channel is not one of B's
    assert agent.post(f"/api/v1/templates/{template.pk}/submit/", content_type="application/json").status_code == 403
    assert agent.get(f"/api/v1/templates/{template.pk}/").status_code == 200
    template.refresh_from_db()
    assert template.status == Status.DRAFT


def test_deleting_a_draft_over_the_api_never_calls_meta(tenants, channel, simulator):
    template = draft(channel)

    answer = token_client(tenants.token_a).delete(f"/api/v1/templates/{template.pk}/")

    assert answer.status_code == 204
    assert not MessageTemplate.objects.filter(pk=template.pk).exists()
    assert not [r for r in simulator.get("/_simulator/requests") if r["path"].endswith("/message_templates")]


# The admin -------------------------------------------------------------------------------------------------


def test_a_supervisor_saves_and_submits_a_draft_from_its_page(tenants, channel, simulator):
    template = draft(channel)
    client = client_for(tenants.supervisor)
    form = {
        "channel": channel.pk,
        "name": "autumn_offer",
        "language": "en",
        "category": "marketing",
        "parameter_format": "positional",
        "header_format": "",
        "body": "Hi {{1}}, pumpkins are in this week.",
        "footer": "",
        "buttons": "[]",
        "example": '["Amira"]',
    }

    page = client.get(f"/admin/connectors/messagetemplate/{template.pk}/change/").content.decode()
    response = client.post(
        f"/admin/connectors/messagetemplate/{template.pk}/change/", {**form, "_submit_review": "1"}, follow=True
    )

    assert 'name="_submit_review"' in page
    template.refresh_from_db()
    assert template.status == Status.PENDING and template.body == "Hi {{1}}, pumpkins are in this week."
    shown = [str(m) for m in response.context["messages"]]
    assert any("autumn_offer was submitted to Meta: pending review" in m for m in shown), shown
    assert created_at_meta(simulator)[0]["components"] == [
        {"type": "BODY", "text": "Hi {{1}}, pumpkins are in this week.", "example": {"body_text": [["Amira"]]}}
    ]


def test_metas_refusal_is_shown_and_the_draft_kept(tenants, channel):
    taken = draft(channel, name="we_miss_you", header_format="", header="", buttons=[], example=["A", "B"])

    response = client_for(tenants.supervisor).post(
        "/admin/connectors/messagetemplate/",
        {"action": "submit_for_review", "_selected_action": [taken.pk]},
        follow=True,
    )

    shown = [str(m) for m in response.context["messages"]]
    assert any("we_miss_you was not submitted" in m and "choose another name" in m for m in shown), shown
    taken.refresh_from_db()
    assert taken.status == Status.DRAFT


def test_deleting_in_the_admin_deletes_at_meta_or_says_why_not(tenants, channel, simulator):
    templates_sync(channel=channel)
    spare = channel.templates.get(name="back_in_stock")
    unknown = MessageTemplate.objects.create(
        workspace=channel.workspace, channel=channel, name="made_in_code", body="Hi {{1}}", example=["A"]
    )
    client = client_for(tenants.supervisor)

    client.post(f"/admin/connectors/messagetemplate/{spare.pk}/delete/", {"post": "yes"})
    kept = client.post(f"/admin/connectors/messagetemplate/{unknown.pk}/delete/", {"post": "yes"}, follow=True)

    assert not MessageTemplate.objects.filter(pk=spare.pk).exists()
    assert "back_in_stock" not in {t["name"] for t in simulator.get("/_simulator/templates", waba_id="WABA1")}
    assert MessageTemplate.objects.filter(pk=unknown.pk).exists()
    assert kept.redirect_chain[-1][0] == f"/admin/connectors/messagetemplate/{unknown.pk}/change/"
    shown = [str(m) for m in kept.context["messages"]]
    assert any("made_in_code (en) was kept" in m and "sync the channel's templates first" in m for m in shown), shown
    assert not any("made_in_code" in m and "deleted successfully" in m for m in shown), shown


def test_a_template_webhook_goes_through_the_inbound_pipeline_without_failing_it(channel, simulator):
    from apps.conversations.models import InboundEvent
    from apps.conversations.services import inbound_event_process, inbound_event_store

    template_submit(template=draft(channel))
    review(simulator, "APPROVED")

    stored = inbound_event_store(channel=channel, body=last_webhook(simulator), headers={})
    inbound_event_process(event_id=stored.pk)

    stored.refresh_from_db()
    assert (stored.state, stored.error) == (InboundEvent.State.PROCESSED, "")
