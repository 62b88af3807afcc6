"""Replayed webhooks (docs/security.md, "Replayed webhooks"). Where the provider signs a moment
(WeChat's timestamp and nonce, the custom channel's `t=`), a request older than five minutes is
refused, and the same signed request a second time is refused with 401 `replayed`, storing
nothing; a request that was not kept (malformed, database down) may come again. Where the provider
signs no moment (Meta, Telegram), the exact same delivery posted again is taken, and changes
nothing: messages, statuses, reactions, edits, postbacks, button presses, follows and blocks."""

import json
import time

import pytest
from django.db import connection
from django.test import Client

from apps.contacts.models import Contact, ContactIdentity
from apps.conversations.models import Conversation, InboundEvent, Message
from apps.conversations.services import inbound_event_process
from tests.connectors import messenger_payloads as meta
from tests.connectors import telegram_payloads as tg
from tests.connectors import wechat_payloads as wx
from tests.connectors.test_custom import make_custom_channel, said, signature
from tests.conversations import whatsapp as wa
from tests.factories import make_workspace


@pytest.fixture
def workspace(db):
    return make_workspace(name="Nile Basket", slug="nile")


def stored() -> int:
    return InboundEvent.objects.count()


def world() -> dict:
    """What a customer or an operator could notice: every message, conversation, contact and
    identity as stored."""
    return {
        "messages": list(
            Message.objects.order_by("id").values(
                "id", "kind", "text", "payload", "state", "sent_at", "delivered_at", "read_at", "failed_at"
            )
        ),
        "conversations": list(
            Conversation.objects.order_by("id").values(
                "id", "status", "unread_count", "last_message_at", "last_inbound_at", "window_expires_at"
            )
        ),
        "contacts": [(c.pk, c.name, c.phone, c.email) for c in Contact.objects.order_by("id")],
        "identities": list(ContactIdentity.objects.order_by("id").values("id", "contact_id", "reachable")),
    }


def process_latest() -> None:
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)


# WeChat: the URL is signed (timestamp, nonce), not the body ----------------------------------------


@pytest.fixture
def wechat(workspace):
    return wx.make_wechat_channel(workspace)


def push(channel, body: bytes, query: dict):
    return Client().post(wx.push_url(channel, query), data=body, content_type="text/xml")


def test_the_same_signed_wechat_push_twice_is_refused_as_replayed_and_stored_once(wechat):
    query, body = wx.signed_query(), wx.text("Where is my tea?", msg_id=1)

    first, again = push(wechat, body, query), push(wechat, body, query)

    assert (first.status_code, first.content) == (200, b"success")
    assert again.status_code == 401
    assert again.json()["code"] == "replayed"
    assert "already" in again.json()["detail"]
    assert stored() == 1


def test_a_signed_wechat_url_cannot_carry_a_second_body(wechat):
    query = wx.signed_query()
    push(wechat, wx.text("Where is my tea?", msg_id=1), query)

    forged = push(wechat, wx.text("Refund me to this account", msg_id=2), query)

    assert (forged.status_code, forged.json()["code"]) == (401, "replayed")
    assert stored() == 1


def test_a_wechat_push_signed_more_than_five_minutes_ago_is_refused_naming_the_clock(wechat):
    response = push(wechat, wx.text("hi", msg_id=1), wx.signed_query(age=301))

    assert response.status_code == 401
    assert response.json()["code"] == "bad_signature"
    assert "300 seconds" in response.json()["detail"]
    assert stored() == 0


def test_a_wechat_handshake_url_works_once(wechat):
    url = wx.push_url(wechat, wx.signed_query(echostr="hello"))

    first, again = Client().get(url), Client().get(url)

    assert (first.status_code, first.content) == (200, b"hello")
    assert again.status_code == 403


@pytest.mark.django_db(transaction=True)
def test_a_wechat_push_the_database_could_not_keep_is_taken_when_retried_with_the_same_url():
    channel = wx.make_wechat_channel(make_workspace(slug="tea"))
    query, body = wx.signed_query(), wx.text("Where is my tea?", msg_id=1)

    with database_refusing_deliveries():
        refused = push(channel, body, query)
    retried = push(channel, body, query)

    assert (refused.status_code, retried.status_code) == (503, 200)
    assert stored() == 1


class database_refusing_deliveries:
    """PostgreSQL itself refuses to store a delivery (a constraint no row meets), as it would while
    failing over: the webhook answers 503 and the provider retries."""

    table = InboundEvent._meta.db_table

    def __enter__(self):
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {self.table} ADD CONSTRAINT h5_refuse_all CHECK (false) NOT VALID")

    def __exit__(self, *exc):
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {self.table} DROP CONSTRAINT h5_refuse_all")


# The custom channel: `t=<unix>,v1=<HMAC of "<t>." + body>` ------------------------------------------


@pytest.fixture
def custom(workspace):
    return make_custom_channel(workspace)


def post_custom(channel, raw: bytes, header: str):
    return Client().post(
        f"/webhooks/{channel.uuid}/", raw, content_type="application/json", headers={"X-Parley-Signature": header}
    )


def test_the_same_signed_custom_request_twice_is_refused_as_replayed_and_stored_once(custom):
    raw = json.dumps({"events": [said("msg-1", text="hello")]}).encode()
    header = signature(raw)

    first, again = post_custom(custom, raw, header), post_custom(custom, raw, header)

    assert first.status_code == 200
    assert (again.status_code, again.json()["code"]) == (401, "replayed")
    assert "sign it afresh" in again.json()["detail"]
    assert stored() == 1


def test_the_same_body_signed_afresh_is_taken_and_still_makes_one_message(custom):
    raw = json.dumps({"events": [said("msg-1", text="hello")]}).encode()
    now = int(time.time())

    for at in (now - 1, now):
        assert post_custom(custom, raw, signature(raw, at=at)).status_code == 200
        process_latest()

    assert stored() == 2
    assert Message.objects.count() == 1


def test_a_custom_request_signed_more_than_five_minutes_ago_names_the_clock(custom):
    raw = json.dumps({"events": [said("msg-1", text="hello")]}).encode()

    response = post_custom(custom, raw, signature(raw, at=int(time.time()) - 301))

    assert (response.status_code, response.json()["code"]) == (401, "bad_signature")
    assert "more than 300 seconds" in response.json()["detail"]
    assert stored() == 0


def test_a_refused_malformed_custom_request_sent_again_is_told_its_problem_again(custom):
    raw = json.dumps({"events": [{"type": "message", "id": "msg-1"}]}).encode()  # no sender
    header = signature(raw)

    first, again = post_custom(custom, raw, header), post_custom(custom, raw, header)

    assert (first.status_code, again.status_code) == (400, 400)
    assert again.json()["code"] == "invalid_payload"


@pytest.mark.django_db(transaction=True)
def test_a_custom_request_the_database_could_not_keep_is_taken_when_retried_as_is():
    channel = make_custom_channel(make_workspace(slug="shop"))
    raw = json.dumps({"events": [said("msg-1", text="hello")]}).encode()
    header = signature(raw)

    with database_refusing_deliveries():
        refused = post_custom(channel, raw, header)
    retried = post_custom(channel, raw, header)

    assert (refused.status_code, retried.status_code) == (503, 200)
    assert stored() == 1


def test_replays_are_remembered_per_channel(workspace, custom):
    other = make_custom_channel(make_workspace(slug="other"))
    raw = json.dumps({"events": [said("msg-1", text="hello")]}).encode()
    header = signature(raw)

    assert post_custom(custom, raw, header).status_code == 200
    assert post_custom(other, raw, header).status_code == 200


# Meta (WhatsApp, Messenger, Instagram) and Telegram sign no moment: a replay changes nothing --------


def replay_changes_nothing(post, *bodies) -> None:
    """Posts and applies each delivery, then posts and applies every one of them again, exactly,
    newest first (the replay of an older one after a newer) and then in their first order: each
    replay is taken (200, stored), and nothing anyone could notice changes."""
    for body in bodies:
        assert post(body).status_code == 200
        process_latest()
    before = world()

    for replayed in (bodies[::-1], bodies):
        for body in replayed:
            assert post(body).status_code == 200
            process_latest()
        assert world() == before

    assert InboundEvent.objects.exclude(state="processed").count() == 0


@pytest.fixture
def whatsapp(workspace):
    return wa.make_whatsapp_channel(workspace)


def post_whatsapp(channel):
    return lambda body: wa.post_webhook(Client(), channel, body)


def sent_by_parley(channel, provider_id: str) -> Message:
    return Message.objects.create(
        workspace=channel.workspace,
        conversation=Conversation.objects.get(channel=channel),
        channel=channel,
        direction="out",
        sender_kind="agent",
        text="Your order ships today",
        provider_id=provider_id,
        state="sent",
    )


def test_a_replayed_whatsapp_message_and_reaction_change_nothing(whatsapp):
    hello = wa.envelope(wa.messages_value(wa.text("Is the kettle in stock?", wamid="wamid.M1")))
    reaction = {"type": "reaction", "reaction": {"message_id": "wamid.M1", "emoji": "👍"}}
    reacted = wa.envelope(wa.messages_value({"from": "201001234567", "id": "wamid.R1", "timestamp": "1", **reaction}))

    replay_changes_nothing(post_whatsapp(whatsapp), hello, reacted)

    assert Message.objects.filter(kind="reaction").count() == 1


def test_replayed_whatsapp_statuses_leave_the_highest_state_and_its_times(whatsapp):
    wa.post_webhook(Client(), whatsapp, wa.envelope(wa.messages_value(wa.text("hi", wamid="wamid.M2"))))
    process_latest()
    sent_by_parley(whatsapp, "wamid.OUT1")
    now = int(time.time())
    delivered = wa.envelope(wa.statuses_value(wa.status("wamid.OUT1", "delivered", ts=now - 60)))
    read = wa.envelope(wa.statuses_value(wa.status("wamid.OUT1", "read", ts=now - 30)))
    failed = wa.envelope(wa.statuses_value(wa.status("wamid.OUT1", "failed", ts=now)))

    replay_changes_nothing(post_whatsapp(whatsapp), delivered, read, failed)

    assert Message.objects.get(provider_id="wamid.OUT1").state == "read"


@pytest.fixture(params=["messenger", "instagram"])
def messenger(request, workspace):
    return meta.make_meta_channel(workspace, request.param)


def test_replayed_messenger_messages_postbacks_reactions_and_receipts_change_nothing(messenger):
    post = lambda body: meta.post_webhook(Client(), messenger, body)  # noqa: E731
    kind = messenger.kind
    hello = meta.envelope(kind, meta.text("Is the blue kettle in stock?", mid="m_1"))
    post(hello)
    process_latest()
    sent_by_parley(messenger, "m_out")
    Message.objects.filter(provider_id="m_out").update(sent_at=Conversation.objects.get().last_message_at)
    later = meta.now_ms() + 1000

    replay_changes_nothing(
        post,
        hello,
        meta.envelope(kind, meta.postback("Order status", "STATUS")),
        meta.envelope(kind, meta.reaction("m_out", emoji="❤️")),
        meta.envelope(kind, meta.reaction("m_out", emoji="❤️", action="unreact")),
        meta.envelope(kind, meta.delivery("m_out", watermark=later)),
        meta.envelope(kind, meta.read(watermark=later)),
    )

    assert Message.objects.get(provider_id="m_out").state == "read"


def test_a_replayed_messenger_edit_does_not_bring_back_older_text(messenger):
    post = lambda body: meta.post_webhook(Client(), messenger, body)  # noqa: E731
    kind, now = messenger.kind, meta.now_ms()
    first_edit = meta.item(
        ts=now + 1000, message_edit={"mid": "m_1", "text": "Is the red kettle in stock?", "num_edit": 1}
    )
    second_edit = meta.item(
        ts=now + 2000, message_edit={"mid": "m_1", "text": "Is the teapot in stock?", "num_edit": 2}
    )

    replay_changes_nothing(
        post,
        meta.envelope(kind, meta.text("Is the blue kettle in stock?", mid="m_1")),
        meta.envelope(kind, first_edit),
        meta.envelope(kind, second_edit),
    )

    assert Message.objects.get(provider_id="m_1").text == "Is the teapot in stock?"


@pytest.fixture
def telegram(workspace):
    return tg.make_telegram_channel(workspace)


def post_telegram(channel):
    return lambda body: tg.post_update(Client(), channel, body)


def test_replayed_telegram_messages_and_button_presses_change_nothing(telegram):
    menu = tg.keyboard_message(70, "How can we help?", [("Order status", "status")])

    replay_changes_nothing(
        post_telegram(telegram),
        tg.text("Where is my order?", message_id=17),
        tg.callback_query(menu, "status"),
    )


def test_a_replayed_telegram_edit_does_not_bring_back_older_text(telegram):
    first, second = tg.edited(17, "Where is order 1042?"), tg.edited(17, "Where is order 1043?")
    second["edited_message"]["edit_date"] += 30

    replay_changes_nothing(post_telegram(telegram), tg.text("Where is my order?", message_id=17), first, second)

    assert Message.objects.get().text == "Where is order 1043?"


def test_a_replayed_telegram_block_does_not_undo_a_later_unblock(telegram):
    blocked = tg.my_chat_member("member", "kicked")
    unblocked = tg.my_chat_member("kicked", "member")
    unblocked["my_chat_member"]["date"] += 60

    replay_changes_nothing(post_telegram(telegram), tg.text("hi", message_id=1), blocked, unblocked)

    assert ContactIdentity.objects.get().reachable is True
