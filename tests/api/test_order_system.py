"""The order system drives Parley through the API: contacts upserted, orders posted, stock told,
messages sent; and hears back through signed webhooks, retried until the receiver answers."""

import hashlib
import hmac
import json
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from apps.connectors import services as connector_services
from apps.connectors.models import WebhookDelivery, WebhookSubscription
from apps.contacts.models import Contact, CustomFieldDefinition, Order, Tag
from apps.conversations.models import Message
from tests.conftest import _wait_for, token_client
from tests.conversations.whatsapp import make_whatsapp_channel

pytestmark = pytest.mark.django_db


# A real HTTP receiver on loopback -------------------------------------------------------------


class Receiver:
    def __init__(self, answers):
        self.answers = list(answers)  # status codes to give, in turn; then 200
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                code = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"ok" if code == 200 else b"not now")

            def log_message(self, *args):
                pass

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(*answers):
        made.append(Receiver(answers))
        return made[-1]

    yield make
    for one in made:
        one.close()


# Contacts ------------------------------------------------------------------------------------


def test_upsert_creates_then_updates_the_same_customer_by_external_id_phone_or_email(tenants):
    api = token_client(tenants.token_a)
    created = api.post(
        "/api/v1/contacts/upsert/",
        {"external_id": "C-1", "name": "Amira", "phone": "+20 100 123 4567"},
        "application/json",
    )
    by_phone = api.post("/api/v1/contacts/upsert/", {"phone": "+20 1001234567", "email": "a@x.eg"}, "application/json")
    by_email = api.post("/api/v1/contacts/upsert/", {"email": "A@X.EG", "language": "ar"}, "application/json")

    assert created.status_code == 201, created.content
    assert by_phone.status_code == 200 and by_email.status_code == 200
    assert created.json()["phone"] == "+201001234567"
    assert by_email.json()["id"] == created.json()["id"]
    contact = Contact.objects.get()
    assert (contact.external_id, contact.email, contact.language) == ("C-1", "a@x.eg", "ar")


def test_upsert_without_anything_to_match_on_names_the_field(tenants):
    response = token_client(tenants.token_a).post("/api/v1/contacts/upsert/", {"name": "X"}, "application/json")
    assert response.status_code == 400 and "external_id" in response.json()["fields"]


def test_custom_fields_are_checked_against_their_types_and_tags_are_added_and_removed(tenants):
    CustomFieldDefinition.objects.create(workspace=tenants.a, key="size", label="Size", type="number")
    vip = Tag.objects.create(workspace=tenants.a, name="vip")
    api = token_client(tenants.token_a)
    contact = api.post("/api/v1/contacts/", {"name": "Omar", "custom_fields": {"size": 42}}, "application/json").json()

    wrong = api.patch(f"/api/v1/contacts/{contact['id']}/", {"custom_fields": {"size": "big"}}, "application/json")
    unknown = api.patch(f"/api/v1/contacts/{contact['id']}/", {"custom_fields": {"shoe": 1}}, "application/json")
    tagged = api.post(f"/api/v1/contacts/{contact['id']}/tags/", {"tags": [vip.id]}, "application/json")
    untagged = api.delete(f"/api/v1/contacts/{contact['id']}/tags/", {"tags": [vip.id]}, "application/json")

    assert wrong.status_code == 400 and unknown.status_code == 400
    assert [t["name"] for t in tagged.json()["tags"]] == ["vip"]
    assert untagged.json()["tags"] == []


def test_another_workspaces_token_finds_nothing(tenants):
    contact = Contact.objects.create(workspace=tenants.a, name="Amira")
    order = Order.objects.create(workspace=tenants.a, external_id="1001", contact=contact)
    other = token_client(tenants.token_b)
    for url in (
        f"/api/v1/contacts/{contact.id}/",
        f"/api/v1/orders/{order.id}/",
        f"/api/v1/contacts/{contact.id}/orders/",
    ):
        assert other.get(url).status_code == 404
    assert other.patch(f"/api/v1/contacts/{contact.id}/", {"name": "x"}, "application/json").status_code == 404
    assert (
        other.post(
            "/api/v1/orders/", {"external_id": "1001", "status": "paid", "contact": contact.id}, "application/json"
        ).status_code
        == 400
    )
    assert Order.objects.get().status == "created"


# Orders and stock --------------------------------------------------------------------------


def test_order_events_upsert_one_order_keep_its_history_and_move_the_last_purchase(tenants):
    api = token_client(tenants.token_a)
    first = api.post(
        "/api/v1/orders/",
        {
            "external_id": "1001",
            "status": "created",
            "customer": {"external_id": "C-7", "name": "Amira", "phone": "+201001234567"},
            "items": [{"sku": "EGG-30", "name": "Farm eggs, 30", "qty": 2, "price": "92.50"}],
            "total": "185.00",
            "currency": "EGP",
        },
        "application/json",
    )
    paid = api.post("/api/v1/orders/", {"external_id": "1001", "status": "paid"}, "application/json")
    shipped = api.post(
        "/api/v1/orders/",
        {"external_id": "1001", "status": "shipped", "courier": "Bosta", "tracking_number": "BS123"},
        "application/json",
    )

    assert first.status_code == 201, first.content
    assert (paid.status_code, shipped.status_code) == (200, 200)
    order = Order.objects.get()
    assert [step["status"] for step in order.history] == ["created", "paid", "shipped"]
    assert order.items[0]["price"] == "92.50" and str(order.total) == "185.00"
    contact = Contact.objects.get(external_id="C-7")
    assert order.contact == contact
    assert contact.last_purchase_at is not None and contact.lifecycle_stage == "customer"
    listed = api.get(f"/api/v1/contacts/{contact.id}/orders/").json()
    assert listed["source"] == "pushed"
    assert [o["external_id"] for o in listed["orders"]] == ["1001"]


def test_a_bad_order_names_the_nested_field(tenants):
    response = token_client(tenants.token_a).post(
        "/api/v1/orders/",
        {"external_id": "1", "status": "paid", "items": [{"sku": "A", "name": "A", "qty": 1, "price": "-1"}]},
        "application/json",
    )
    assert response.status_code == 400
    assert "items.0.price" in response.json()["fields"]


def test_stock_marks_a_restock_only_when_the_product_comes_back(tenants):
    api = token_client(tenants.token_a)
    answers = [
        api.post("/api/v1/stock-events/", {"sku": "EGG-30", "in_stock": stock, "quantity": qty}, "application/json")
        for stock, qty in ((True, 5), (False, 0), (True, 40), (True, 38))
    ]
    assert [a.json()["restocked"] for a in answers] == [False, False, True, False]


# Messages ----------------------------------------------------------------------------------


def test_a_template_to_a_customer_known_only_by_phone_goes_on_whatsapp(tenants, django_capture_on_commit_callbacks):
    channel = make_whatsapp_channel(tenants.a)
    from apps.connectors.models import MessageTemplate

    MessageTemplate.objects.create(
        workspace=tenants.a, channel=channel, name="order_update", body="Hi {{1}}, your order {{2}} is {{3}}."
    )
    Contact.objects.create(workspace=tenants.a, name="Amira", phone="+201001234567")
    from apps.contacts.services import contact_index

    contact = Contact.objects.get()
    contact_index(contact)
    contact.save()
    api = token_client(tenants.token_a)

    response = api.post(
        "/api/v1/messages/",
        {
            "phone": "+201001234567",
            "channel": channel.id,
            "kind": "template",
            "payload": {"name": "order_update", "language": "en", "parameters": ["Amira", "#1001", "on its way"]},
        },
        "application/json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["state"] == "queued" and body["text"] == "Hi Amira, your order #1001 is on its way."
    assert api.get(f"/api/v1/messages/{body['id']}/").json()["state"] == "queued"
    assert token_client(tenants.token_b).get(f"/api/v1/messages/{body['id']}/").status_code == 404
    assert contact.identities.get(channel=channel).external_id == "201001234567"


def test_a_message_to_nobody_is_a_clear_error(tenants):
    api = token_client(tenants.token_a)
    missing = api.post("/api/v1/messages/", {"phone": "+201009999999", "text": "hi"}, "application/json")
    ambiguous = api.post("/api/v1/messages/", {"phone": "+201009999999", "external_id": "x"}, "application/json")
    assert missing.status_code == 404 and missing.json()["code"] == "contact_not_found"
    assert ambiguous.status_code == 400 and "contact" in ambiguous.json()["fields"]


# Webhooks --------------------------------------------------------------------------------------


def _subscribe(tenants, url, events):
    response = token_client(tenants.token_a).post(
        "/api/v1/webhooks/", {"url": url, "events": events}, "application/json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def _verify(secret: str, request) -> dict:
    parts = dict(part.split("=", 1) for part in request["headers"]["X-Parley-Signature"].split(","))
    stamp, signature = parts["t"], parts["v1"]
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    return json.loads(request["body"])


def test_a_webhook_is_signed_retried_after_a_failure_and_logged(tenants, receiver, django_capture_on_commit_callbacks):
    hook = receiver(500)
    subscription = _subscribe(tenants, hook.url, ["order.updated"])
    with django_capture_on_commit_callbacks(execute=True):
        token_client(tenants.token_a).post(
            "/api/v1/orders/", {"external_id": "1001", "status": "paid"}, "application/json"
        )
    delivery = WebhookDelivery.objects.get()

    connector_services.webhook_deliver(delivery_id=delivery.id)  # the receiver answers 500
    delivery.refresh_from_db()
    assert (delivery.state, delivery.last_status_code, delivery.attempts) == ("pending", 500, 1)
    assert delivery.next_attempt_at > timezone.now()

    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())  # time passes
    connector_services.webhook_deliver(delivery_id=delivery.id)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.last_status_code, delivery.attempts) == ("delivered", 200, 2)

    first, second = hook.requests
    event = _verify(subscription["secret"], second)
    assert event["type"] == "order.updated" and event["data"]["external_id"] == "1001"
    assert first["headers"]["X-Parley-Delivery"] == second["headers"]["X-Parley-Delivery"] == event["id"]
    log = token_client(tenants.token_a).get(f"/api/v1/webhooks/{subscription['id']}/deliveries/").json()
    assert log["results"][0]["state"] == "delivered"
    assert token_client(tenants.token_b).get(f"/api/v1/webhooks/{subscription['id']}/deliveries/").status_code == 404


def test_a_receiver_down_for_a_day_gets_the_subscription_disabled(
    tenants, receiver, django_capture_on_commit_callbacks
):
    hook = receiver(*[503] * 10)
    _subscribe(tenants, hook.url, ["order.updated"])
    for number in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            token_client(tenants.token_a).post(
                "/api/v1/orders/", {"external_id": str(number), "status": "paid"}, "application/json"
            )
    for delivery in WebhookDelivery.objects.all():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(created_at=timezone.now() - timedelta(hours=25))
        connector_services.webhook_deliver(delivery_id=delivery.id)

    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"failed"}
    subscription = WebhookSubscription.objects.get()
    assert not subscription.enabled and "failed for 24 hours" in subscription.disabled_reason


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_customers_whatsapp_message_reaches_the_order_system_through_the_worker(
    tenants, receiver, live_server_process, celery_worker_process, simulator
):
    hook = receiver()
    subscription = _subscribe(tenants, hook.url, ["message.created", "conversation.opened", "contact.created"])
    channel = make_whatsapp_channel(tenants.a, base_url=simulator.url)
    simulator.register(channel, webhook_url=f"{live_server_process.url}/webhooks/{channel.uuid}/")

    simulator.post(
        "/_simulator/inbound",
        {
            "phone_number_id": "1000001",
            "from": "201001234567",
            "type": "text",
            "text": "Is 1001 shipped?",
            "wait": True,
        },
    )
    _wait_for(lambda: len(hook.requests) >= 3, 30, "three webhooks")

    events = {_verify(subscription["secret"], request)["type"]: request for request in hook.requests}
    assert set(events) == {"message.created", "conversation.opened", "contact.created"}
    assert json.loads(events["message.created"]["body"])["data"]["text"] == "Is 1001 shipped?"
    assert Message.objects.count() == 1


# Behaving well ---------------------------------------------------------------------------------


def test_a_repeated_idempotency_key_returns_the_first_answer_and_creates_once(tenants):
    api = token_client(tenants.token_a)
    body = {"external_id": "C-1", "name": "Amira"}
    first = api.post("/api/v1/contacts/", body, "application/json", headers={"Idempotency-Key": "k-1"})
    again = api.post("/api/v1/contacts/", body, "application/json", headers={"Idempotency-Key": "k-1"})
    other_body = api.post("/api/v1/contacts/", {"name": "X"}, "application/json", headers={"Idempotency-Key": "k-1"})
    other_caller = token_client(tenants.token_b).post(
        "/api/v1/contacts/", body, "application/json", headers={"Idempotency-Key": "k-1"}
    )

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert other_body.status_code == 422 and other_body.json()["code"] == "idempotency_key_reused"
    assert other_caller.status_code == 201  # keys belong to their caller
    assert Contact.objects.filter(workspace=tenants.a).count() == 1


class _Shop(BaseHTTPRequestHandler):
    orders = [{"external_id": "2002", "status": "shipped", "tracking_url": "https://track.example/2002"}]
    seen = []

    def do_GET(self):
        _Shop.seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"orders": _Shop.orders}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_orders_button_asks_the_order_system_live_and_says_so_when_it_is_down(tenants):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Shop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    contact = Contact.objects.create(workspace=tenants.a, name="Amira", external_id="C 7")
    Order.objects.create(workspace=tenants.a, external_id="1001", contact=contact)
    tenants.a.order_lookup_url = f"http://127.0.0.1:{server.server_port}/orders?customer={{external_id}}"
    tenants.a.order_lookup_token = "shop-secret"
    tenants.a.save()
    api = token_client(tenants.token_a)
    try:
        live = api.get(f"/api/v1/contacts/{contact.id}/orders/").json()
    finally:
        server.shutdown()
        server.server_close()
    down = api.get(f"/api/v1/contacts/{contact.id}/orders/").json()

    assert live["source"] == "live" and live["orders"][0]["external_id"] == "2002"
    assert _Shop.seen == [("/orders?customer=C%207", "Bearer shop-secret")]
    assert down["source"] == "pushed" and "did not answer" in down["notice"]
    assert [o["external_id"] for o in down["orders"]] == ["1001"]


# Satisfaction and dates --------------------------------------------------------------------------


def test_a_rating_from_the_order_systems_survey_is_kept_and_heard_by_subscribers(
    tenants, receiver, django_capture_on_commit_callbacks
):
    from apps.contacts.services import contact_resolve
    from apps.conversations.models import Conversation

    hook = receiver()
    subscription = _subscribe(tenants, hook.url, ["csat.submitted"])
    channel = make_whatsapp_channel(tenants.a)
    contact = contact_resolve(channel=channel, external_id="201001110001", name="Amira", phone="+201001110001")
    conversation = Conversation.objects.create(workspace=tenants.a, contact=contact, channel=channel)
    api = token_client(tenants.token_a)

    bad = api.post(f"/api/v1/conversations/{conversation.pk}/csat/", {"score": 9}, "application/json")
    assert bad.status_code == 400 and "score" in bad.json()["fields"]
    with django_capture_on_commit_callbacks(execute=True):
        good = api.post(
            f"/api/v1/conversations/{conversation.pk}/csat/", {"score": 4, "comment": "Fast"}, "application/json"
        )
    assert good.status_code == 200 and good.json()["csat_score"] == 4
    conversation.refresh_from_db()
    assert (conversation.csat_score, conversation.csat_comment) == (4, "Fast")
    assert Message.objects.filter(conversation=conversation, kind="event", payload__action="csat").exists()

    connector_services.webhook_deliver(delivery_id=WebhookDelivery.objects.get().id)
    event = _verify(subscription["secret"], hook.requests[0])
    assert event["type"] == "csat.submitted" and event["data"]["score"] == 4 and event["data"]["comment"] == "Fast"
    other = token_client(tenants.token_b).post(
        f"/api/v1/conversations/{conversation.pk}/csat/", {"score": 1}, "application/json"
    )
    assert other.status_code == 404


def test_conversations_filter_by_when_they_opened_and_closed(tenants):
    from apps.contacts.services import contact_resolve
    from apps.conversations.models import Conversation

    channel = make_whatsapp_channel(tenants.a)
    now = timezone.now()
    made = []
    for number, days in enumerate((10, 3)):
        contact = contact_resolve(channel=channel, external_id=f"20100111000{number}", phone=f"+20100111000{number}")
        conversation = Conversation.objects.create(workspace=tenants.a, contact=contact, channel=channel)
        Conversation.objects.filter(pk=conversation.pk).update(
            opened_at=now - timedelta(days=days), closed_at=now - timedelta(days=days - 1), status="closed"
        )
        made.append(conversation.pk)
    api = token_client(tenants.token_a)

    def listed(query):
        response = api.get("/api/v1/conversations/", query)
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    week_ago = (now - timedelta(days=7)).isoformat()
    assert listed({"opened_after": week_ago}) == [made[1]]
    assert listed({"opened_before": week_ago}) == [made[0]]
    assert listed({"closed_after": week_ago}) == [made[1]]
    assert api.get("/api/v1/conversations/", {"opened_after": "last tuesday"}).status_code == 400
    assert api.get("/api/v1/conversations/", {"opened_after": "2026-02-23T15:25:53-20:28"}).status_code == 200
    for tag in ("1.5", "6e16", "0"):
        bad = api.get("/api/v1/conversations/", {"tag": tag})
        assert bad.status_code == 400 and "tag" in bad.json()["fields"]
