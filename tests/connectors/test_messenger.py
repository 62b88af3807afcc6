"""Facebook Messenger and Instagram Direct: page webhooks in (posted as Meta documents them, then
applied as the worker would), replies out to the channel simulator over HTTP on loopback, and the
simulator's own webhooks caught on loopback and replayed into Parley, as Meta's would arrive."""

import queue
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from apps.connectors.base import ErrorClass, OutboundMessage, ProviderError
from apps.connectors.registry import connector_for
from apps.connectors.simulator.samples import sample_for
from apps.contacts.models import Contact, ContactIdentity
from apps.contacts.services import contact_resolve
from apps.conversations.models import Attachment, Conversation, DeliveryState, InboundEvent, Message
from apps.conversations.services import (
    SendLater,
    attachment_fetch,
    inbound_event_process,
    message_deliver,
    message_send,
)
from apps.core.exceptions import DomainError
from tests.connectors import messenger_payloads as meta
from tests.connectors.messenger_payloads import PAGE_ID, PSID, envelope, make_meta_channel, post_webhook
from tests.factories import make_member, make_workspace

KINDS = ["messenger", "instagram"]


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def channel(db, kind):
    return make_meta_channel(make_workspace(name="Nile Basket", slug="nile"), kind)


def deliver(channel, body, client=None):
    """Posts a webhook and applies the stored delivery as the worker would."""
    response = post_webhook(client or Client(), channel, body)
    assert response.status_code == 200, response.content
    event = InboundEvent.objects.latest("id")
    inbound_event_process(event_id=event.id)
    event.refresh_from_db()
    return event


# Requests ------------------------------------------------------------------------------------


def test_the_handshake_echoes_the_challenge_for_the_right_verify_token(channel):
    query = f"hub.mode=subscribe&hub.challenge=8841&hub.verify_token={channel.verify_token}"

    response = Client().get(f"/webhooks/{channel.uuid}/?{query}")

    assert response.status_code == 200
    assert response.content == b"8841"


def test_the_handshake_with_a_wrong_verify_token_is_403(channel):
    response = Client().get(f"/webhooks/{channel.uuid}/?hub.mode=subscribe&hub.challenge=1&hub.verify_token=nope")

    assert response.status_code == 403


def test_a_bad_signature_is_401_and_nothing_is_stored(channel, kind):
    body = envelope(kind, meta.text("hi", mid="m_1"))

    response = post_webhook(Client(), channel, body, secret="wrong-secret")

    assert response.status_code == 401
    assert response.json()["code"] == "bad_signature"
    assert not InboundEvent.objects.exists()


def test_a_missing_signature_is_401(channel):
    response = Client().post(f"/webhooks/{channel.uuid}/", b"{}", content_type="application/json")

    assert response.status_code == 401


# Inbound -------------------------------------------------------------------------------------


def test_a_customer_message_creates_a_nameless_contact_a_conversation_and_the_message(channel, kind):
    deliver(channel, envelope(kind, meta.text("Is the blue kettle in stock?", mid="m_A1")))

    message = Message.objects.get()
    assert (message.kind, message.text, message.provider_id) == ("text", "Is the blue kettle in stock?", "m_A1")
    assert message.direction == "in" and message.state == DeliveryState.RECEIVED
    # The webhook has only the page-scoped id: no name, phone or email to match on.
    contact = message.conversation.contact
    assert (contact.name, contact.phone, contact.email) == ("", "", "")
    assert ContactIdentity.objects.get().external_id == PSID
    assert message.conversation.window_expires_at > timezone.now() + timedelta(hours=23)


def test_a_delivery_of_several_items_applies_every_one(channel, kind):
    body = envelope(
        kind,
        meta.text("one", mid="m_B1"),
        meta.text("two", mid="m_B2"),
        meta.item(psid="other", message={"mid": "m_B3", "text": "three"}),
    )

    deliver(channel, body)

    assert sorted(Message.objects.values_list("text", flat=True)) == ["one", "three", "two"]
    assert Contact.objects.count() == 2


def test_the_same_delivery_twice_makes_one_message(channel, kind):
    body = envelope(kind, meta.text("hello", mid="m_C1"))

    deliver(channel, body)
    deliver(channel, body)

    assert Message.objects.count() == 1
    assert Conversation.objects.get().unread_count == 1
    assert InboundEvent.objects.filter(state="processed").count() == 2


def test_an_echo_of_our_own_send_is_ignored(channel, kind):
    event = deliver(channel, envelope(kind, meta.echo("Your order ships today", mid="m_ours")))

    assert event.state == "processed"
    assert not Message.objects.exists()
    assert not Contact.objects.exists()


MESSENGER_ITEMS = {
    "quick_reply": (meta.quick_reply("Talk to a person", "human", mid="m_q"), "interactive", "Talk to a person"),
    "postback": (meta.postback("Track my order", "track", mid="m_p"), "interactive", "Track my order"),
    "image": (meta.attachments(("image", "https://cdn.fbsbx.test/v/photo.jpg?sig=1"), mid="m_i"), "media", ""),
    "file": (meta.attachments(("file", "https://cdn.fbsbx.test/v/receipt.pdf"), mid="m_f"), "media", ""),
    "location": (
        meta.attachments(
            {"type": "location", "title": "Tahrir Square", "payload": {"coordinates": {"lat": 30.04, "long": 31.23}}},
            mid="m_l",
        ),
        "location",
        "Tahrir Square",
    ),
    "reaction": (meta.reaction("m_ours"), "reaction", "❤️"),
    "shared_link": (
        meta.attachments({"type": "fallback", "payload": {"url": "https://shop.test"}}, mid="m_s"),
        "unsupported",
        "",
    ),
    "optin": (meta.item(optin={"ref": "checkout", "user_ref": "u-1"}), "unsupported", ""),
}


@pytest.mark.parametrize(("item", "expected_kind", "expected_text"), MESSENGER_ITEMS.values(), ids=MESSENGER_ITEMS)
def test_each_inbound_type_is_stored_with_its_kind(db, item, expected_kind, expected_text):
    channel = make_meta_channel(make_workspace(slug="types"))

    deliver(channel, envelope("messenger", item))

    message = Message.objects.get()
    assert (message.kind, message.text) == (expected_kind, expected_text)


def test_a_quick_reply_tap_is_the_chosen_option(channel, kind):
    deliver(channel, envelope(kind, meta.quick_reply("Talk to a person", "human", mid="m_q1")))

    message = Message.objects.get()
    assert message.kind == "interactive"
    assert message.payload == {"reply_id": "human", "title": "Talk to a person", "type": "quick_reply"}


def test_a_postback_without_a_mid_is_stored_once_however_often_it_arrives(db):
    channel = make_meta_channel(make_workspace(slug="postbacks"))
    body = envelope("messenger", meta.postback("Get started", "GET_STARTED", ts=1761287294014))

    deliver(channel, body)
    deliver(channel, body)

    message = Message.objects.get()
    assert message.payload["reply_id"] == "GET_STARTED"
    assert message.provider_id.startswith("postback.")


def test_a_reaction_names_the_message_and_the_action(db):
    channel = make_meta_channel(make_workspace(slug="reactions"))

    deliver(channel, envelope("messenger", meta.reaction("m_ours", emoji="😮", action="react")))

    assert Message.objects.get().payload == {
        "emoji": "😮",
        "message_id": "m_ours",
        "action": "react",
        "reaction": "love",
    }


def test_a_reply_keeps_the_message_it_answers(channel, kind):
    deliver(channel, envelope(kind, meta.text("first", mid="m_R1")))

    deliver(channel, envelope(kind, meta.text("about that", mid="m_R2", reply_to={"mid": "m_R1"})))

    reply = Message.objects.get(provider_id="m_R2")
    assert reply.reply_to.provider_id == "m_R1"


def test_every_attachment_of_a_message_is_kept_with_its_cdn_link(channel, kind):
    body = envelope(
        kind,
        meta.attachments(
            ("image", "https://cdn.fbsbx.test/a.png"), ("video", "https://cdn.fbsbx.test/b.mp4"), mid="m_M1"
        ),
    )

    deliver(channel, body)

    files = Attachment.objects.order_by("id")
    assert [(f.provider_media_id, f.content_type) for f in files] == [
        ("https://cdn.fbsbx.test/a.png", "image/png"),
        ("https://cdn.fbsbx.test/b.mp4", "video/mp4"),
    ]
    assert Message.objects.get().kind == "media"


INSTAGRAM_SHARES = {
    "story_mention": {"type": "story_mention", "payload": {"url": "https://lookaside.fbsbx.test/story?asset_id=1"}},
    "ig_reel": {
        "type": "ig_reel",
        "payload": {"reel_video_id": "1791", "title": "New kettles", "url": "https://lookaside.fbsbx.test/reel?id=2"},
    },
    "share": {"type": "share", "payload": {"url": "https://lookaside.fbsbx.test/ig_messaging_cdn/?asset_id=3"}},
}


@pytest.mark.parametrize("attachment", INSTAGRAM_SHARES.values(), ids=INSTAGRAM_SHARES)
def test_an_instagram_share_is_stored_as_media_with_what_was_shared(db, attachment):
    channel = make_meta_channel(make_workspace(slug="insta"), "instagram")

    deliver(channel, envelope("instagram", meta.attachments(attachment, mid="m_ig")))

    message = Message.objects.get()
    assert message.kind == "media"
    assert message.payload["shared"][0]["type"] == attachment["type"]
    assert message.attachments.get().provider_media_id == attachment["payload"]["url"]


def test_an_edited_message_shows_the_new_text_and_keeps_the_first(db):
    channel = make_meta_channel(make_workspace(slug="edits"))
    deliver(channel, envelope("messenger", meta.text("my adress is 12 Nile St", mid="m_E1")))

    deliver(
        channel, envelope("messenger", meta.item(message_edit={"mid": "m_E1", "text": "my address", "num_edit": 1}))
    )

    message = Message.objects.get()
    assert message.text == "my address"
    assert message.payload["original_text"] == "my adress is 12 Nile St"


def test_a_message_unsent_on_instagram_is_emptied_but_kept(db):
    channel = make_meta_channel(make_workspace(slug="unsent"), "instagram")
    deliver(channel, envelope("instagram", meta.text("oops", mid="m_D1")))

    deliver(channel, envelope("instagram", meta.item(message={"mid": "m_D1", "is_deleted": True})))

    message = Message.objects.get()
    assert (message.text, message.payload["original_text"], message.payload["deleted"]) == ("", "oops", True)


def test_a_webhook_for_the_other_platform_is_kept_as_failed_never_a_500(channel, kind):
    other = "instagram" if kind == "messenger" else "messenger"

    event = deliver(channel, envelope(other, meta.text("hi", mid="m_X1")))

    assert event.state == "failed" and "webhook" in event.error
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"object": "page", "entry": {}}',
        b'{"object": "page", "entry": [{"messaging": [{"timestamp": 1}]}]}',
    ],
    ids=["not_json", "entry_not_a_list", "item_without_sender"],
)
def test_a_malformed_payload_is_kept_as_failed_and_replayable(db, raw):
    channel = make_meta_channel(make_workspace(slug="broken"))

    event = deliver(channel, raw)

    assert event.state == "failed" and event.error
    assert not Message.objects.exists()


# Receipts ------------------------------------------------------------------------------------


@pytest.fixture
def sent_messages(channel):
    """Two replies already sent to the customer: one ten minutes ago, one just now."""
    deliver(channel, envelope(channel.kind, meta.text("hello", mid="m_in")))
    conversation = Conversation.objects.get()
    now = timezone.now()
    return [
        Message.objects.create(
            workspace=channel.workspace,
            conversation=conversation,
            channel=channel,
            direction="out",
            sender_kind="agent",
            kind="text",
            text=text,
            provider_id=mid,
            state=DeliveryState.SENT,
            sent_at=sent_at,
        )
        for text, mid, sent_at in (("older", "m_old", now - timedelta(minutes=10)), ("newer", "m_new", now))
    ]


@pytest.mark.parametrize("kind", ["messenger"])
def test_a_read_watermark_marks_earlier_sent_messages_read(sent_messages):
    channel = sent_messages[0].channel
    watermark = int((timezone.now() - timedelta(minutes=1)).timestamp() * 1000)

    deliver(channel, envelope("messenger", meta.read(watermark=watermark)))

    assert [m.state for m in Message.objects.filter(direction="out").order_by("id")] == ["read", "sent"]


@pytest.mark.parametrize("kind", ["messenger"])
def test_a_delivery_marks_the_message_it_names_delivered(sent_messages):
    channel = sent_messages[0].channel
    watermark = int((timezone.now() - timedelta(minutes=5)).timestamp() * 1000)

    deliver(channel, envelope("messenger", meta.delivery("m_new", watermark=watermark)))

    # m_new by its id, m_old by the watermark: it was sent before that moment.
    assert [m.state for m in Message.objects.filter(direction="out").order_by("id")] == ["delivered", "delivered"]


@pytest.mark.parametrize("kind", ["instagram"])
def test_instagrams_seen_marks_what_was_sent_before_it_read(sent_messages):
    channel = sent_messages[0].channel

    deliver(channel, envelope("instagram", meta.item(read={"mid": "m_new"})))

    assert [m.state for m in Message.objects.filter(direction="out").order_by("id")] == ["read", "read"]


# Outbound ------------------------------------------------------------------------------------


def register(simulator, channel, webhook_url: str = "") -> None:
    simulator.post(
        "/_simulator/channels",
        {
            "kind": channel.kind,
            "name": channel.name,
            "page_id": channel.credentials["page_id"],
            "page_access_token": channel.credentials["page_access_token"],
            "app_secret": channel.credentials["app_secret"],
            "verify_token": channel.verify_token,
            "webhook_url": webhook_url,
        },
    )


def customer_wrote(simulator, conversation, hours_ago: float) -> None:
    """The customer's last message, as both the simulator and Parley know it."""
    simulator.post(
        "/_simulator/window",
        {"kind": conversation.channel.kind, "channel": PAGE_ID, "user": PSID, "hours_ago": hours_ago},
    )
    last = timezone.now() - timedelta(hours=hours_ago)
    Conversation.objects.filter(pk=conversation.pk).update(
        last_inbound_at=last, window_expires_at=last + timedelta(hours=24)
    )
    conversation.refresh_from_db()


@pytest.fixture
def conversation(db, simulator, kind):
    workspace = make_workspace(slug="nile")
    channel = make_meta_channel(workspace, kind, base_url=simulator.url)
    register(simulator, channel)
    contact = contact_resolve(channel=channel, external_id=PSID)
    conversation = Conversation.objects.create(workspace=workspace, contact=contact, channel=channel)
    customer_wrote(simulator, conversation, hours_ago=0.02)
    return conversation


@pytest.fixture
def agent(conversation):
    return make_member(conversation.workspace).user


def outbox(simulator, conversation) -> list:
    return simulator.get("/_simulator/outbox", kind=conversation.channel.kind, channel=PAGE_ID)


def sent(simulator, conversation) -> dict:
    return outbox(simulator, conversation)[-1]


def test_a_reply_goes_out_as_a_response_in_the_send_apis_wire_format(conversation, agent, simulator, kind):
    message = message_send(conversation=conversation, author=agent, text="Your order ships today")

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.SENT and message.provider_id.startswith("m_")
    body = sent(simulator, conversation)["body"]
    assert body == {
        "recipient": {"id": PSID},
        "messaging_type": "RESPONSE",
        "message": {"text": "Your order ships today"},
    }
    request = simulator.get("/_simulator/requests", kind=kind)[-1]
    assert request["path"] == f"/v21.0/{PAGE_ID}/messages"
    assert request["headers"]["authorization"] == f"Bearer {kind}-page-token"


def test_options_become_quick_replies_cut_to_metas_limits(conversation, agent, simulator):
    options = [{"id": f"size-{n}", "title": f"Size {n} (fits most tall kettles)"} for n in range(15)]
    message = message_send(
        conversation=conversation, author=agent, text="Which size?", kind="interactive", payload={"options": options}
    )

    message_deliver(message_id=message.id)

    replies = sent(simulator, conversation)["body"]["message"]["quick_replies"]
    assert len(replies) == 13
    assert replies[0] == {"content_type": "text", "title": "Size 0 (fits most ta", "payload": "size-0"}


def test_an_operators_file_goes_out_under_its_caption(conversation, agent, simulator):
    picture = sample_for("image")
    upload = SimpleUploadedFile("kettle.png", picture.data, content_type="image/png")

    message = message_send(conversation=conversation, author=agent, text="The blue one", upload=upload)
    message_deliver(message_id=message.id)

    caption, file = outbox(simulator, conversation)[-2:]
    assert caption["text"] == "The blue one"
    assert file["media"]["type"] == "image" and file["media"]["mime_type"] == "image/png"
    assert httpx.get(file["media"]["url"]).content == picture.data
    message.refresh_from_db()
    assert message.state == DeliveryState.SENT and message.provider_id == file["id"]


def test_a_file_by_link_is_sent_as_an_attachment_url(conversation, agent, simulator):
    link = {"media_url": "https://files.shop.test/invoice-1042.pdf", "mime_type": "application/pdf"}

    message = message_send(conversation=conversation, author=agent, kind="media", payload=link)
    message_deliver(message_id=message.id)

    attachment = sent(simulator, conversation)["body"]["message"]["attachment"]
    assert attachment == {"type": "file", "payload": {"url": link["media_url"], "is_reusable": True}}


def test_a_reply_to_a_customers_message_quotes_it(conversation, agent, simulator):
    theirs = Message.objects.create(
        workspace=conversation.workspace,
        conversation=conversation,
        channel=conversation.channel,
        direction="in",
        sender_kind="contact",
        kind="text",
        text="Do you deliver to Giza?",
        provider_id="m_theirs",
        state=DeliveryState.RECEIVED,
    )

    message = message_send(conversation=conversation, author=agent, text="We do!", reply_to=theirs)
    message_deliver(message_id=message.id)

    assert sent(simulator, conversation)["body"]["reply_to"] == {"mid": "m_theirs"}


def test_after_a_day_a_persons_reply_goes_out_with_the_human_agent_tag_and_a_bots_is_refused(
    conversation, agent, simulator
):
    customer_wrote(simulator, conversation, hours_ago=30)

    message = message_send(conversation=conversation, author=agent, text="Sorry for the wait")
    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.SENT
    body = sent(simulator, conversation)["body"]
    assert (body["messaging_type"], body["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")
    with pytest.raises(DomainError) as refused:
        message_send(conversation=conversation, text="Rate us!", sender_kind="bot")
    assert refused.value.code == "window_closed"


def test_after_seven_days_nobody_may_answer_until_the_customer_writes(conversation, agent, simulator):
    customer_wrote(simulator, conversation, hours_ago=8 * 24)

    with pytest.raises(DomainError) as refused:
        message_send(conversation=conversation, author=agent, text="Still there?")

    assert refused.value.code == "window_closed"


@pytest.mark.parametrize(("sender_kind", "hours_ago"), [("bot", 30), ("agent", 8 * 24), ("agent", None)])
def test_the_connector_itself_refuses_to_send_outside_the_window(db, kind, sender_kind, hours_ago):
    channel = make_meta_channel(make_workspace(slug="window"), kind)
    last = timezone.now() - timedelta(hours=hours_ago) if hours_ago else None
    message = OutboundMessage(PSID, "text", "Hi", context={"sender_kind": sender_kind, "last_inbound_at": last})

    with pytest.raises(ProviderError) as refused:
        connector_for(channel).send(channel, message)

    assert refused.value.error_class == ErrorClass.NEEDS_TEMPLATE


def test_when_meta_says_the_window_closed_the_message_fails_asking_for_a_template(conversation, agent, simulator):
    # Parley still thinks the window open, but Meta's clock says otherwise.
    simulator.post(
        "/_simulator/window", {"kind": conversation.channel.kind, "channel": PAGE_ID, "user": PSID, "hours_ago": 200}
    )
    message = message_send(conversation=conversation, author=agent, text="Hello again")

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert (message.state, message.error_code) == (DeliveryState.FAILED, "10/2018278")
    assert "outside of allowed window" in message.error_reason


def fault(simulator, conversation, status: int, error: dict, headers: dict | None = None) -> None:
    body = {"error": {"type": "OAuthException", "fbtrace_id": "AbC", **error}}
    simulator.post(
        "/_simulator/faults",
        {
            "kind": conversation.channel.kind,
            "channel": PAGE_ID,
            "status": status,
            "body": body,
            "headers": headers or {},
        },
    )


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, {"code": 613, "message": "Calls to this api have exceeded the rate limit."}),
        (400, {"code": 4, "message": "(#4) Application request limit reached"}),
        (503, {"code": 2, "message": "An unexpected error has occurred. Please retry your request later."}),
    ],
    ids=["rate_limit", "app_limit", "unavailable"],
)
def test_a_transient_error_is_retried_and_then_delivered(conversation, agent, simulator, status, error):
    fault(simulator, conversation, status, error)
    message = message_send(conversation=conversation, author=agent, text="Hi")

    with pytest.raises(SendLater):
        message_deliver(message_id=message.id)
    message.refresh_from_db()
    assert message.state == DeliveryState.QUEUED and message.error_code == str(error["code"])

    # A rate limit makes every worker pause this channel (its Redis bucket); the pause is over.
    from apps.core.redis import get_redis, key

    get_redis().delete(key("bucket", f"channel:{conversation.channel_id}"))
    message_deliver(message_id=message.id)
    message.refresh_from_db()
    assert message.state == DeliveryState.SENT


def test_a_retry_after_header_sets_the_wait(conversation, agent, simulator):
    fault(simulator, conversation, 400, {"code": 613, "message": "rate limit"}, headers={"Retry-After": "7"})
    message = message_send(conversation=conversation, author=agent, text="Hi")

    with pytest.raises(SendLater) as later:
        message_deliver(message_id=message.id)

    assert later.value.delay == 7


@pytest.mark.parametrize(
    "error",
    [
        {"code": 551, "error_subcode": 1545041, "message": "This person isn't available right now."},
        {"code": 10, "error_subcode": 2018108, "message": "This person isn't receiving messages from you right now."},
        {"code": 100, "error_subcode": 2018001, "message": "(#100) No matching user found"},
    ],
    ids=["unavailable", "not_receiving", "no_matching_user"],
)
def test_a_person_who_cannot_be_reached_is_marked_unreachable(conversation, agent, simulator, error):
    fault(simulator, conversation, 400, error)
    message = message_send(conversation=conversation, author=agent, text="Hi")

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.FAILED
    assert message.error_code == f"{error['code']}/{error['error_subcode']}"
    assert ContactIdentity.objects.get(channel=conversation.channel).reachable is False


def test_bad_credentials_fail_the_message_with_metas_code(conversation, agent):
    channel = conversation.channel
    channel.credentials = {**channel.credentials, "page_access_token": "revoked"}
    channel.save(update_fields=["credentials"])
    message = message_send(conversation=conversation, author=agent, text="Hi")

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert (message.state, message.error_code) == (DeliveryState.FAILED, "190")


def test_any_other_error_fails_the_message_for_good(conversation, agent, simulator):
    fault(simulator, conversation, 400, {"code": 100, "message": "(#100) Param message[text] must be non-empty."})
    message = message_send(conversation=conversation, author=agent, text="Hi")

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert (message.state, message.error_code) == (DeliveryState.FAILED, "100")
    assert "must be non-empty" in message.error_reason


def test_a_text_over_the_limit_fails_with_a_clear_reason(conversation, agent, simulator):
    limit = connector_for(conversation.channel).text_limit
    message = message_send(conversation=conversation, author=agent, text="ب" * limit)  # two bytes each

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    if conversation.channel.kind == "instagram":  # Instagram counts bytes
        assert (message.state, message.error_code) == (DeliveryState.FAILED, "too_long")
    else:
        assert message.state == DeliveryState.SENT


def test_instagram_takes_smaller_images_than_messenger(db):
    messenger = connector_for(make_meta_channel(make_workspace(slug="m"), "messenger"))
    instagram = connector_for(make_meta_channel(make_workspace(slug="i"), "instagram"))

    assert (messenger.size_limit("image/jpeg"), instagram.size_limit("image/jpeg")) == (25 * 2**20, 8 * 2**20)
    assert instagram.size_limit("video/mp4") == 25 * 2**20


# The simulator's webhooks, replayed into Parley --------------------------------------------------


class Catcher:
    """Stands where Parley's webhook URL would be: keeps what the simulator posts (answering 200)
    so a test can hand it to Parley through the test client, signature and all."""

    def __init__(self):
        self.received: queue.Queue = queue.Queue()
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                catcher.received.put((dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def replay(self, channel) -> InboundEvent:
        """The next webhook the simulator sent, posted to Parley and applied."""
        headers, body = self.received.get(timeout=10)
        response = Client().post(
            f"/webhooks/{channel.uuid}/",
            body,
            content_type=headers["Content-Type"],
            headers={"X-Hub-Signature-256": headers["X-Hub-Signature-256"]},
        )
        assert response.status_code == 200, response.content
        event = InboundEvent.objects.latest("id")
        inbound_event_process(event_id=event.id)
        return event


@pytest.fixture
def catcher(conversation, simulator):
    catcher = Catcher()
    register(simulator, conversation.channel, webhook_url=catcher.url)
    yield catcher
    catcher.server.shutdown()
    catcher.server.server_close()


def test_the_customers_quick_reply_tap_comes_back_as_the_chosen_option(conversation, agent, simulator, catcher, kind):
    options = [{"id": "orders", "title": "Order status"}, {"id": "human", "title": "Talk to a person"}]
    menu = message_send(
        conversation=conversation,
        author=agent,
        text="How can we help?",
        kind="interactive",
        payload={"options": options},
    )
    message_deliver(message_id=menu.id)
    if kind == "messenger":
        catcher.replay(conversation.channel)  # the menu's delivery receipt
    shown = sent(simulator, conversation)["replies"]

    simulator.post(
        "/_simulator/inbound",
        {"kind": kind, "channel": PAGE_ID, "user": PSID, "type": "choice", "choice": shown[1], "wait": True},
    )
    catcher.replay(conversation.channel)

    choice = Message.objects.filter(direction="in").get()
    assert (choice.kind, choice.text, choice.conversation_id) == ("interactive", "Talk to a person", conversation.id)
    assert choice.payload == {"reply_id": "human", "title": "Talk to a person", "type": "quick_reply"}


@pytest.mark.parametrize("kind", ["messenger"])
def test_the_simulators_delivery_receipt_and_read_watermark_move_a_reply_to_read(
    conversation, agent, simulator, catcher
):
    message = message_send(conversation=conversation, author=agent, text="On its way")
    message_deliver(message_id=message.id)

    catcher.replay(conversation.channel)
    message.refresh_from_db()
    assert message.state == DeliveryState.DELIVERED

    simulator.post("/_simulator/read", {"kind": "messenger", "channel": PAGE_ID, "user": PSID})
    catcher.replay(conversation.channel)
    message.refresh_from_db()
    assert message.state == DeliveryState.READ


@pytest.mark.parametrize("kind", ["instagram"])
def test_instagrams_seen_from_the_simulator_marks_the_reply_read(conversation, agent, simulator, catcher):
    message = message_send(conversation=conversation, author=agent, text="On its way")
    message_deliver(message_id=message.id)

    simulator.post("/_simulator/read", {"kind": "instagram", "channel": PAGE_ID, "user": PSID})
    catcher.replay(conversation.channel)

    message.refresh_from_db()
    assert message.state == DeliveryState.READ


def test_a_customers_photo_is_downloaded_from_metas_link(conversation, simulator, catcher, kind):
    simulator.post(
        "/_simulator/inbound", {"kind": kind, "channel": PAGE_ID, "user": PSID, "type": "image", "wait": True}
    )
    catcher.replay(conversation.channel)

    attachment = Attachment.objects.get()
    attachment_fetch(attachment_id=attachment.id)

    attachment.refresh_from_db()
    assert attachment.state == Attachment.State.STORED
    assert (attachment.content_type, attachment.file.read()) == ("image/png", sample_for("image").data)


def test_a_file_over_the_limit_is_refused_and_an_unreachable_one_retried(conversation, simulator, catcher, kind):
    simulator.post(
        "/_simulator/inbound", {"kind": kind, "channel": PAGE_ID, "user": PSID, "type": "image", "wait": True}
    )
    catcher.replay(conversation.channel)
    connector, url = connector_for(conversation.channel), Attachment.objects.get().provider_media_id

    with pytest.raises(ProviderError) as too_large:
        connector.fetch_media(conversation.channel, {"id": url}, max_bytes=100)
    with pytest.raises(ProviderError) as unreachable:
        connector.fetch_media(conversation.channel, {"id": "http://127.0.0.1:9/gone.jpg"}, max_bytes=100)

    assert too_large.value.code == "too_large"
    assert unreachable.value.error_class == ErrorClass.RETRY
