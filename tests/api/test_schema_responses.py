"""What the API answers matches what its OpenAPI schema documents, checked the way the fuzz run
checks it (schemathesis' response validation) but with real data in the workspace, so lists are
not empty and every field of a row is seen: the webhook delivery log, the contact actions
(conversations, timeline, duplicates, tags, merge) and the creating POST of a subscription, which
the schema described as something else; and an agent's status change, which answers the agent."""

from datetime import timedelta

import httpx
import pytest
import schemathesis
from django.test import Client
from django.utils import timezone

from apps.connectors import services as connector_services
from apps.connectors.models import WebhookDelivery
from apps.contacts import services as contact_services
from apps.contacts.services import contact_resolve
from apps.conversations.models import InboundEvent
from apps.conversations.services import inbound_event_process
from tests.api.test_order_system import Receiver
from tests.conftest import client_for, token_client
from tests.conversations import whatsapp as wa

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        raw = Client().get("/api/v1/schema/", {"format": "json"}).json()
    return schemathesis.openapi.from_dict(raw)


@pytest.fixture
def api(tenants):
    return token_client(tenants.token_a)


def documented(schema, method: str, template: str, response) -> None:
    """Fails, saying how, unless `response` is one the schema documents for this operation:
    its status code is listed and its JSON body fits that status's schema."""
    operation = schema[template][method]
    request = httpx.Request(method, f"http://testserver{template}")
    answer = httpx.Response(
        response.status_code,
        headers={"Content-Type": response["Content-Type"]},
        content=response.content,
        request=request,
    )
    answer.elapsed = timedelta(0)  # read whole already (schemathesis asks how long it took)
    operation.validate_response(answer)


@pytest.fixture
def contact(tenants):
    """A customer who wrote on WhatsApp (a text, a photo, a reaction), and a second contact with
    the same phone: a merge candidate."""
    channel = wa.make_whatsapp_channel(tenants.a)
    photo = {"type": "image", "image": {"id": "MEDIA1", "mime_type": "image/jpeg", "sha256": "x", "caption": "Box"}}
    reaction = {"type": "reaction", "reaction": {"message_id": "wamid.T1", "emoji": "👍"}}
    messages = [
        wa.text("Where is order 1042?", wamid="wamid.T1"),
        {"from": "201001234567", "id": "wamid.P1", "timestamp": "1764672000", **photo},
        {"from": "201001234567", "id": "wamid.R1", "timestamp": "1764672001", **reaction},
    ]
    assert wa.post_webhook(Client(), channel, wa.envelope(wa.messages_value(*messages))).status_code == 200
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)
    customer = contact_resolve(channel=channel, external_id="201001234567")
    contact_services.contact_save(workspace_id=tenants.a.pk, data={"name": "A. K.", "phone": "+201001234567"})
    return customer


def test_a_contacts_conversations_are_a_plain_list_of_conversations(schema, api, contact):
    response = api.get(f"/api/v1/contacts/{contact.pk}/conversations/")

    assert response.status_code == 200 and len(response.json()) == 1
    documented(schema, "GET", "/api/v1/contacts/{id}/conversations/", response)


def test_a_contacts_timeline_is_a_page_of_messages_and_its_next_page_too(schema, api, contact):
    first = api.get(f"/api/v1/contacts/{contact.pk}/timeline/", {"limit": 2})
    second = api.get(first.json()["next"])

    assert [len(first.json()["results"]), len(second.json()["results"])] == [2, 1]
    for response in (first, second):
        documented(schema, "GET", "/api/v1/contacts/{id}/timeline/", response)


def test_a_contacts_duplicates_are_a_plain_list_of_contacts(schema, api, contact):
    response = api.get(f"/api/v1/contacts/{contact.pk}/duplicates/")

    assert response.status_code == 200 and len(response.json()) == 1
    documented(schema, "GET", "/api/v1/contacts/{id}/duplicates/", response)


def test_the_contacts_lists_filters_do_not_reach_its_actions(schema, api, contact):
    """The actions documented no filters; one given anyway no longer turns the contact into a 404."""
    response = api.get(f"/api/v1/contacts/{contact.pk}/duplicates/", {"lifecycle_stage": "customer"})

    assert response.status_code == 200


def test_tagging_and_untagging_answer_the_contact(schema, api, contact):
    vip = api.post("/api/v1/tags/", {"name": "vip"}, "application/json").json()["id"]

    added = api.post(f"/api/v1/contacts/{contact.pk}/tags/", {"tags": [vip]}, "application/json")
    removed = api.delete(f"/api/v1/contacts/{contact.pk}/tags/", {"tags": [vip]}, "application/json")

    assert (added.status_code, removed.status_code) == (200, 200)
    documented(schema, "POST", "/api/v1/contacts/{id}/tags/", added)
    documented(schema, "DELETE", "/api/v1/contacts/{id}/tags/", removed)


def test_a_merge_answers_the_surviving_contact(schema, api, contact):
    duplicate = api.get(f"/api/v1/contacts/{contact.pk}/duplicates/").json()[0]

    response = api.post(f"/api/v1/contacts/{contact.pk}/merge/", {"duplicate": duplicate["id"]}, "application/json")

    assert response.status_code == 200 and response.json()["id"] == contact.pk
    documented(schema, "POST", "/api/v1/contacts/{id}/merge/", response)


@pytest.fixture
def receiver():
    made = Receiver([500])  # the first delivery fails, the next ones go through
    yield made
    made.close()


def test_a_subscriptions_creation_answers_its_secret_as_documented(schema, api, receiver):
    response = api.post("/api/v1/webhooks/", {"url": receiver.url, "events": ["order.updated"]}, "application/json")

    assert response.status_code == 201 and response.json()["secret"]
    documented(schema, "POST", "/api/v1/webhooks/", response)


def test_the_delivery_log_is_a_page_of_deliveries(schema, api, receiver, django_capture_on_commit_callbacks):
    subscription = api.post(
        "/api/v1/webhooks/", {"url": receiver.url, "events": ["order.updated"]}, "application/json"
    )
    for number in ("1001", "1002", "1003"):
        with django_capture_on_commit_callbacks(execute=True):
            api.post("/api/v1/orders/", {"external_id": number, "status": "paid"}, "application/json")
    first, second, _never_tried = WebhookDelivery.objects.order_by("id")
    connector_services.webhook_deliver(delivery_id=first.id)  # 500: pending, with the answer kept
    connector_services.webhook_deliver(delivery_id=second.id)  # delivered
    assert WebhookDelivery.objects.filter(delivered_at__lte=timezone.now()).count() == 1
    url = f"/api/v1/webhooks/{subscription.json()['id']}/deliveries/"

    page = api.get(url, {"limit": 2})
    rest = api.get(page.json()["next"])

    assert [len(page.json()["results"]), len(rest.json()["results"])] == [2, 1]
    assert {row["state"] for row in page.json()["results"] + rest.json()["results"]} == {"pending", "delivered"}
    for response in (page, rest):
        documented(schema, "GET", "/api/v1/webhooks/{id}/deliveries/", response)


def test_the_delivery_log_ignores_the_subscriptions_lists_filters(api, receiver):
    subscription = api.post(
        "/api/v1/webhooks/", {"url": receiver.url, "events": ["order.updated"]}, "application/json"
    )

    response = api.get(f"/api/v1/webhooks/{subscription.json()['id']}/deliveries/", {"enabled": "false"})

    assert response.status_code == 200 and response.json()["results"] == []


def test_setting_an_agents_status_answers_the_agent(schema, tenants):
    membership = tenants.teammate.memberships.get()

    response = client_for(tenants.teammate).post(
        f"/api/v1/agents/{membership.pk}/status/", {"status": "online", "capacity": 3}, "application/json"
    )

    assert response.status_code == 200 and response.json()["id"] == membership.pk
    documented(schema, "POST", "/api/v1/agents/{id}/status/", response)
