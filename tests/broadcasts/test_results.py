"""What a broadcast achieved: provider statuses through the real webhook pipeline, replies, STOP /
START, conversions from the order API's service, and the figures the progress and report pages
show. Broadcasts and recipients are made here by hand, as the sender would leave them."""

import csv
import io
import itertools
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.broadcasts import results
from apps.broadcasts.models import Broadcast, BroadcastSettings, Recipient
from apps.connectors.base import StatusUpdate
from apps.connectors.models import MessageTemplate
from apps.contacts.models import Contact
from apps.contacts.services import contact_index, order_upsert
from apps.conversations.models import Conversation, InboundEvent, Message
from apps.conversations.services.messages import conversation_for_outbound, delivery_status_apply, message_send
from apps.core import realtime
from apps.core.redis import get_redis, key
from tests.conversations.whatsapp import (
    envelope,
    make_whatsapp_channel,
    messages_value,
    post_webhook,
    status,
    statuses_value,
    text,
)
from tests.factories import make_workspace

pytestmark = pytest.mark.django_db

WA_ID = "201001234567"
_wamids = itertools.count(1)


@pytest.fixture
def channel():
    return make_whatsapp_channel(make_workspace(name="Nile Basket", slug="nile"))


@pytest.fixture
def amira(channel):
    return make_contact(channel.workspace, name="Amira Hassan", phone=f"+{WA_ID}")


@pytest.fixture
def broadcast(channel):
    return make_broadcast(channel)


def make_contact(workspace, *, name: str, phone: str = "", **fields) -> Contact:
    contact = Contact(workspace=workspace, name=name, phone=phone, **fields)
    contact_index(contact)
    contact.save()
    return contact


def make_broadcast(channel, **fields) -> Broadcast:
    template, _ = MessageTemplate.objects.get_or_create(
        workspace=channel.workspace,
        channel=channel,
        name="spring_sale",
        defaults={"body": "Hi {{1}}, 20% off fruit this week.", "category": "marketing"},
    )
    fields.setdefault("name", "Spring sale")
    fields.setdefault("state", Broadcast.State.RUNNING)
    fields.setdefault("started_at", timezone.now() - timedelta(minutes=5))
    return Broadcast.objects.create(workspace=channel.workspace, channel=channel, template=template, **fields)


def send_to(broadcast, contact, *, sent_at=None) -> Recipient:
    """What the sender does for one person: the template goes out carrying its broadcast and
    recipient, the provider takes it (a wamid), and the recipient is marked sent."""
    recipient = Recipient.objects.create(
        workspace=broadcast.workspace,
        broadcast=broadcast,
        contact=contact,
        dedupe_key=contact.phone_index or f"c{contact.pk}",
        parameters=[contact.first_name],
    )
    conversation = conversation_for_outbound(contact=contact, channel=broadcast.channel)
    message = message_send(
        conversation=conversation,
        kind="template",
        payload={
            "template_id": broadcast.template_id,
            "parameters": recipient.parameters,
            "broadcast_id": broadcast.pk,
            "recipient_id": recipient.pk,
        },
        sender_kind="system",
    )
    sent_at = sent_at or timezone.now()
    Message.objects.filter(pk=message.pk).update(state="sent", provider_id=f"wamid.B{next(_wamids)}", sent_at=sent_at)
    message.refresh_from_db()
    Recipient.objects.filter(pk=recipient.pk).update(message=message, state="sending")
    results.recipient_status_apply(message=message, state="sent", at=sent_at)
    recipient.refresh_from_db()
    return recipient


def deliver(body, channel):
    """Posts a webhook and applies the stored delivery as the worker would."""
    response = post_webhook(Client(), channel, body)
    assert response.status_code == 200, response.content
    from apps.conversations.services import inbound_event_process

    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)


def statuses(channel, *items):
    deliver(envelope(statuses_value(*items)), channel)


def customer_says(channel, body: str, *, wamid: str | None = None, **extra) -> Message | None:
    wamid = wamid or f"wamid.IN{next(_wamids)}"
    deliver(envelope(messages_value(text(body, wamid=wamid, wa_id=WA_ID, **extra), wa_id=WA_ID)), channel)
    return Message.objects.filter(provider_id=wamid).first()


def seconds_ago(seconds: int) -> int:
    return int(time.time()) - seconds


# Statuses ------------------------------------------------------------------------------------


def test_statuses_from_the_webhook_move_the_recipient_up_with_their_times(channel, amira, broadcast):
    recipient = send_to(broadcast, amira, sent_at=timezone.now() - timedelta(seconds=40))
    wamid = recipient.message.provider_id

    statuses(channel, status(wamid, "sent", ts=seconds_ago(30)))
    statuses(channel, status(wamid, "delivered", ts=seconds_ago(20)))
    recipient.refresh_from_db()
    assert (recipient.state, recipient.read_at) == ("delivered", None)
    assert timezone.now() - recipient.delivered_at < timedelta(seconds=25)

    statuses(channel, status(wamid, "read", ts=seconds_ago(10)))

    recipient.refresh_from_db()
    assert recipient.state == "read"
    assert recipient.sent_at <= recipient.delivered_at <= recipient.read_at


def test_statuses_out_of_order_keep_the_highest_state_and_a_read_implies_delivered(channel, amira, broadcast):
    recipient = send_to(broadcast, amira)
    wamid = recipient.message.provider_id

    statuses(channel, status(wamid, "read", ts=seconds_ago(5)))
    statuses(channel, status(wamid, "delivered", ts=seconds_ago(10)), status(wamid, "sent", ts=seconds_ago(15)))

    recipient.refresh_from_db()
    assert recipient.state == "read"
    assert recipient.delivered_at == recipient.read_at  # the conversion window has its start
    assert recipient.message.state == "read"


def test_a_broadcasts_statuses_reach_its_progress_not_every_operators_socket(
    channel, amira, broadcast, django_capture_on_commit_callbacks
):
    recipient = send_to(broadcast, amira)
    conversation = recipient.message.conversation
    chat = Message.objects.create(  # an ordinary message in the same conversation, already sent
        workspace=conversation.workspace,
        conversation=conversation,
        channel=channel,
        direction="out",
        sender_kind="agent",
        text="Hello",
        provider_id="wamid.CHAT1",
        state="sent",
    )
    last = realtime.last_event_id(channel.workspace_id)

    with django_capture_on_commit_callbacks(execute=True):
        statuses(channel, status(recipient.message.provider_id, "delivered"), status("wamid.CHAT1", "delivered"))

    published = [e for e in realtime.events_since(channel.workspace_id, last) if e["type"] == "message.status"]
    assert [e["payload"]["message_id"] for e in published] == [chat.pk]  # the chat message's tick moves live
    recipient.refresh_from_db()
    assert recipient.state == "delivered"


def test_a_failure_after_sending_keeps_the_reason_and_one_after_delivery_is_ignored(channel, broadcast):
    omar = make_contact(channel.workspace, name="Omar", phone="+201009999999")
    amira = make_contact(channel.workspace, name="Amira", phone=f"+{WA_ID}")
    failing, delivered = send_to(broadcast, omar), send_to(broadcast, amira)
    error = {"code": 131049, "title": "Not delivered to maintain healthy ecosystem engagement"}
    statuses(channel, status(delivered.message.provider_id, "delivered"))

    statuses(
        channel,
        status(failing.message.provider_id, "failed", errors=[error]),
        status(delivered.message.provider_id, "failed", errors=[error]),
    )

    failing.refresh_from_db()
    delivered.refresh_from_db()
    assert failing.state == "failed" and failing.failed_at is not None
    assert failing.reason == "131049: Not delivered to maintain healthy ecosystem engagement"
    assert (delivered.state, delivered.reason) == ("delivered", "")


def test_a_read_watermark_on_messenger_moves_a_broadcasts_recipient(db):
    from tests.connectors import messenger_payloads as meta

    channel = meta.make_meta_channel(make_workspace(slug="meta"), "messenger")
    response = meta.post_webhook(Client(), channel, meta.envelope("messenger", meta.text("hi", mid="m_in")))
    assert response.status_code == 200
    from apps.conversations.services import inbound_event_process

    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)
    conversation = Conversation.objects.get()
    broadcast = make_broadcast(channel)
    recipient = Recipient.objects.create(
        workspace=channel.workspace, broadcast=broadcast, contact=conversation.contact, dedupe_key="c1", state="sent"
    )
    message = Message.objects.create(
        workspace=channel.workspace,
        conversation=conversation,
        channel=channel,
        direction="out",
        sender_kind="system",
        kind="template",
        payload={"broadcast_id": broadcast.pk, "recipient_id": recipient.pk},
        provider_id="m_out",
        state="sent",
        sent_at=timezone.now() - timedelta(minutes=10),
    )
    Recipient.objects.filter(pk=recipient.pk).update(message=message, sent_at=message.sent_at)
    watermark = int((timezone.now() - timedelta(minutes=1)).timestamp() * 1000)

    meta.post_webhook(Client(), channel, meta.envelope("messenger", meta.read(watermark=watermark)))
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)

    recipient.refresh_from_db()
    assert (recipient.state, recipient.delivered_at is not None) == ("read", True)


def test_a_status_of_a_message_that_is_not_a_broadcasts_costs_no_extra_query(
    channel, amira, broadcast, django_assert_max_num_queries
):
    conversation = conversation_for_outbound(contact=amira, channel=channel)
    Message.objects.create(
        workspace=channel.workspace,
        conversation=conversation,
        channel=channel,
        direction="out",
        sender_kind="agent",
        text="Your order has shipped",
        provider_id="wamid.PLAIN",
        state="sent",
    )
    for state in ("delivered", "delivered", "read"):
        # Before broadcasts: the conditional UPDATE, then the row (to publish) or its existence.
        with django_assert_max_num_queries(2):
            delivery_status_apply(
                channel=channel, update=StatusUpdate(provider_id="wamid.PLAIN", state=state, timestamp=timezone.now())
            )
    assert Message.objects.get(provider_id="wamid.PLAIN").state == "read"


# Replies -------------------------------------------------------------------------------------


def test_a_reply_within_the_window_marks_the_broadcast_replied_and_links_the_message(channel, amira, broadcast):
    recipient = send_to(broadcast, amira, sent_at=timezone.now() - timedelta(hours=2))

    reply = customer_says(channel, "Is the mango offer still on?")
    second = customer_says(channel, "And the grapes?")

    recipient.refresh_from_db()
    assert recipient.replied_at == reply.created_at
    assert reply.reply_to_id == recipient.message_id
    assert reply.payload["broadcast_reply"] == broadcast.pk
    # The rest of the chat is a chat: not each message a "reply to the broadcast".
    assert second.reply_to_id is None and "broadcast_reply" not in second.payload
    assert reply.conversation_id == recipient.message.conversation_id
    assert Conversation.objects.get().unread_count == 2


def test_the_inbox_hears_of_the_reply_as_a_reply_to_the_broadcast(
    channel, amira, broadcast, django_capture_on_commit_callbacks
):
    recipient = send_to(broadcast, amira)
    last = realtime.last_event_id(channel.workspace_id)

    with django_capture_on_commit_callbacks(execute=True):
        customer_says(channel, "Yes please")

    created = [e for e in realtime.events_since(channel.workspace_id, last) if e["type"] == "message.created"]
    reply = created[-1]["payload"]["message"]
    assert reply["reply_to_id"] == recipient.message_id and reply["payload"]["broadcast_reply"] == broadcast.pk
    assert reply["payload"]["broadcast_name"] == broadcast.name  # the inbox says "Reply to broadcast <name>"


def test_a_reply_after_the_window_is_just_a_message(channel, amira, broadcast):
    recipient = send_to(broadcast, amira, sent_at=timezone.now() - timedelta(hours=73))

    reply = customer_says(channel, "Hello?")

    recipient.refresh_from_db()
    assert recipient.replied_at is None
    assert reply.reply_to_id is None and "broadcast_reply" not in reply.payload


def test_a_reply_quoting_an_older_message_keeps_its_quote(channel, amira, broadcast):
    recipient = send_to(broadcast, amira)
    first = customer_says(channel, "hi")
    quoting = customer_says(channel, "about this", context={"id": first.provider_id})

    first.refresh_from_db()
    assert first.reply_to_id == recipient.message_id
    assert quoting.reply_to_id == first.id and "broadcast_reply" not in quoting.payload


def test_a_reply_to_a_broadcast_still_starts_a_workflow(channel, amira, broadcast):
    from apps.workflows import services
    from apps.workflows.definition import workflow_import

    workflow_import(
        workspace=channel.workspace,
        definition={
            "name": "Promo answers",
            "trigger": "message",
            "trigger_settings": {"keywords": ["mango"]},
            "steps": [{"key": "say", "kind": "message", "settings": {"text": "Mangoes are 20% off until Sunday."}}],
        },
    )
    send_to(broadcast, amira)

    reply = customer_says(channel, "mango?")
    services.conversation_advance(conversation_id=reply.conversation_id, opened_message_id=None, message_id=reply.id)

    assert reply.payload["broadcast_reply"] == broadcast.pk
    bot = Message.objects.filter(conversation=reply.conversation, sender_kind="bot").get()
    assert bot.text == "Mangoes are 20% off until Sunday."


# STOP / START --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "language", "confirmation"),
    [
        ("STOP", "", "You will no longer receive promotions from us here."),
        (" Стоп! ", "ru", "Вы отписались от рассылок."),
        ("إيقاف", "ar", "لن تصلك عروضنا بعد الآن."),
    ],
)
def test_stop_opts_out_on_that_channel_only_and_confirms_once_in_the_customers_language(
    channel, amira, broadcast, word, language, confirmation
):
    Contact.objects.filter(pk=amira.pk).update(
        language=language,
        marketing_consent={"whatsapp": {"opted_in": True, "at": "2025-01-01"}, "email": {"opted_in": True}},
    )
    send_to(broadcast, amira)
    body = envelope(messages_value(text(word, wamid="wamid.STOP", wa_id=WA_ID), wa_id=WA_ID))

    for _ in range(2):  # the provider delivers it twice
        deliver(body, channel)

    amira.refresh_from_db()
    assert amira.marketing_consent["whatsapp"]["opted_in"] is False
    assert amira.marketing_consent["whatsapp"]["source"] == "reply"
    assert amira.marketing_consent["email"] == {"opted_in": True}
    confirmations = Message.objects.filter(direction="out", sender_kind="system", kind="text")
    assert confirmations.count() == 1
    assert confirmations.get().text.startswith(confirmation)
    assert confirmations.get().state == "queued"  # the worker sends it like any reply


def test_start_opts_the_customer_in_again(channel, amira):
    BroadcastSettings.objects.create(workspace=channel.workspace, start_words=["start", "старт"])
    customer_says(channel, "stop")
    amira.refresh_from_db()
    assert amira.marketing_consent["whatsapp"]["opted_in"] is False

    customer_says(channel, "Start.")

    amira.refresh_from_db()
    assert amira.marketing_consent["whatsapp"]["opted_in"] is True
    assert Message.objects.filter(direction="out").count() == 1  # only the opt-out was confirmed


def test_a_sentence_with_stop_in_it_is_not_an_opt_out(channel, amira):
    Contact.objects.filter(pk=amira.pk).update(marketing_consent={"whatsapp": {"opted_in": True}})

    customer_says(channel, "Please stop the delivery, I am not home")

    amira.refresh_from_db()
    assert amira.marketing_consent == {"whatsapp": {"opted_in": True}}
    assert not Message.objects.filter(direction="out").exists()


def test_the_stop_button_of_a_marketing_template_opts_out(channel, amira, broadcast):
    send_to(broadcast, amira)
    button = {
        "from": WA_ID,
        "id": "wamid.BTN",
        "timestamp": str(int(time.time())),
        "type": "button",
        "button": {"payload": "STOP", "text": "Stop promotions"},
    }

    deliver(envelope(messages_value(button, wa_id=WA_ID)), channel)

    amira.refresh_from_db()
    assert amira.marketing_consent["whatsapp"]["opted_in"] is False


def test_the_workspaces_own_stop_words_are_used(channel, amira):
    BroadcastSettings.objects.create(workspace=channel.workspace, stop_words=["basta"], stop_confirmation={})

    customer_says(channel, "STOP")
    amira.refresh_from_db()
    assert "whatsapp" not in amira.marketing_consent

    customer_says(channel, "Basta!!")
    amira.refresh_from_db()
    assert amira.marketing_consent["whatsapp"]["opted_in"] is False
    assert not Message.objects.filter(direction="out").exists()  # no confirmation text configured


def test_the_confirmation_falls_back_from_a_regional_language_to_its_base_then_english():
    texts = {"en": "bye", "ru": "пока", "zh-Hant": "再見"}
    assert results.confirmation_text(texts, "ru_RU") == "пока"
    assert results.confirmation_text(texts, "zh-hant") == "再見"
    assert results.confirmation_text(texts, "zh") == "再見"
    assert results.confirmation_text(texts, "de") == "bye"
    assert results.confirmation_text({}, "en") == ""


# Conversions ---------------------------------------------------------------------------------


def delivered(recipient, *, hours_ago: float) -> Recipient:
    at = timezone.now() - timedelta(hours=hours_ago)
    Recipient.objects.filter(pk=recipient.pk).update(sent_at=at, delivered_at=at, state="delivered")
    recipient.refresh_from_db()
    return recipient


def order(workspace, contact, number: str, status: str = "paid", **data):
    placed, _ = order_upsert(
        workspace_id=workspace.pk, data={"external_id": number, "status": status, **data}, contact=contact
    )
    return placed


def test_a_paid_order_within_the_window_converts_the_latest_delivered_broadcast(channel, amira, broadcast):
    older = delivered(send_to(make_broadcast(channel, name="Older"), amira), hours_ago=30)
    latest = delivered(send_to(broadcast, amira), hours_ago=20)

    placed = order(channel.workspace, amira, "NB-1001", total="42.50")

    latest.refresh_from_db()
    older.refresh_from_db()
    assert (latest.order_id, latest.converted_at) == (placed.pk, placed.placed_at)
    assert older.converted_at is None


def test_an_order_outside_the_window_or_before_delivery_does_not_convert(channel, amira, broadcast):
    BroadcastSettings.objects.create(workspace=channel.workspace, conversion_window_hours=24)
    recipient = delivered(send_to(broadcast, amira), hours_ago=30)

    order(channel.workspace, amira, "NB-1002")
    order(channel.workspace, amira, "NB-1003", placed_at=timezone.now() - timedelta(hours=31))

    recipient.refresh_from_db()
    assert recipient.converted_at is None and recipient.order_id is None


def test_an_order_converts_one_broadcast_once_and_a_cancelled_order_is_taken_back(channel, amira, broadcast):
    older = delivered(send_to(make_broadcast(channel, name="Older"), amira), hours_ago=30)
    latest = delivered(send_to(broadcast, amira), hours_ago=20)

    placed = order(channel.workspace, amira, "NB-1004", status="created")
    order(channel.workspace, amira, "NB-1004", status="paid")  # the same order, paid: no second conversion

    older.refresh_from_db()
    assert Recipient.objects.get(pk=latest.pk).order_id == placed.pk and older.converted_at is None

    order(channel.workspace, amira, "NB-1004", status="refunded")

    assert not Recipient.objects.filter(converted_at__isnull=False).exists()


def test_someone_elses_order_does_not_convert(channel, amira, broadcast):
    recipient = delivered(send_to(broadcast, amira), hours_ago=1)
    omar = make_contact(channel.workspace, name="Omar", phone="+201009999999")

    order(channel.workspace, omar, "NB-2001")
    order_upsert(workspace_id=channel.workspace_id, data={"external_id": "NB-2002", "status": "paid"})

    recipient.refresh_from_db()
    assert recipient.converted_at is None


# Stats and the report ------------------------------------------------------------------------


def hand_made(broadcast, rows) -> list[Recipient]:
    """Recipients as a half-sent broadcast leaves them: (state, reason, extra fields) each."""
    workspace = broadcast.workspace
    contacts = Contact.objects.bulk_create(
        [Contact(workspace=workspace, name=f"Customer {n}", phone=f"+2010055{n:05d}") for n in range(len(rows))]
    )
    return Recipient.objects.bulk_create(
        [
            Recipient(
                workspace=workspace,
                broadcast=broadcast,
                contact=contact,
                dedupe_key=f"c{contact.pk}",
                state=state,
                reason=reason,
                **fields,
            )
            for contact, (state, reason, fields) in zip(contacts, rows, strict=True)
        ]
    )


@pytest.fixture
def half_sent(broadcast):
    now = timezone.now()
    recent, earlier = now - timedelta(seconds=10), now - timedelta(minutes=3)
    converted = {"converted_at": now}
    rows = [
        *[("queued", "", {})] * 60,
        *[("skipped", "weekly cap", {})] * 5,
        *[("skipped", "not opted in", {})] * 3,
        *[("sent", "", {"sent_at": recent})] * 12,
        *[("delivered", "", {"sent_at": earlier, "delivered_at": earlier})] * 8,
        *[("read", "", {"sent_at": earlier, "delivered_at": earlier, "read_at": earlier})] * 4,
        ("read", "", {"sent_at": earlier, "delivered_at": earlier, "read_at": earlier, "replied_at": now}),
        ("read", "", {"sent_at": recent, "delivered_at": recent, "read_at": now, "replied_at": now, **converted}),
        *[("failed", "131049: Not delivered to maintain healthy ecosystem engagement", {"sent_at": recent})] * 4,
        *[("failed", "131026: Message undeliverable", {})] * 2,
    ]
    return hand_made(broadcast, rows)


def test_stats_count_states_reasons_replies_conversions_rate_and_eta(broadcast, half_sent):
    stats = results.broadcast_stats(broadcast=broadcast)

    assert stats["counts"] == {
        "queued": 60,
        "skipped": 8,
        "sending": 0,
        "sent": 12,
        "delivered": 8,
        "read": 6,
        "failed": 6,
    }
    assert (stats["total"], stats["replied"], stats["converted"]) == (100, 2, 1)
    assert stats["skipped_by_reason"] == [
        {"reason": "weekly cap", "count": 5},
        {"reason": "not opted in", "count": 3},
    ]
    assert stats["failed_by_reason"][0] == {
        "reason": "131049: Not delivered to maintain healthy ecosystem engagement",
        "count": 4,
    }
    # 12 sent + 1 read + 4 failed in the last minute: 17 / 60 s; 60 queued at that pace.
    assert stats["rate"] == 0.3
    assert stats["eta_seconds"] == round(60 / (17 / 60))
    assert stats["started_at"] == broadcast.started_at.isoformat() and stats["finished_at"] is None


def test_stats_take_two_queries_and_no_eta_once_paused(broadcast, half_sent, django_assert_num_queries):
    Broadcast.objects.filter(pk=broadcast.pk).update(state="paused")
    broadcast.refresh_from_db()

    with django_assert_num_queries(2):
        stats = results.broadcast_stats(broadcast=broadcast)

    assert stats["eta_seconds"] is None and stats["state"] == "paused"


def test_stats_of_an_empty_broadcast(broadcast, django_assert_num_queries):
    with django_assert_num_queries(1):
        stats = results.broadcast_stats(broadcast=broadcast)
    assert (stats["total"], stats["rate"], stats["eta_seconds"], stats["failed_by_reason"]) == (0, 0.0, None, [])


def test_the_funnel_counts_each_step_reached_as_a_share_of_those_sent(broadcast, half_sent):
    funnel = results.broadcast_funnel(broadcast=broadcast)

    # 92 queued (8 skipped never were); sent = 12 + 8 + 6 + 4 failed after sending.
    assert [(step["stage"], step["count"], step["percent"]) for step in funnel] == [
        ("queued", 92, None),
        ("sent", 30, 100.0),
        ("delivered", 14, 46.7),
        ("read", 6, 20.0),
        ("replied", 2, 6.7),
        ("converted", 1, 3.3),
    ]
    assert funnel[0]["label"] == "Queued"


def test_failures_by_reason_commonest_first(broadcast, half_sent):
    assert results.broadcast_failures(broadcast=broadcast) == [
        {"reason": "131049: Not delivered to maintain healthy ecosystem engagement", "count": 4, "percent": 66.7},
        {"reason": "131026: Message undeliverable", "count": 2, "percent": 33.3},
    ]


def test_the_csv_has_every_recipient_with_the_phone_in_clear_and_times_in_the_workspace_zone(channel, broadcast):
    workspace = channel.workspace
    workspace.timezone = "Africa/Cairo"
    workspace.save(update_fields=["timezone"])
    amira = make_contact(workspace, name="=HYPERLINK(evil)", phone=f"+{WA_ID}")
    converted = delivered(send_to(broadcast, amira), hours_ago=2)
    placed = order(workspace, amira, "NB-3001")
    hand_made(broadcast, [("failed", "131026: Message undeliverable", {}), ("skipped", "weekly cap", {})])
    broadcast.refresh_from_db()

    lines = list(results.broadcast_recipients_csv(broadcast=broadcast))

    rows = list(csv.reader(io.StringIO("".join(lines))))
    assert len(lines) == 4
    assert rows[0] == [
        "Name",
        "Phone",
        "State",
        "Reason",
        "Sent",
        "Delivered",
        "Read",
        "Failed",
        "Replied",
        "Converted",
        "Order",
    ]
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["Name"] == "'=HYPERLINK(evil)"  # kept as text in a spreadsheet
    assert (first["Phone"], first["State"], first["Order"]) == (f"+{WA_ID}", "delivered", "NB-3001")
    cairo = converted.delivered_at.astimezone(workspace.tz)
    assert first["Delivered"] == cairo.isoformat(sep=" ", timespec="seconds")
    assert first["Converted"] == placed.placed_at.astimezone(workspace.tz).isoformat(sep=" ", timespec="seconds")
    assert rows[2][2:4] == ["failed", "131026: Message undeliverable"] and rows[2][4] == ""
    assert rows[3][1] == "+201005500001" and rows[3][3] == "weekly cap"


# Live progress -------------------------------------------------------------------------------


def progress_events(workspace_id, since):
    return [e for e in realtime.events_since(workspace_id, since) if e["type"] == "broadcast.progress"]


@pytest.fixture
def fresh_throttle(broadcast):
    get_redis().delete(key("broadcast-progress", broadcast.pk), key("broadcast-progress-due", broadcast.pk))
    yield
    get_redis().delete(key("broadcast-progress", broadcast.pk), key("broadcast-progress-due", broadcast.pk))


def test_progress_reaches_the_workspace_after_commit_with_the_stats(
    broadcast, half_sent, fresh_throttle, django_capture_on_commit_callbacks
):
    last = realtime.last_event_id(broadcast.workspace_id)

    with django_capture_on_commit_callbacks() as callbacks:
        assert results.broadcast_progress_publish(broadcast=broadcast) is True
    assert progress_events(broadcast.workspace_id, last) == []  # nothing before the commit
    for callback in callbacks:
        callback()

    (event,) = progress_events(broadcast.workspace_id, last)
    assert event["payload"] == results.broadcast_stats(broadcast=broadcast)
    assert event["payload"]["counts"]["queued"] == 60


def test_progress_is_published_at_most_once_a_second_and_then_again(
    broadcast, fresh_throttle, django_capture_on_commit_callbacks
):
    last = realtime.last_event_id(broadcast.workspace_id)

    with django_capture_on_commit_callbacks(execute=True):
        published = [results.broadcast_progress_publish(broadcast=broadcast) for _ in range(5)]
    assert published == [True, False, False, False, False]
    assert len(progress_events(broadcast.workspace_id, last)) == 1
    # The calls inside the second asked for one trailing publish (the task runs it a second later).
    assert get_redis().exists(key("broadcast-progress-due", broadcast.pk))

    results.broadcast_progress_flush(broadcast_id=broadcast.pk)
    assert len(progress_events(broadcast.workspace_id, last)) == 2
    assert not results.broadcast_progress_publish(broadcast=broadcast)  # the flush took this second

    time.sleep(1.05)
    with django_capture_on_commit_callbacks(execute=True):
        assert results.broadcast_progress_publish(broadcast=broadcast) is True
        assert results.broadcast_progress_publish(broadcast=broadcast, force=True) is True
    assert len(progress_events(broadcast.workspace_id, last)) == 4


def test_a_count_that_takes_long_puts_the_next_off_longer_than_a_second(
    broadcast, fresh_throttle, django_capture_on_commit_callbacks, monkeypatch
):
    """A large audience's count costs PostgreSQL tens of milliseconds: the next waits
    PROGRESS_DUTY times as long, and the trailing publish is put off until then, not dropped."""
    monkeypatch.setattr(results, "PROGRESS_DUTY", 1_000_000)  # any count "takes long"
    last = realtime.last_event_id(broadcast.workspace_id)

    with django_capture_on_commit_callbacks(execute=True):
        assert results.broadcast_progress_publish(broadcast=broadcast) is True
    paused = get_redis().pttl(key("broadcast-progress", broadcast.pk))
    results.broadcast_progress_flush(broadcast_id=broadcast.pk)

    assert paused > results.PROGRESS_EVERY_MS
    assert len(progress_events(broadcast.workspace_id, last)) == 1  # the flush counted nothing
    # It is queued again for after the pause, and no other trailing publish is queued meanwhile.
    assert get_redis().pttl(key("broadcast-progress-due", broadcast.pk)) > 3 * results.PROGRESS_EVERY_MS


def test_statuses_publish_progress_without_a_flood(
    channel, amira, broadcast, fresh_throttle, django_capture_on_commit_callbacks
):
    recipient = send_to(broadcast, amira)
    get_redis().delete(key("broadcast-progress", broadcast.pk))
    last = realtime.last_event_id(channel.workspace_id)

    with django_capture_on_commit_callbacks(execute=True):
        statuses(channel, status(recipient.message.provider_id, "delivered"))
        statuses(channel, status(recipient.message.provider_id, "read"))

    (event,) = progress_events(channel.workspace_id, last)
    assert event["payload"]["broadcast_id"] == broadcast.pk
    assert event["payload"]["counts"]["delivered"] + event["payload"]["counts"]["read"] == 1


def test_the_progress_event_has_a_schema():
    from apps.core.events import UnknownEvent, build_event

    with pytest.raises(UnknownEvent):
        build_event("broadcast.progress", broadcast_id=1)


def test_a_message_that_is_not_a_broadcasts_moves_no_recipient(channel, amira, broadcast):
    conversation = conversation_for_outbound(contact=amira, channel=channel)
    message = Message.objects.create(
        workspace=channel.workspace,
        conversation=conversation,
        channel=channel,
        direction="out",
        sender_kind="agent",
        provider_id="wamid.X",
        state="sent",
    )
    hand_made(broadcast, [("sent", "", {})])

    assert results.recipient_status_apply(message=message, state="read", at=timezone.now()) is False
    assert Recipient.objects.get().state == "sent"
