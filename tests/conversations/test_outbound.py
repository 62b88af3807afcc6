"""Operator replies leaving through the WhatsApp connector to the channel simulator, over HTTP
on loopback. `message_deliver` is what the Celery task runs; here it runs in the test process
so each fault can be stepped through."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.connectors.ratelimit import take_token
from apps.conversations.models import Conversation, DeliveryState, Message
from apps.conversations.services import SendLater, message_deliver, message_send
from apps.core.exceptions import DomainError
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_member, make_workspace

WA_ID = "201001234567"


@pytest.fixture
def conversation(db, simulator):
    workspace = make_workspace(slug="nile")
    channel = make_whatsapp_channel(workspace, base_url=simulator.url)
    simulator.register(channel)
    from apps.contacts.services import contact_resolve

    contact = contact_resolve(channel=channel, external_id=WA_ID, name="Amira", phone=f"+{WA_ID}")
    # The customer wrote a minute ago, in the simulator as in Parley, so the window is open.
    simulator.post(
        "/_simulator/inbound",
        {"phone_number_id": "1000001", "from": WA_ID, "name": "Amira", "type": "text", "text": "hello"},
    )
    return Conversation.objects.create(
        workspace=workspace, contact=contact, channel=channel, window_expires_at=timezone.now() + timedelta(hours=23)
    )


@pytest.fixture
def agent(conversation):
    return make_member(conversation.workspace).user


def test_a_reply_is_recorded_as_queued_before_anything_leaves(conversation, agent, simulator):
    message = message_send(conversation=conversation, author=agent, text="Your order ships today")

    assert message.state == DeliveryState.QUEUED
    assert simulator.get("/_simulator/outbox", phone_number_id="1000001") == [] or all(
        item["body"].get("text", {}).get("body") != "Your order ships today"
        for item in simulator.get("/_simulator/outbox", phone_number_id="1000001")
    )


def test_a_reply_is_sent_in_whatsapps_wire_format(conversation, agent, simulator):
    message = message_send(conversation=conversation, author=agent, text="Your order ships today")

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.SENT
    assert message.provider_id.startswith("wamid.")
    sent = simulator.get("/_simulator/outbox", phone_number_id="1000001")[-1]
    assert sent["body"]["messaging_product"] == "whatsapp"
    assert sent["body"]["to"] == WA_ID
    assert sent["body"]["type"] == "text"
    assert sent["body"]["text"]["body"] == "Your order ships today"


def test_first_reply_by_a_person_sets_first_response(conversation, agent):
    message_send(conversation=conversation, author=agent, text="Hi!")

    conversation.refresh_from_db()
    assert conversation.first_response_at is not None
    assert conversation.waiting_since is None


def test_interactive_options_become_reply_buttons(conversation, agent, simulator):
    options = [{"id": "orders", "title": "Order status"}, {"id": "human", "title": "Talk to a person"}]
    message = message_send(
        conversation=conversation,
        author=agent,
        text="How can we help?",
        kind="interactive",
        payload={"options": options},
    )

    message_deliver(message_id=message.id)

    body = simulator.get("/_simulator/outbox", phone_number_id="1000001")[-1]["body"]
    assert body["type"] == "interactive"
    assert body["interactive"]["type"] == "button"
    assert [b["reply"]["id"] for b in body["interactive"]["action"]["buttons"]] == ["orders", "human"]


def test_more_than_three_options_become_a_list(conversation, agent, simulator):
    options = [{"id": f"o{n}", "title": f"Option {n}"} for n in range(5)]
    message = message_send(
        conversation=conversation,
        author=agent,
        text="Pick one",
        kind="interactive",
        payload={"options": options, "button": "Options"},
    )

    message_deliver(message_id=message.id)

    body = simulator.get("/_simulator/outbox", phone_number_id="1000001")[-1]["body"]
    assert body["interactive"]["type"] == "list"
    assert len(body["interactive"]["action"]["sections"][0]["rows"]) == 5


def test_free_text_outside_the_window_is_refused_with_a_clear_error(conversation, agent):
    Conversation.objects.filter(pk=conversation.pk).update(window_expires_at=timezone.now() - timedelta(minutes=1))
    conversation.refresh_from_db()

    with pytest.raises(DomainError) as refused:
        message_send(conversation=conversation, author=agent, text="Hello again")

    assert refused.value.code == "window_closed"
    assert "template" in refused.value.detail
    assert not Message.objects.filter(direction="out").exists()


def test_a_template_goes_out_even_outside_the_window(conversation, agent, simulator):
    Conversation.objects.filter(pk=conversation.pk).update(window_expires_at=timezone.now() - timedelta(days=2))
    conversation.refresh_from_db()
    template = {
        "name": "order_update",
        "language": {"code": "en"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": value} for value in ("Amira", "#1042", "on its way")],
            }
        ],
    }

    message = message_send(conversation=conversation, author=agent, kind="template", payload={"template": template})
    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.SENT
    assert (
        simulator.get("/_simulator/outbox", phone_number_id="1000001")[-1]["body"]["template"]["name"]
        == "order_update"
    )


def test_a_rate_limit_error_is_retried_later_and_then_delivered(conversation, agent, simulator):
    simulator.post(
        "/_simulator/faults",
        {"phone_number_id": "1000001", "code": 130429, "http_status": 400, "count": 1, "message": "Rate limit hit"},
    )
    message = message_send(conversation=conversation, author=agent, text="Hi")

    with pytest.raises(SendLater) as later:
        message_deliver(message_id=message.id)
    message.refresh_from_db()
    assert message.state == DeliveryState.QUEUED
    assert message.error_code == "130429"
    assert later.value.delay > 0
    # The channel's bucket now owes the provider a pause, for every worker.
    assert take_token(f"channel:{conversation.channel_id}", 80) > 0

    Message.objects.filter(pk=message.pk).update(attempts=1)
    from apps.core.redis import get_redis, key

    get_redis().delete(key("bucket", f"channel:{conversation.channel_id}"))
    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.SENT


def test_a_server_error_is_retried(conversation, agent, simulator):
    simulator.post(
        "/_simulator/faults",
        {
            "phone_number_id": "1000001",
            "code": 2,
            "http_status": 503,
            "count": 1,
            "message": "Service temporarily unavailable",
        },
    )
    message = message_send(conversation=conversation, author=agent, text="Hi")

    with pytest.raises(SendLater):
        message_deliver(message_id=message.id)

    message_deliver(message_id=message.id)
    message.refresh_from_db()
    assert message.state == DeliveryState.SENT


def test_bad_credentials_fail_the_message_with_the_providers_code(conversation, agent):
    channel = conversation.channel
    channel.credentials = {**channel.credentials, "access_token": "revoked"}
    channel.save(update_fields=["credentials"])
    message = message_send(conversation=conversation, author=agent, text="Hi")

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.FAILED
    assert message.error_code == "190"


def test_a_change_to_the_channel_is_seen_by_the_next_delivery(conversation, agent):
    """A worker keeps the channels it sends through (their credentials decrypted once), checked
    against a digest of the row at each delivery: a token revoked, by the admin or by a plain
    UPDATE, fails the very next send, and one put back is used at once."""
    from apps.connectors.models import Channel

    channel = conversation.channel
    first = message_send(conversation=conversation, author=agent, text="One")
    message_deliver(message_id=first.id)
    assert Message.objects.get(pk=first.pk).state == DeliveryState.SENT

    good = channel.credentials
    Channel.objects.filter(pk=channel.pk).update(credentials={**good, "access_token": "revoked"})
    second = message_send(conversation=conversation, author=agent, text="Two")
    message_deliver(message_id=second.id)
    second.refresh_from_db()
    assert (second.state, second.error_code) == (DeliveryState.FAILED, "190")

    Channel.objects.filter(pk=channel.pk).update(credentials=good)
    third = message_send(conversation=conversation, author=agent, text="Three")
    message_deliver(message_id=third.id)
    assert Message.objects.get(pk=third.pk).state == DeliveryState.SENT


def test_a_message_left_sending_by_a_dead_worker_is_marked_for_review_not_resent(conversation, agent, simulator):
    message = message_send(conversation=conversation, author=agent, text="Hi")
    Message.objects.filter(pk=message.pk).update(state="sending", claimed_at=timezone.now() - timedelta(minutes=10))
    before = len(simulator.get("/_simulator/outbox", phone_number_id="1000001"))

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.FAILED
    assert message.error_code == "interrupted"
    assert len(simulator.get("/_simulator/outbox", phone_number_id="1000001")) == before


def test_delivering_twice_sends_once(conversation, agent, simulator):
    message = message_send(conversation=conversation, author=agent, text="Only once")

    message_deliver(message_id=message.id)
    message_deliver(message_id=message.id)

    bodies = [item["body"] for item in simulator.get("/_simulator/outbox", phone_number_id="1000001")]
    assert sum(1 for body in bodies if body.get("text", {}).get("body") == "Only once") == 1


def test_an_internal_note_never_leaves(conversation, agent, simulator):
    note = message_send(conversation=conversation, author=agent, text="Customer is a VIP", kind="note")

    assert note.kind == "note"
    assert all(
        item["body"].get("text", {}).get("body") != "Customer is a VIP"
        for item in simulator.get("/_simulator/outbox", phone_number_id="1000001")
    )


def test_the_token_bucket_holds_the_channels_rate():
    bucket = f"test-bucket-{timezone.now().timestamp()}"
    waits = [take_token(bucket, 5) for _ in range(7)]

    assert waits[:5] == [0, 0, 0, 0, 0]
    assert all(wait > 0 for wait in waits[5:])


def test_bulk_sending_leaves_a_reserve_for_live_replies_on_the_same_number():
    from apps.connectors.ratelimit import bulk_reserve, take_tokens

    bucket = f"test-bucket-reserve-{timezone.now().timestamp()}"
    reserve = bulk_reserve(80)
    granted, _ = take_tokens(bucket, 80, 80, reserve=reserve)  # a broadcast takes what it may
    assert granted == 80 - reserve
    assert take_tokens(bucket, 80, 1, reserve=reserve) == (0, pytest.approx(0.0125, abs=0.002))
    assert all(take_token(bucket, 80) == 0 for _ in range(int(reserve)))  # a reply goes at once
    assert take_token(bucket, 80) > 0  # then the number's limit holds for everyone
    slow = f"{bucket}-slow"  # a number of 2 messages a second: its broadcast keeps every token
    assert take_tokens(slow, 2, 2, reserve=bulk_reserve(2)) == (2, 0)


def test_a_conversations_messages_leave_in_the_order_they_were_written(conversation, agent, simulator):
    greeting = message_send(conversation=conversation, author=agent, text="Hi Amira")
    menu = message_send(conversation=conversation, author=agent, text="Pick one")

    with pytest.raises(SendLater):
        message_deliver(message_id=menu.id)  # a second worker picked up the later one first
    message_deliver(message_id=greeting.id)
    message_deliver(message_id=menu.id)

    sent = [m["body"]["text"]["body"] for m in simulator.get("/_simulator/outbox", phone_number_id="1000001")]
    assert sent[-2:] == ["Hi Amira", "Pick one"]
