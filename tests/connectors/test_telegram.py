"""Telegram: updates posted to our webhook as the Bot API sends them, replies leaving through the
connector to the channel simulator, Telegram's errors classified, and one live round trip in
which the simulator plays Telegram end to end (a button pressed and answered)."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.connectors.base import ErrorClass, OutboundMessage, ProviderError
from apps.connectors.providers.telegram import VALID_SECRET, TelegramConnector, callback_data_for, webhook_secret
from apps.connectors.services import channel_activate
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
from tests.conftest import _wait_for
from tests.connectors import telegram_payloads as tg
from tests.conversations.whatsapp import envelope, make_whatsapp_channel, messages_value
from tests.conversations.whatsapp import post_webhook as post_whatsapp
from tests.conversations.whatsapp import text as whatsapp_text
from tests.factories import make_member, make_workspace

CHAT = str(tg.USER_ID)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def channel(db):
    return tg.make_telegram_channel(make_workspace(name="Nile Basket", slug="nile"))


def deliver(channel, body, *, client=None):
    """Posts an update and applies the stored delivery as the worker would."""
    response = tg.post_update(client or Client(), channel, body)
    assert response.status_code == 200, response.content
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)
    return response


# The webhook -----------------------------------------------------------------------------------


def test_the_secret_token_is_the_verify_token_when_telegram_accepts_it(channel):
    assert webhook_secret(channel) == channel.verify_token

    channel.verify_token = "has spaces & symbols!"

    secret = webhook_secret(channel)
    assert secret != channel.verify_token
    assert VALID_SECRET.fullmatch(secret)


def test_an_update_with_the_right_secret_is_stored_and_answered_with_an_empty_200(channel):
    response = tg.post_update(Client(), channel, tg.text("hi"))

    assert response.status_code == 200
    assert response.content == b""
    assert InboundEvent.objects.count() == 1


@pytest.mark.parametrize("secret", ["", "not-the-secret"])
def test_a_missing_or_wrong_secret_is_401_and_nothing_is_stored(channel, secret):
    response = tg.post_update(Client(), channel, tg.text("hi"), secret=secret)

    assert response.status_code == 401
    assert response.json()["code"] == "bad_signature"
    assert not InboundEvent.objects.exists()


def test_telegram_has_no_handshake_so_a_get_is_405(channel):
    assert Client().get(f"/webhooks/{channel.uuid}/").status_code == 405


def test_garbage_with_the_right_secret_is_answered_200_and_parked_as_failed(channel):
    response = tg.post_update(Client(), channel, b"{not json")

    assert response.status_code == 200
    inbound_event_process(event_id=InboundEvent.objects.get().id)
    event = InboundEvent.objects.get()
    assert event.state == "failed" and "not JSON" in event.error
    assert not Message.objects.exists()


def test_a_json_object_that_is_not_an_update_fails_parsing(channel):
    deliver(channel, {"hello": "world"})

    assert InboundEvent.objects.get().state == "failed"


# Inbound messages ------------------------------------------------------------------------------


def test_a_text_message_creates_contact_conversation_and_message(channel):
    deliver(channel, tg.text("Where is my order?", message_id=17))

    message = Message.objects.get()
    assert message.text == "Where is my order?"
    assert message.provider_id == f"{CHAT}:17"
    assert message.payload["username"] == "amira_n" and message.payload["language_code"] == "ar"
    contact = message.conversation.contact
    assert contact.name == "Amira Nasser"
    assert contact.identities.get().external_id == CHAT
    assert message.conversation.window_expires_at is None  # Telegram has no reply window


def test_the_same_update_delivered_twice_makes_one_message(channel):
    body = tg.text("hello", message_id=3)

    deliver(channel, body)
    deliver(channel, body)

    assert Message.objects.count() == 1
    assert InboundEvent.objects.filter(state="processed").count() == 2


def test_message_ids_are_per_chat_so_two_chats_may_share_one(channel):
    omar = {**tg.AMIRA, "id": 5559999, "first_name": "Omar", "last_name": "", "username": "omar"}
    deliver(channel, tg.text("from Amira", message_id=1))
    deliver(channel, tg.update(message=tg.message(1, user=omar, text="from Omar")))

    assert sorted(Message.objects.values_list("provider_id", flat=True)) == [f"{CHAT}:1", "5559999:1"]


def test_a_photo_keeps_the_largest_size_and_its_caption(channel):
    deliver(channel, tg.photo(caption="the box arrived broken"))

    message = Message.objects.get()
    assert message.kind == "media" and message.text == "the box arrived broken"
    attachment = message.attachments.get()
    assert attachment.provider_media_id == "AgACAgQ-large"
    assert attachment.content_type == "image/jpeg"


@pytest.mark.parametrize(
    ("field", "mime_type", "filename"),
    [
        ("document", "application/pdf", "invoice 12.pdf"),
        ("voice", "audio/ogg", ""),
        ("video", "video/mp4", "unboxing.mp4"),
        ("audio", "audio/mpeg", "song.mp3"),
        ("sticker", "image/webp", ""),
        ("video_note", "video/mp4", ""),
    ],
)
def test_each_kind_of_file_becomes_media_with_its_type(channel, field, mime_type, filename):
    deliver(channel, tg.media(field, caption="see this" if field == "document" else ""))

    message = Message.objects.get()
    attachment = message.attachments.get()
    assert message.kind == "media"
    assert attachment.provider_media_id == tg.MEDIA_OBJECTS[field]["file_id"]
    assert (attachment.content_type, attachment.filename) == (mime_type, filename)
    if field == "document":
        assert message.text == "see this"


def test_sharing_their_own_number_gives_the_contact_that_phone(channel):
    deliver(channel, tg.contact("201001234567"))  # Telegram may leave out the '+'

    message = Message.objects.get()
    assert message.kind == "contacts"
    assert message.payload["contacts"][0]["phones"][0]["phone"] == "+201001234567"
    assert message.conversation.contact.phone == "+201001234567"


def test_someone_elses_contact_card_does_not_become_the_customers_phone(channel):
    deliver(channel, tg.contact("+201009998877", user_id=None, first_name="Courier"))

    message = Message.objects.get()
    assert message.kind == "contacts" and message.payload["own_number"] is False
    assert message.conversation.contact.phone == ""


def test_a_location_is_stored_with_its_coordinates(channel):
    deliver(channel, tg.location(30.0444, 31.2357))

    message = Message.objects.get()
    assert message.kind == "location"
    assert (message.payload["latitude"], message.payload["longitude"]) == (30.0444, 31.2357)


def test_a_reply_points_at_the_quoted_message(channel):
    deliver(channel, tg.text("first", message_id=1))
    quoted = tg.message(1, text="first")

    deliver(channel, tg.text("about that", message_id=2, reply_to_message=quoted))

    reply = Message.objects.get(provider_id=f"{CHAT}:2")
    assert reply.reply_to.provider_id == f"{CHAT}:1"


def test_an_edited_message_changes_the_stored_text_and_keeps_the_original(channel):
    deliver(channel, tg.text("I want 2 boxes", message_id=8))

    deliver(channel, tg.edited(8, "I want 3 boxes"))

    message = Message.objects.get()
    assert message.text == "I want 3 boxes"
    assert message.payload["original_text"] == "I want 2 boxes"
    assert "edited_at" in message.payload


def test_a_group_is_one_contact_named_after_the_group(channel):
    group = {"id": -1001234567890, "title": "Nile Basket wholesale", "type": "supergroup"}
    deliver(channel, tg.update(message=tg.message(44, chat=group, text="price list please")))

    message = Message.objects.get()
    assert message.provider_id == "-1001234567890:44"
    assert message.conversation.contact.name == "Nile Basket wholesale"
    assert message.payload["from"]["name"] == "Amira Nasser"


def test_an_unknown_kind_of_message_is_kept_as_unsupported(channel):
    dice = {"emoji": "🎲", "value": 4}
    deliver(channel, tg.update(message=tg.message(9, dice=dice)))

    message = Message.objects.get()
    assert message.kind == "unsupported"
    assert message.payload["raw"]["dice"] == dice


# Buttons ---------------------------------------------------------------------------------------


def test_a_button_press_is_answered_in_the_webhook_response_and_comes_back_as_the_chosen_option(channel):
    menu = tg.keyboard_message(30, "How can we help?", [("Order status", "orders"), ("Talk to a person", "human")])

    response = deliver(channel, tg.callback_query(menu, "orders", query_id="77001"))

    assert response["Content-Type"] == "application/json"
    assert response.json() == {"method": "answerCallbackQuery", "callback_query_id": "77001"}
    message = Message.objects.get()
    assert message.kind == "interactive" and message.text == "Order status"
    assert message.provider_id == "cb:77001"
    assert message.payload["reply_id"] == "orders" and message.payload["title"] == "Order status"


def test_an_option_id_too_long_for_a_button_comes_back_through_its_digest(channel):
    long_id = "sku:" + "9" * 80  # callback_data holds 64 bytes
    contact = contact_resolve(channel=channel, external_id=CHAT, name="Amira Nasser")
    conversation = Conversation.objects.create(workspace=channel.workspace, contact=contact, channel=channel)
    options = [{"id": long_id, "title": "Reorder the eggs"}]
    Message.objects.create(
        workspace=channel.workspace,
        conversation=conversation,
        channel=channel,
        direction="out",
        sender_kind="bot",
        kind="interactive",
        text="Again?",
        payload={"options": options},
        provider_id=f"{CHAT}:31",
        state=DeliveryState.SENT,
    )
    data = callback_data_for(long_id)
    assert len(data.encode()) <= 64

    deliver(channel, tg.callback_query(tg.keyboard_message(31, "Again?", [("Reorder the eggs", data)]), data))

    choice = Message.objects.get(direction="in")
    assert choice.payload["reply_id"] == long_id
    assert choice.reply_to.provider_id == f"{CHAT}:31"


def test_a_plain_update_body_is_never_answered_with_a_bot_api_call(channel):
    assert TelegramConnector().acknowledge(channel, b"\xff garbage").content == b""


# Reachability and contacts across channels ---------------------------------------------------------


def test_blocking_the_bot_makes_the_contact_unreachable_and_unblocking_reachable_again(channel):
    deliver(channel, tg.text("hi"))

    deliver(channel, tg.my_chat_member("member", "kicked"))
    assert ContactIdentity.objects.get().reachable is False

    deliver(channel, tg.my_chat_member("kicked", "member"))
    assert ContactIdentity.objects.get().reachable is True


def test_one_contact_across_telegram_and_whatsapp_by_a_shared_phone_number(channel):
    whatsapp = make_whatsapp_channel(channel.workspace)
    response = post_whatsapp(Client(), whatsapp, envelope(messages_value(whatsapp_text("hi", wamid="wamid.X1"))))
    assert response.status_code == 200
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)

    deliver(channel, tg.contact("+201001234567"))

    assert Contact.objects.count() == 1
    contact = Contact.objects.get()
    assert {identity.channel.kind for identity in contact.identities.select_related("channel")} == {
        "whatsapp",
        "telegram",
    }
    assert Conversation.objects.filter(contact=contact).count() == 2


# Against the simulator -------------------------------------------------------------------------


def register_bot(simulator):
    simulator.post(
        "/_simulator/channels",
        {"kind": "telegram", "bot_token": tg.BOT_TOKEN, "username": "nile_basket_bot", "name": "Nile Basket"},
    )


def customer_writes(simulator, text="hello", **fields):
    return simulator.post(
        "/_simulator/inbound",
        {
            "kind": "telegram",
            "channel": tg.BOT_TOKEN,
            "user": CHAT,
            "name": "Amira Nasser",
            "type": "text",
            "text": text,
            **fields,
        },
    )


def outbox(simulator, method=None):
    calls = simulator.get("/_simulator/outbox", kind="telegram", channel=tg.BOT_TOKEN)
    return [call for call in calls if method in (None, call["method"])]


def fault(simulator, status, description, **parameters):
    body = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    simulator.post("/_simulator/faults", {"kind": "telegram", "channel": tg.BOT_TOKEN, "status": status, "body": body})


@pytest.fixture
def bot(db, simulator, settings, tmp_path):
    """A bot the customer has started (in the simulator as in Parley), and their conversation."""
    settings.MEDIA_ROOT = tmp_path
    register_bot(simulator)
    channel = tg.make_telegram_channel(make_workspace(slug="tg"), base_url=simulator.url)
    customer_writes(simulator)
    contact = contact_resolve(channel=channel, external_id=CHAT, name="Amira Nasser")
    conversation = Conversation.objects.create(workspace=channel.workspace, contact=contact, channel=channel)
    return channel, conversation, make_member(channel.workspace).user


def test_activating_the_channel_sets_the_webhook_with_the_secret(db, simulator, settings):
    settings.PUBLIC_URL = "http://127.0.0.1:8000"
    register_bot(simulator)
    channel = tg.make_telegram_channel(make_workspace(slug="act"), base_url=simulator.url)

    channel_activate(channel=channel)

    (call,) = outbox(simulator, "setWebhook")
    assert call["body"]["url"] == f"http://127.0.0.1:8000/webhooks/{channel.uuid}/"
    assert call["body"]["secret_token"] == webhook_secret(channel)
    assert call["body"]["allowed_updates"] == ["message", "edited_message", "callback_query", "my_chat_member"]
    info = simulator.post(f"/bot{tg.BOT_TOKEN}/getWebhookInfo")["result"]
    assert info["url"] == channel.webhook_url


def test_activating_with_a_revoked_token_is_a_credentials_error(db, simulator):
    channel = tg.make_telegram_channel(make_workspace(slug="bad"), base_url=simulator.url)

    with pytest.raises(ProviderError) as refused:
        channel_activate(channel=channel)

    assert refused.value.error_class == ErrorClass.CREDENTIALS and refused.value.code == "401"


def test_activating_when_telegram_refuses_the_url_is_fatal_with_its_reason(db, simulator, settings):
    settings.PUBLIC_URL = "https://parley.example.com"  # the simulator delivers to loopback only
    register_bot(simulator)
    channel = tg.make_telegram_channel(make_workspace(slug="url"), base_url=simulator.url)

    with pytest.raises(ProviderError) as refused:
        channel_activate(channel=channel)

    assert refused.value.error_class == ErrorClass.FATAL and "bad webhook" in refused.value.detail


def test_a_reply_goes_out_as_sendmessage_quoting_the_customers_message(bot, simulator):
    channel, conversation, agent = bot
    quoted = Message.objects.create(
        workspace=channel.workspace,
        conversation=conversation,
        channel=channel,
        direction="in",
        sender_kind="contact",
        text="hello",
        provider_id=f"{CHAT}:1",
        state=DeliveryState.RECEIVED,
    )
    message = message_send(conversation=conversation, author=agent, text="Your order ships today", reply_to=quoted)

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.SENT
    (call,) = outbox(simulator, "sendMessage")
    assert message.provider_id == call["id"] == f"{CHAT}:2"  # the customer's hello was message 1
    assert call["body"]["chat_id"] == CHAT and call["body"]["text"] == "Your order ships today"
    assert call["body"]["reply_parameters"]["message_id"] == 1
    assert call["reply_to"] == f"{CHAT}:1"


def test_interactive_options_become_an_inline_keyboard_one_button_per_row(bot, simulator):
    _channel, conversation, agent = bot
    long_id = "sku:" + "7" * 80
    options = [{"id": "orders", "title": "Order status"}, {"id": long_id, "title": "Reorder"}]
    message = message_send(
        conversation=conversation,
        author=agent,
        text="How can we help?",
        kind="interactive",
        payload={"options": options},
    )

    message_deliver(message_id=message.id)

    (call,) = outbox(simulator, "sendMessage")
    rows = call["body"]["reply_markup"]["inline_keyboard"]
    assert rows == [
        [{"text": "Order status", "callback_data": "orders"}],
        [{"text": "Reorder", "callback_data": callback_data_for(long_id)}],
    ]
    assert call["replies"][0] == {"id": "orders", "title": "Order status"}


def test_an_attached_photo_is_uploaded_with_its_caption(bot, simulator):
    _channel, conversation, agent = bot
    upload = SimpleUploadedFile("box.png", PNG, content_type="image/png")

    message = message_send(conversation=conversation, author=agent, text="Is it this one?", upload=upload)
    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.SENT
    (call,) = outbox(simulator, "sendPhoto")
    assert call["body"]["photo"]["bytes"] == len(PNG)
    assert call["body"]["caption"] == "Is it this one?"
    assert call["media"]["type"] == "image"


def test_a_document_goes_by_upload_and_a_location_by_sendlocation(bot, simulator):
    channel, _conversation, _agent = bot
    connector = TelegramConnector()
    document = {"content": b"%PDF-1.4 receipt", "mime_type": "application/pdf", "filename": "receipt.pdf"}

    connector.send(channel, OutboundMessage(recipient_id=CHAT, kind="media", media=document))
    connector.send(
        channel, OutboundMessage(recipient_id=CHAT, kind="location", payload={"latitude": 30.1, "longitude": 31.2})
    )

    (sent_document,) = outbox(simulator, "sendDocument")
    assert sent_document["body"]["document"]["filename"] == "receipt.pdf"
    (sent_location,) = outbox(simulator, "sendLocation")
    assert sent_location["body"]["latitude"] == 30.1


def test_a_text_longer_than_telegram_allows_goes_as_several_messages(bot, simulator):
    channel, _, _ = bot
    long_text = ("word " * 1000).strip()  # 4,999 characters

    result = TelegramConnector().send(channel, OutboundMessage(recipient_id=CHAT, kind="text", text=long_text))

    calls = outbox(simulator, "sendMessage")
    assert len(calls) == 2 and all(len(call["body"]["text"]) <= 4096 for call in calls)
    assert result.provider_id == calls[-1]["id"]


def test_a_customers_file_is_fetched_with_getfile(bot, simulator, settings):
    channel, _, _ = bot
    settings.PUBLIC_URL = "http://127.0.0.1:9"  # nobody listens: the webhook's body is all we need
    simulator.post("/_simulator/settings", {"kind": "telegram", "webhook_attempts": 1})
    channel_activate(channel=channel)
    customer_writes(simulator, type="document", caption="my receipt", wait=True)
    sent = simulator.get("/_simulator/webhooks", kind="telegram", channel=tg.BOT_TOKEN)
    update = next(webhook["body"] for webhook in sent if '"document"' in webhook["body"])

    deliver(channel, update.encode())
    attachment = Attachment.objects.get()
    attachment_fetch(attachment_id=attachment.id)

    attachment.refresh_from_db()
    assert attachment.state == "stored"
    assert attachment.content_type == "application/pdf" and attachment.filename == "receipt.pdf"
    assert attachment.file.read().startswith(b"%PDF")
    assert outbox(simulator, "getFile")


def test_a_file_over_the_20_mb_a_bot_may_download_is_marked_too_large(bot, simulator):
    channel, _, _ = bot
    deliver(channel, tg.media("video"))
    fault(simulator, 400, "Bad Request: file is too big")

    attachment_fetch(attachment_id=Attachment.objects.get().id)

    attachment = Attachment.objects.get()
    assert attachment.state == "too_large" and "file is too big" in attachment.error
    assert Message.objects.get().kind == "media"


# Telegram's errors -----------------------------------------------------------------------------


def test_a_429_is_retried_after_telegrams_retry_after(bot, simulator):
    channel, conversation, agent = bot
    fault(simulator, 429, "Too Many Requests: retry after 7", retry_after=7)

    with pytest.raises(ProviderError) as refused:
        TelegramConnector().send(channel, OutboundMessage(recipient_id=CHAT, kind="text", text="hi"))
    assert refused.value.error_class == ErrorClass.RETRY
    assert (refused.value.code, refused.value.retry_after) == ("429", 7.0)

    fault(simulator, 429, "Too Many Requests: retry after 7", retry_after=7)
    message = message_send(conversation=conversation, author=agent, text="Your order ships today")
    with pytest.raises(SendLater) as later:
        message_deliver(message_id=message.id)

    assert later.value.delay == 7.0
    message.refresh_from_db()
    assert message.state == DeliveryState.QUEUED and message.error_code == "429"


def test_the_simulator_can_enforce_one_message_a_second_per_chat(bot, simulator):
    channel, _, _ = bot
    simulator.post("/_simulator/settings", {"kind": "telegram", "per_chat_per_second": 1})
    connector = TelegramConnector()
    connector.send(channel, OutboundMessage(recipient_id=CHAT, kind="text", text="one"))

    with pytest.raises(ProviderError) as refused:
        connector.send(channel, OutboundMessage(recipient_id=CHAT, kind="text", text="two"))

    assert refused.value.code == "429" and refused.value.retry_after >= 1


def test_a_user_who_blocked_the_bot_becomes_unreachable(bot, simulator):
    _channel, conversation, agent = bot
    customer_writes(simulator, type="block")
    message = message_send(conversation=conversation, author=agent, text="Still there?")

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.FAILED and message.error_code == "403"
    assert "blocked" in message.error_reason
    assert conversation.contact.identities.get().reachable is False


@pytest.mark.parametrize(
    ("status", "description", "error_class"),
    [
        (400, "Bad Request: chat not found", ErrorClass.STOP_RECIPIENT),
        (403, "Forbidden: user is deactivated", ErrorClass.STOP_RECIPIENT),
        (401, "Unauthorized", ErrorClass.CREDENTIALS),
        (404, "Not Found", ErrorClass.CREDENTIALS),
        (502, "Bad Gateway", ErrorClass.RETRY),
        (400, "Bad Request: can't parse entities: Unsupported start tag", ErrorClass.FATAL),
    ],
)
def test_telegrams_errors_are_classified(bot, simulator, status, description, error_class):
    channel, _, _ = bot
    fault(simulator, status, description)

    with pytest.raises(ProviderError) as refused:
        TelegramConnector().send(channel, OutboundMessage(recipient_id=CHAT, kind="text", text="hi"))

    assert refused.value.error_class == error_class
    assert (refused.value.code, refused.value.detail) == (str(status), description)


def test_a_fatal_error_fails_the_message_with_telegrams_description(bot, simulator):
    _channel, conversation, agent = bot
    fault(simulator, 400, "Bad Request: message is too long")
    message = message_send(conversation=conversation, author=agent, text="hi")

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.FAILED
    assert (message.error_code, message.error_reason) == ("400", "Bad Request: message is too long")
    assert conversation.contact.identities.get().reachable is True


def test_a_network_failure_is_retried_and_never_shows_the_token(db):
    channel = tg.make_telegram_channel(make_workspace(slug="net"), base_url="http://127.0.0.1:9")

    with pytest.raises(ProviderError) as refused:
        TelegramConnector().send(channel, OutboundMessage(recipient_id=CHAT, kind="text", text="hi"))

    assert refused.value.error_class == ErrorClass.RETRY and refused.value.code == "network"
    assert tg.BOT_TOKEN not in refused.value.detail


# Live: the simulator plays Telegram against a running Parley --------------------------------------


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_button_pressed_in_telegram_is_answered_at_once_and_reaches_the_inbox(
    live_server_process, simulator, settings
):
    settings.PUBLIC_URL = live_server_process.url
    register_bot(simulator)
    channel = tg.make_telegram_channel(make_workspace(slug="live-tg"), base_url=simulator.url)
    channel_activate(channel=channel)

    assert customer_writes(simulator, "hi", wait=True)["status"] == 200
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)
    conversation = Conversation.objects.get(channel=channel)
    options = [{"id": "orders", "title": "Order status"}, {"id": "human", "title": "Talk to a person"}]
    menu = message_send(
        conversation=conversation, text="How can we help?", kind="interactive", payload={"options": options}
    )
    message_deliver(message_id=menu.id)
    _wait_for(lambda: Message.objects.get(pk=menu.id).state == DeliveryState.SENT, 10, "the menu sent")

    pressed = customer_writes(simulator, type="choice", choice={"id": "human"}, wait=True)

    assert pressed["status"] == 200
    (answer,) = outbox(simulator, "answerCallbackQuery")
    assert answer["via"] == "webhook_answer"
    assert answer["body"]["callback_query_id"] == pressed["id"].removeprefix("cb:")
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)
    choice = Message.objects.get(provider_id=pressed["id"])
    assert choice.kind == "interactive" and choice.text == "Talk to a person"
    assert choice.payload["reply_id"] == "human"
    assert choice.reply_to_id == menu.id
