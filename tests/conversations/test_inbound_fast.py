"""The inbound fast lane (apps/conversations/services/inbound_fast.py): a drainer's batch of plain
texts from known customers is stored set-wise, with the same outcome as the long way, and every
delivery it cannot take goes the long way, in order."""

import json

import pytest
from django.test import Client
from django.utils import timezone

from apps.analytics.models import Event
from apps.contacts.models import Contact, ContactIdentity
from apps.conversations.models import Conversation, InboundEvent, Message
from apps.conversations.services import inbound_event_process, inbound_events_drain, inbound_fast
from apps.core import realtime
from apps.core.crypto import blind_index
from apps.core.redis import get_redis
from tests.conversations.whatsapp import envelope, make_whatsapp_channel, messages_value, post_webhook, text
from tests.factories import make_workspace

AMIRA, BASSEM = "201001234567", "201009876543"


@pytest.fixture
def channel(db):
    return make_whatsapp_channel(make_workspace(name="Nile Basket", slug="nile"))


def store(channel, body: str, *, wamid: str, wa_id: str = AMIRA, name: str = "Amira", **extra) -> InboundEvent:
    response = post_webhook(
        Client(),
        channel,
        envelope(messages_value(text(body, wamid=wamid, wa_id=wa_id, **extra), wa_id=wa_id, name=name)),
    )
    assert response.status_code == 200, response.content
    return InboundEvent.objects.latest("id")


def store_value(channel, message: dict, *, wa_id: str = AMIRA) -> InboundEvent:
    response = post_webhook(Client(), channel, envelope(messages_value(message, wa_id=wa_id)))
    assert response.status_code == 200, response.content
    return InboundEvent.objects.latest("id")


def drain() -> int:
    return inbound_events_drain(slot=0, seconds=60)


def known(channel, *wa_ids):
    """Each customer has written once (the long way makes the contact and the conversation)."""
    for number, wa_id in enumerate(wa_ids):
        store(channel, "hello", wamid=f"wamid.first.{wa_id}", wa_id=wa_id, name=f"Customer {number}")
    drain()


def conversation_of(channel, wa_id: str) -> Conversation:
    identity = ContactIdentity.objects.get(channel=channel, external_id_index=blind_index(wa_id))
    return Conversation.objects.get(channel=channel, contact_id=identity.contact_id)


def lanes(channel, events):
    """Which of `events` the fast lane takes, without storing anything (rolled back)."""
    from django.db import transaction

    from apps.connectors.models import Channel

    channels = Channel.objects.in_bulk({event.channel_id for event in events})
    for event in events:
        event.channel = channels[event.channel_id]
    with transaction.atomic():
        fast, rest = inbound_fast.apply(events)
        transaction.set_rollback(True)
    return [event.pk for event in fast], [event.pk for event, _ in rest]


def test_a_batch_of_plain_texts_lands_as_the_long_way_would_store_it(db):
    """The same deliveries, drained as one batch on one channel and applied one by one on
    another: the same messages, conversations and analytics log."""
    fast_channel = make_whatsapp_channel(make_workspace(name="Fast", slug="fast"))
    slow_channel = make_whatsapp_channel(make_workspace(name="Slow", slug="slow"))
    for channel in (fast_channel, slow_channel):
        known(channel, AMIRA, BASSEM)
    script = [(AMIRA, "where is my order?"), (BASSEM, "hi"), (AMIRA, "it's been 3 days"), (AMIRA, "order 48213977")]

    for number, (wa_id, body) in enumerate(script):
        store(fast_channel, body, wamid=f"wamid.fast.{number}", wa_id=wa_id)
    fast_events = list(InboundEvent.objects.filter(channel=fast_channel, state="pending").order_by("id"))
    assert lanes(fast_channel, fast_events) == ([event.pk for event in fast_events], [])
    drain()
    for number, (wa_id, body) in enumerate(script):
        inbound_event_process(event_id=store(slow_channel, body, wamid=f"wamid.slow.{number}", wa_id=wa_id).pk)

    def outcome(channel):
        conversations = {}
        for conversation in Conversation.objects.filter(channel=channel).select_related("contact"):
            last = Message.objects.filter(conversation=conversation).latest("id")
            conversations[conversation.contact.name] = {
                "texts": list(
                    Message.objects.filter(conversation=conversation).order_by("id").values_list("text", flat=True)
                ),
                "unread": conversation.unread_count,
                "status": conversation.status,
                "cursor_at_last": conversation.automation_cursor == last.pk,
                "waiting": conversation.waiting_since is not None,
                "window_hours": round(
                    (conversation.window_expires_at - last.provider_timestamp).total_seconds() / 3600
                ),
                "inbound_at_set": conversation.last_inbound_at is not None
                and conversation.last_message_at is not None,
                "log": sorted(Event.objects.filter(conversation=conversation).values_list("kind", "by")),
            }
        return conversations

    assert outcome(fast_channel) == outcome(slow_channel)
    amira = outcome(fast_channel)["Customer 0"]
    assert amira["texts"] == ["hello", "where is my order?", "it's been 3 days", "order 48213977"]
    assert amira["unread"] == 4 and amira["status"] == "open" and amira["window_hours"] == 24
    assert set(InboundEvent.objects.values_list("state", flat=True)) == {"processed"}
    assert conversation_of(fast_channel, AMIRA).contact.last_seen_at is not None


def test_repeated_deliveries_are_stored_once_in_a_batch_and_across_batches(channel):
    known(channel, AMIRA)
    store(channel, "one", wamid="wamid.r1")
    store(channel, "one", wamid="wamid.r1")  # Meta sent it again before we answered
    drain()
    store(channel, "one", wamid="wamid.r1")  # and again, later
    store(channel, "two", wamid="wamid.r2")
    drain()

    texts = list(Message.objects.filter(channel=channel).order_by("id").values_list("text", flat=True))
    assert texts == ["hello", "one", "two"]
    assert Conversation.objects.get(channel=channel).unread_count == 3
    assert set(InboundEvent.objects.values_list("state", flat=True)) == {"processed"}


def test_what_the_fast_lane_cannot_take_goes_the_long_way_with_the_customers_other_messages(channel):
    known(channel, AMIRA, BASSEM)
    amira_text = store(channel, "look at this", wamid="wamid.a1")
    amira_image = store_value(
        channel,
        {
            "from": AMIRA,
            "id": "wamid.a2",
            "timestamp": "1700000000",
            "type": "image",
            "image": {"id": "MEDIA1", "mime_type": "image/jpeg"},
        },
    )
    bassem_text = store(channel, "hi", wamid="wamid.b1", wa_id=BASSEM)
    stranger = store(channel, "hello?", wamid="wamid.s1", wa_id="201005555555", name="New")
    quoting = store(channel, "this one", wamid="wamid.b2", wa_id=BASSEM, context={"id": "wamid.first.201009876543"})

    fast, slow = lanes(channel, [amira_text, amira_image, bassem_text, stranger, quoting])

    # Amira's text would land before her image only if both took one lane; Bassem's quote goes the
    # long way (it looks up what it quotes), so his earlier text does too.
    assert fast == [] and slow == [amira_text.pk, amira_image.pk, bassem_text.pk, stranger.pk, quoting.pk]
    assert drain() == 5
    amira = conversation_of(channel, AMIRA)
    assert list(Message.objects.filter(conversation=amira).order_by("id").values_list("kind", flat=True)) == [
        "text",
        "text",
        "media",
    ]


def test_a_closed_conversation_reopens_the_long_way(channel):
    known(channel, AMIRA, BASSEM)
    Conversation.objects.filter(pk=conversation_of(channel, AMIRA).pk).update(
        status=Conversation.Status.CLOSED, closed_at=timezone.now()
    )
    closed = store(channel, "me again", wamid="wamid.c1")
    open_ = store(channel, "hi", wamid="wamid.c2", wa_id=BASSEM)

    assert lanes(channel, [closed, open_]) == ([open_.pk], [closed.pk])
    drain()
    reopened = conversation_of(channel, AMIRA)
    assert reopened.status == "open" and reopened.closed_at is None
    assert Event.objects.filter(conversation=reopened, kind="reopened").exists()


def test_stop_and_replies_to_a_recent_broadcast_go_the_long_way(channel):
    known(channel, AMIRA, BASSEM)
    stop = store(channel, "STOP", wamid="wamid.stop")
    chat = store(channel, "hi", wamid="wamid.chat", wa_id=BASSEM)
    assert lanes(channel, [stop, chat]) == ([chat.pk], [stop.pk])
    drain()
    amira = Contact.objects.get(pk=conversation_of(channel, AMIRA).contact_id)
    assert amira.marketing_consent.get("whatsapp", {}).get("opted_in") is False


def test_during_a_campaign_only_a_first_answer_to_it_goes_the_long_way(channel):
    """A broadcast went to Amira lately: her first message is her answer to it (the long way marks
    it); her next ones, and Bassem's (who got none), are just messages."""
    from tests.broadcasts.test_results import make_broadcast, send_to

    known(channel, AMIRA, BASSEM)
    recipient = send_to(make_broadcast(channel), Contact.objects.get(pk=conversation_of(channel, AMIRA).contact_id))
    answer = store(channel, "how much?", wamid="wamid.answer")
    chat = store(channel, "hi", wamid="wamid.chat2", wa_id=BASSEM)

    assert lanes(channel, [answer, chat]) == ([chat.pk], [answer.pk])
    drain()
    recipient.refresh_from_db()
    assert recipient.replied_at is not None
    assert Message.objects.get(provider_id="wamid.answer").payload["broadcast_reply"] == recipient.broadcast_id

    more = store(channel, "and delivery?", wamid="wamid.more")
    assert lanes(channel, [more]) == ([more.pk], [])
    drain()
    assert "broadcast_reply" not in Message.objects.get(provider_id="wamid.more").payload


def test_a_batch_reaches_the_workspace_stream_in_order(channel, django_capture_on_commit_callbacks):
    """realtime.batched: the events are appended to the workspace's stream together, in order
    (each web process reads them there for its sockets: tests/core/test_realtime.py)."""
    known(channel, AMIRA, BASSEM)
    before = realtime.last_event_id(channel.workspace_id)
    store(channel, "first", wamid="wamid.e1")
    store(channel, "second", wamid="wamid.e2", wa_id=BASSEM)
    with django_capture_on_commit_callbacks(execute=True):
        drain()

    events = realtime.events_since(channel.workspace_id, before)
    created = [event["payload"]["message"]["text"] for event in events if event["type"] == "message.created"]
    assert created == ["first", "second"]
    assert {event["type"] for event in events} == {"message.created", "conversation.updated"}
    updated = [event for event in events if event["type"] == "conversation.updated"]
    assert {event["payload"]["conversation"]["unread_count"] for event in updated} == {2}
    raw = get_redis().xrevrange(realtime.stream_key(channel.workspace_id), count=1)[0][1][b"event"]
    assert json.loads(raw)["workspace_id"] == channel.workspace_id


# Statuses -------------------------------------------------------------------------------------


def test_a_batch_of_statuses_lands_as_the_long_way_would_apply_it(db):
    """A broadcast's and an operator's messages, their statuses out of order, a failure before and
    after delivery: drained as one batch on one channel, one by one on another, the same states,
    times, reasons and broadcast funnel."""
    import time

    from apps.broadcasts.models import Recipient
    from tests.broadcasts.test_results import make_broadcast, make_contact, send_to
    from tests.conversations.whatsapp import status, statuses_value

    now = int(time.time())
    error = [{"code": 131026, "title": "Message undeliverable"}]

    def world(slug):
        channel = make_whatsapp_channel(make_workspace(name=slug, slug=slug))
        broadcast = make_broadcast(channel)
        recipients = [
            send_to(broadcast, make_contact(channel.workspace, name=f"Customer {n}", phone=f"+20100555000{n}"))
            for n in range(3)
        ]
        Message.objects.create(
            workspace=channel.workspace,
            conversation=recipients[0].message.conversation,
            channel=channel,
            direction="out",
            sender_kind="agent",
            text="Your order left",
            state="sent",
            provider_id=f"wamid.{slug}.reply",
        )
        return channel, [r.message.provider_id for r in recipients] + [f"wamid.{slug}.reply"]

    def script(ids):
        first, second, third, reply = ids
        return [
            status(first, "read", ts=now - 5),
            status(first, "delivered", ts=now - 8),  # late: read implies it, its time is kept
            status(second, "failed", ts=now - 7, errors=error),
            status(second, "delivered", ts=now - 6),  # after a failure: ignored
            status(third, "delivered", ts=now - 9),
            status(third, "failed", ts=now - 4, errors=error),  # after delivery: ignored
            status(reply, "delivered", ts=now - 3),
        ]

    fast_channel, fast_ids = world("fast")
    slow_channel, slow_ids = world("slow")
    for item in script(fast_ids):
        post_webhook(Client(), fast_channel, envelope(statuses_value(item)))
    events = list(InboundEvent.objects.filter(channel=fast_channel, state="pending").order_by("id"))
    assert lanes(fast_channel, events) == ([event.pk for event in events], [])
    drain()
    for item in script(slow_ids):
        post_webhook(Client(), slow_channel, envelope(statuses_value(item)))
        inbound_event_process(event_id=InboundEvent.objects.latest("id").pk)

    def outcome(channel, ids):
        messages = {m.provider_id: m for m in Message.objects.filter(channel=channel, provider_id__in=ids)}
        recipients = {
            r.message.provider_id: r
            for r in Recipient.objects.filter(message__provider_id__in=ids).select_related("message")
        }
        shown = []
        for position, provider_id in enumerate(ids):
            m, r = messages[provider_id], recipients.get(provider_id)
            shown.append(
                (
                    position,
                    m.state,
                    m.delivered_at,
                    m.read_at,
                    m.failed_at,
                    m.error_code,
                    m.error_reason,
                    r and (r.state, r.delivered_at, r.read_at, r.failed_at, r.reason),
                )
            )
        return shown

    assert outcome(fast_channel, fast_ids) == outcome(slow_channel, slow_ids)
    first, second, third, reply = outcome(fast_channel, fast_ids)
    assert first[1] == "read" and first[7][0] == "read" and first[7][1] is not None
    assert second[1] == "failed" and second[5] == "131026" and second[7][0] == "failed"
    assert third[1] == "delivered" and third[7][0] == "delivered"
    assert reply[1] == "delivered" and reply[7] is None
    assert set(InboundEvent.objects.values_list("state", flat=True)) == {"processed"}


def test_a_status_of_a_message_not_recorded_yet_goes_the_long_way_and_is_tried_again(channel):
    from tests.conversations.whatsapp import status, statuses_value

    known(channel, AMIRA)
    conversation = conversation_of(channel, AMIRA)
    sent = Message.objects.create(
        workspace=channel.workspace,
        conversation=conversation,
        channel=channel,
        direction="out",
        sender_kind="agent",
        text="hi",
        state="sent",
        provider_id="wamid.out.1",
    )
    post_webhook(Client(), channel, envelope(statuses_value(status(sent.provider_id, "delivered"))))
    known_status = InboundEvent.objects.latest("id")
    unknown = post_webhook(Client(), channel, envelope(statuses_value(status("wamid.not.yet", "delivered"))))
    assert unknown.status_code == 200
    unknown_event = InboundEvent.objects.latest("id")

    assert lanes(channel, [known_status, unknown_event]) == ([known_status.pk], [unknown_event.pk])
    drain()
    sent.refresh_from_db()
    unknown_event.refresh_from_db()
    assert sent.state == "delivered"
    assert unknown_event.state == "pending"  # the single-event task tries it again shortly


def test_a_drainer_goes_on_when_a_batch_s_channel_is_deleted_under_it(channel):
    """The drainer reads a batch's deliveries, then their channels: a channel deleted in between
    (its deliveries go with it, on delete cascade) left a KeyError that stopped the drainer, and
    inbound waited two minutes for its slot. Here the channel's row is gone while its delivery
    is still read (a foreign key is checked at commit), as the second read sees it after a delete."""
    from django.db import connection

    other = make_whatsapp_channel(make_workspace(name="Gone", slug="gone"))
    gone = store(other, "hello", wamid="wamid.gone.1")
    kept = store(channel, "hello", wamid="wamid.kept.1")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM connectors_channel WHERE id = %s", [other.pk])

    assert drain() == 2

    assert Message.objects.filter(provider_id="wamid.kept.1").count() == 1
    assert not Message.objects.filter(provider_id="wamid.gone.1").exists()
    assert InboundEvent.objects.get(pk=kept.pk).state == "processed"
    with connection.cursor() as cursor:  # what the cascade would have removed
        cursor.execute("DELETE FROM conversations_inboundevent WHERE id = %s", [gone.pk])


def test_a_drainer_that_fails_on_a_bug_gives_its_slot_back(channel, monkeypatch):
    """Only a database or Redis outage keeps a drainer's slot (it retries); anything else is a bug:
    the task fails for the log, and its slot is free at once instead of after its two-minute
    expiry, during which no inbound would be applied."""
    from apps.conversations.services import messages
    from apps.conversations.services.messages import _drain_slot_key
    from apps.conversations.tasks import drain_inbound_events

    event = store(channel, "hello", wamid="wamid.bug.1")
    slot = _drain_slot_key(0)
    get_redis().set(slot, "1", ex=120)  # taken, as inbound_drain_kick takes it

    def bug(events):
        raise RuntimeError("a bug in the drainer")

    monkeypatch.setattr(messages, "_batch_apply", bug)  # a stand-in for any bug past the claim
    result = drain_inbound_events.apply(args=(0,))

    assert result.failed() and isinstance(result.result, RuntimeError)
    assert not get_redis().exists(slot)
    event.refresh_from_db()
    assert (event.state, event.attempts) == ("pending", 1)  # claimed: tried again after the claim expires
