from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.contacts.models import Contact, ContactIdentity
from apps.conversations.models import Conversation, DeliveryState, InboundEvent, Message
from apps.conversations.services import inbound_event_process
from tests.conversations.whatsapp import (
    envelope,
    make_whatsapp_channel,
    messages_value,
    post_webhook,
    signed,
    status,
    statuses_value,
    text,
)
from tests.factories import make_workspace


@pytest.fixture
def channel(db):
    return make_whatsapp_channel(make_workspace(name="Nile Basket", slug="nile"))


def deliver(client, channel, body):
    """Posts a webhook and processes the stored delivery as the worker would."""
    response = post_webhook(client, channel, body)
    assert response.status_code == 200, response.content
    event = InboundEvent.objects.latest("id")
    inbound_event_process(event_id=event.id)
    return event


def test_handshake_echoes_the_challenge_for_the_right_verify_token(channel):
    url = f"/webhooks/{channel.uuid}/?hub.mode=subscribe&hub.challenge=12345&hub.verify_token={channel.verify_token}"

    response = Client().get(url)

    assert response.status_code == 200
    assert response.content == b"12345"


def test_handshake_with_a_wrong_verify_token_is_403(channel):
    response = Client().get(f"/webhooks/{channel.uuid}/?hub.mode=subscribe&hub.challenge=1&hub.verify_token=nope")

    assert response.status_code == 403


def test_bad_signature_is_401_and_nothing_is_stored(channel):
    body = envelope(messages_value(text("hi", wamid="wamid.1")))

    response = post_webhook(Client(), channel, body, secret="wrong-secret")

    assert response.status_code == 401
    assert response.json()["code"] == "bad_signature"
    assert not InboundEvent.objects.exists()


def test_a_content_length_that_is_not_a_number_is_400_and_nothing_is_stored(channel):
    response = Client().generic(
        "POST", f"/webhooks/{channel.uuid}/", b"{}", content_type="application/json", CONTENT_LENGTH="abc"
    )

    assert response.status_code == 400 and response.json()["code"] == "bad_request"
    assert not InboundEvent.objects.exists()


def test_missing_signature_is_401(channel):
    response = Client().post(f"/webhooks/{channel.uuid}/", b"{}", content_type="application/json")

    assert response.status_code == 401


def test_unknown_channel_is_404(db):
    response = Client().post("/webhooks/00000000-0000-0000-0000-000000000000/", b"{}", content_type="application/json")

    assert response.status_code == 404


def test_customer_message_creates_contact_conversation_and_message(channel):
    deliver(Client(), channel, envelope(messages_value(text("Where is my order?", wamid="wamid.A1"))))

    message = Message.objects.get()
    assert message.text == "Where is my order?"
    assert message.direction == "in" and message.state == DeliveryState.RECEIVED
    contact = message.conversation.contact
    assert (contact.name, contact.phone, contact.country) == ("Amira", "+201001234567", "EG")
    conversation = message.conversation
    assert conversation.status == "open" and conversation.unread_count == 1
    assert conversation.window_expires_at > timezone.now() + timedelta(hours=23)


def test_the_raw_delivery_is_stored_encrypted(channel):
    deliver(Client(), channel, envelope(messages_value(text("hi", wamid="wamid.A1"))))

    with connection.cursor() as cursor:
        cursor.execute("SELECT body FROM conversations_inboundevent")
        (stored,) = cursor.fetchone()
        cursor.execute("SELECT name, phone FROM contacts_contact")
        name, phone = cursor.fetchone()
        cursor.execute("SELECT external_id FROM contacts_contactidentity")
        (external_id,) = cursor.fetchone()
    for column in (stored, name, phone, external_id):
        assert "201001234567" not in column and "Amira" not in column


def test_every_message_of_a_batched_delivery_is_applied(channel):
    body = envelope(
        messages_value(text("one", wamid="wamid.B1"), text("two", wamid="wamid.B2")),
        messages_value(text("three", wamid="wamid.B3", wa_id="201009999999"), wa_id="201009999999", name="Omar"),
    )

    deliver(Client(), channel, body)

    assert sorted(Message.objects.values_list("text", flat=True)) == ["one", "three", "two"]
    assert Contact.objects.count() == 2
    assert Conversation.objects.count() == 2


def test_the_same_delivery_three_times_makes_one_message(channel):
    body = envelope(messages_value(text("hello", wamid="wamid.C1")))
    for _ in range(3):
        deliver(Client(), channel, body)

    assert Message.objects.count() == 1
    assert Conversation.objects.get().unread_count == 1
    assert InboundEvent.objects.filter(state="processed").count() == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_of_a_new_customer_make_one_contact_and_one_message():
    channel = make_whatsapp_channel(make_workspace(slug="race"))
    body = envelope(messages_value(text("hello", wamid="wamid.R1"), wa_id="201005550000"))
    events = [post_webhook(Client(), channel, body) for _ in range(3)]
    assert all(response.status_code == 200 for response in events)
    ids = list(InboundEvent.objects.values_list("id", flat=True))

    def process(event_id):
        try:
            inbound_event_process(event_id=event_id)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(process, ids))

    assert Message.objects.count() == 1
    assert Contact.objects.count() == 1
    assert ContactIdentity.objects.count() == 1


def test_a_returning_customer_on_another_number_is_recognised_by_phone(channel):
    second = make_whatsapp_channel(channel.workspace, base_url="http://127.0.0.1:9")
    second.credentials = {**second.credentials, "phone_number_id": "1000002"}
    second.save()
    deliver(Client(), channel, envelope(messages_value(text("hi", wamid="wamid.D1"))))
    deliver(Client(), second, envelope(messages_value(text("hi again", wamid="wamid.D2"))))

    assert Contact.objects.count() == 1
    assert Conversation.objects.count() == 2
    assert ContactIdentity.objects.count() == 2


def test_a_closed_conversation_reopens_when_the_customer_writes(channel):
    deliver(Client(), channel, envelope(messages_value(text("hi", wamid="wamid.E1"))))
    Conversation.objects.update(status="closed", closed_at=timezone.now())

    deliver(Client(), channel, envelope(messages_value(text("me again", wamid="wamid.E2"))))

    conversation = Conversation.objects.get()
    assert conversation.status == "open" and conversation.closed_at is None
    assert conversation.messages.count() == 2


@pytest.mark.parametrize(
    ("message", "kind", "expected_text"),
    [
        (
            {
                "type": "interactive",
                "interactive": {"type": "button_reply", "button_reply": {"id": "orders", "title": "Orders"}},
            },
            "interactive",
            "Orders",
        ),
        (
            {
                "type": "interactive",
                "interactive": {
                    "type": "list_reply",
                    "list_reply": {"id": "r1", "title": "Refund", "description": "money"},
                },
            },
            "interactive",
            "Refund",
        ),
        (
            {"type": "button", "button": {"payload": "STOP", "text": "Stop promotions"}},
            "interactive",
            "Stop promotions",
        ),
        (
            {"type": "location", "location": {"latitude": 30.04, "longitude": 31.23, "name": "Home"}},
            "location",
            "Home",
        ),
        ({"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "👍"}}, "reaction", "👍"),
        ({"type": "order", "order": {"catalog_id": "1", "product_items": []}}, "unsupported", ""),
        ({"type": "something_new", "something_new": {}}, "unsupported", ""),
    ],
)
def test_each_inbound_type_is_stored_with_its_kind(channel, message, kind, expected_text):
    item = {"from": "201001234567", "id": "wamid.T1", "timestamp": "1700000000", **message}

    deliver(Client(), channel, envelope(messages_value(item)))

    stored = Message.objects.get()
    assert (stored.kind, stored.text) == (kind, expected_text)


def test_a_reply_keeps_its_context(channel):
    deliver(Client(), channel, envelope(messages_value(text("first", wamid="wamid.F1"))))
    deliver(Client(), channel, envelope(messages_value(text("re", wamid="wamid.F2", context={"id": "wamid.F1"}))))

    reply = Message.objects.get(provider_id="wamid.F2")
    assert reply.reply_to.provider_id == "wamid.F1"


def test_a_malformed_payload_is_kept_as_failed_and_replayable(channel):
    raw, signature = signed(envelope({"messages": [{"no_id": 1}]}))
    response = Client().post(
        f"/webhooks/{channel.uuid}/", raw, content_type="application/json", headers={"X-Hub-Signature-256": signature}
    )
    assert response.status_code == 200
    event = InboundEvent.objects.get()

    inbound_event_process(event_id=event.id)

    event.refresh_from_db()
    assert event.state == "failed"
    assert "from" in event.error
    assert not Message.objects.exists()


def test_not_json_is_stored_as_failed_never_a_500(channel):
    raw, signature = signed(b"not json at all")
    response = Client().post(
        f"/webhooks/{channel.uuid}/", raw, content_type="application/json", headers={"X-Hub-Signature-256": signature}
    )

    assert response.status_code == 200
    inbound_event_process(event_id=InboundEvent.objects.get().id)
    assert InboundEvent.objects.get().state == "failed"


def test_statuses_out_of_order_keep_the_highest_state(channel):
    deliver(Client(), channel, envelope(messages_value(text("hi", wamid="wamid.G1"))))
    conversation = Conversation.objects.get()
    sent = Message.objects.create(
        workspace=channel.workspace,
        conversation=conversation,
        channel=channel,
        direction="out",
        sender_kind="agent",
        text="Your order ships today",
        provider_id="wamid.OUT1",
        state="sent",
    )

    deliver(Client(), channel, envelope(statuses_value(status("wamid.OUT1", "read"))))
    deliver(
        Client(), channel, envelope(statuses_value(status("wamid.OUT1", "delivered"), status("wamid.OUT1", "sent")))
    )

    sent.refresh_from_db()
    assert sent.state == "read"
    assert sent.read_at is not None


def test_a_failed_status_carries_the_providers_code_and_reason(channel):
    deliver(Client(), channel, envelope(messages_value(text("hi", wamid="wamid.H1"))))
    sent = Message.objects.create(
        workspace=channel.workspace,
        conversation=Conversation.objects.get(),
        channel=channel,
        direction="out",
        sender_kind="agent",
        text="x",
        provider_id="wamid.OUT2",
        state="sent",
    )
    errors = [{"code": 131026, "title": "Message undeliverable", "error_data": {"details": "Receiver is incapable"}}]

    deliver(Client(), channel, envelope(statuses_value(status("wamid.OUT2", "failed", errors=errors))))

    sent.refresh_from_db()
    assert sent.state == "failed"
    assert sent.error_code == "131026"
    assert "Message undeliverable" in sent.error_reason


# Drainers --------------------------------------------------------------------------------------


def test_drainers_claim_disjoint_batches_and_reclaim_what_a_dead_one_left(channel):
    from apps.conversations.services import inbound_events_claim

    for number in range(3):
        post_webhook(Client(), channel, envelope(messages_value(text(f"hi {number}", wamid=f"wamid.c{number}"))))
    first = inbound_events_claim(limit=2)
    second = inbound_events_claim(limit=2)

    assert len(first) == 2 and len(second) == 1 and not set(first) & set(second)
    assert inbound_events_claim() == []
    InboundEvent.objects.filter(pk__in=first).update(claimed_at=timezone.now() - timedelta(minutes=5))
    assert sorted(inbound_events_claim()) == sorted(first)  # their drainer died: taken again


def test_a_drainer_applies_every_pending_delivery_and_frees_its_slot(channel):
    from apps.conversations.services import inbound_events_drain
    from apps.conversations.services.messages import _drain_slot_key
    from apps.core.redis import get_redis

    for number in range(5):
        post_webhook(Client(), channel, envelope(messages_value(text(f"order {number}", wamid=f"wamid.d{number}"))))
    get_redis().set(_drain_slot_key(0), "1")  # as the wake-up left it

    assert inbound_events_drain(slot=0) == 5

    assert Message.objects.filter(channel=channel).count() == 5
    assert set(InboundEvent.objects.values_list("state", flat=True)) == {"processed"}
    assert not get_redis().exists(_drain_slot_key(0))


def test_a_drainer_steps_aside_between_batches_and_keeps_its_slot(channel):
    """With another kind of task waiting for its process, a drainer applies the batch in hand,
    queues its continuation behind that task and returns, its slot kept for the continuation."""
    from apps.conversations.services import inbound_events_drain
    from apps.conversations.services.messages import INBOUND_BATCH, _drain_slot_key
    from apps.core.redis import get_redis

    for number in range(INBOUND_BATCH + 3):
        post_webhook(Client(), channel, envelope(messages_value(text(f"n {number}", wamid=f"wamid.s{number}"))))
    get_redis().set(_drain_slot_key(0), "1")

    assert inbound_events_drain(slot=0, step_aside=lambda: True) == INBOUND_BATCH
    assert InboundEvent.objects.filter(state="processed").count() == INBOUND_BATCH
    assert get_redis().exists(_drain_slot_key(0))  # the continuation's

    assert inbound_events_drain(slot=0, step_aside=lambda: False) == 3
    assert Message.objects.filter(channel=channel).count() == INBOUND_BATCH + 3


def test_short_task_waiting_reads_the_head_of_celerys_queue():
    import json
    import uuid

    from apps.conversations.tasks import deliver_message, drain_inbound_events
    from apps.core.queue import short_task_waiting
    from apps.core.redis import get_redis, key

    queue, redis = f"parley-test-peek-{uuid.uuid4().hex}", get_redis()
    try:
        assert not short_task_waiting(queue)  # nothing waits
        drain_inbound_events.apply_async((0,), queue=queue)
        assert not short_task_waiting(queue)  # only long tasks: no reason to take turns
        deliver_message.apply_async((1,), queue=queue)
        assert short_task_waiting(queue)
        redis.delete(key(queue))
        redis.lpush(key(queue), json.dumps({"body": "?"}))
        assert short_task_waiting(queue)  # unreadable: something waits
    finally:
        redis.delete(key(queue), key(f"_kombu.binding.{queue}"), key(f"_kombu.binding_permanent.{queue}"))
