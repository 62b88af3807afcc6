"""The WeChat Official Account channel: signed XML pushes through the real webhook and inbound
pipeline, and replies through the connector to the channel simulator over loopback."""

import contextlib
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from apps.connectors.base import ErrorClass, ParseError, ProviderError
from apps.connectors.registry import connector_for
from apps.connectors.services import channel_activate
from apps.contacts.models import ContactIdentity
from apps.contacts.services import contact_resolve
from apps.conversations.models import Attachment, Conversation, DeliveryState, InboundEvent, Message
from apps.conversations.services import SendLater, inbound_event_process, message_deliver, message_send
from apps.core.exceptions import DomainError
from apps.core.redis import get_redis, key
from tests.conftest import _wait_for
from tests.connectors import wechat_payloads as wx
from tests.factories import make_member, make_workspace

# A real PNG header is enough: nothing here decodes the picture.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def channel(db):
    return make_wechat_channel()


def make_wechat_channel(**settings):
    return wx.make_wechat_channel(make_workspace(name="Tea House"), **settings)


def push(channel, body: bytes, query: dict | None = None):
    return Client().post(wx.push_url(channel, query or wx.signed_query()), data=body, content_type="text/xml")


def deliver(channel, body: bytes):
    """Posts a push as WeChat does and applies it as the worker would."""
    response = push(channel, body)
    assert response.status_code == 200, response.content
    assert response.content == b"success"
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)
    return Message.objects.filter(channel=channel).order_by("-id").first()


# Handshake and signatures -----------------------------------------------------------------------


def test_the_handshake_echoes_echostr_when_the_signature_is_right(channel):
    response = Client().get(wx.push_url(channel, wx.signed_query(echostr="5837397749466374")))

    assert response.status_code == 200
    assert response.content == b"5837397749466374"


def test_the_handshake_signed_with_another_token_is_403(channel):
    response = Client().get(wx.push_url(channel, wx.signed_query("not-our-token", echostr="1")))

    assert response.status_code == 403


def test_without_a_token_the_channels_verify_token_signs(db):
    channel = make_wechat_channel()
    channel.credentials = {**channel.credentials, "token": ""}
    channel.save(update_fields=["credentials"])

    response = Client().get(wx.push_url(channel, wx.signed_query(channel.verify_token, echostr="ok")))

    assert response.content == b"ok"


def test_a_push_with_a_bad_signature_is_401_and_nothing_is_stored(channel):
    response = push(channel, wx.text("hi", msg_id=1), wx.signed_query("not-our-token"))

    assert response.status_code == 401
    assert response.json()["code"] == "bad_signature"
    assert not InboundEvent.objects.exists()


def test_a_push_without_a_signature_is_401(channel):
    response = Client().post(f"/webhooks/{channel.uuid}/", data=wx.text("hi", msg_id=1), content_type="text/xml")

    assert response.status_code == 401


def test_a_push_signed_ten_minutes_ago_is_refused(channel):
    response = push(channel, wx.text("hi", msg_id=1), wx.signed_query(age=600))

    assert response.status_code == 401
    assert not InboundEvent.objects.exists()


def test_a_replayed_signature_cannot_carry_another_body(channel):
    captured = wx.signed_query()
    assert push(channel, wx.text("Where is my tea?", msg_id=1), captured).status_code == 200

    replay = push(channel, wx.text("Refund me to this account", msg_id=2), captured)

    assert replay.status_code == 401
    assert InboundEvent.objects.count() == 1


# Inbound messages -------------------------------------------------------------------------------


def test_a_text_makes_a_contact_a_conversation_and_opens_the_48_hour_window(channel):
    message = deliver(channel, wx.text("Do you ship oolong to Shanghai?", msg_id=6054768590064713728))

    assert message.kind == "text" and message.text == "Do you ship oolong to Shanghai?"
    assert message.provider_id == "6054768590064713728"
    assert message.conversation.contact.identities.get().external_id == wx.OPENID
    assert message.conversation.window_expires_at > timezone.now() + timedelta(hours=47)


def test_an_image_is_kept_with_its_media_id_for_download(channel):
    message = deliver(channel, wx.image(msg_id=2, media_id="MEDIA_IMG_9"))

    assert message.kind == "media"
    assert message.payload["pic_url"].startswith("http://mmbiz.qpic.cn/")
    attachment = Attachment.objects.get(message=message)
    assert (attachment.provider_media_id, attachment.content_type) == ("MEDIA_IMG_9", "image/jpeg")


def test_a_voice_note_shows_wechats_recognised_text(channel):
    message = deliver(channel, wx.voice(msg_id=3, recognition="I want two boxes"))

    assert message.kind == "media" and message.text == "I want two boxes"
    assert Attachment.objects.get(message=message).content_type == "audio/amr"


@pytest.mark.parametrize("msg_type", ["video", "shortvideo"])
def test_videos_are_media_with_their_thumbnail(channel, msg_type):
    message = deliver(channel, wx.video(msg_type, msg_id=4))

    assert message.kind == "media"
    assert message.payload["thumb_media_id"] == "MEDIA_THUMB_1"
    assert Attachment.objects.get(message=message).provider_media_id == "MEDIA_VIDEO_1"


def test_a_location_has_its_coordinates_and_label(channel):
    message = deliver(channel, wx.location(msg_id=5))

    assert message.kind == "location" and message.text == "Tianhe, Guangzhou"
    assert (message.payload["latitude"], message.payload["longitude"]) == (23.134521, 113.358803)


def test_a_shared_link_is_a_text_with_the_link_in_its_payload(channel):
    message = deliver(channel, wx.link(msg_id=6))

    assert message.kind == "text"
    assert message.text == "Oolong guide\nhttps://tea.example/oolong"
    assert message.payload["link"]["description"] == "How to brew"


def test_a_tap_on_our_menu_message_comes_back_as_the_chosen_option(channel):
    message = deliver(channel, wx.menu_tap("track", "Track my order", msg_id=7))

    assert message.kind == "interactive" and message.text == "Track my order"
    assert message.payload == {"reply_id": "track", "title": "Track my order", "type": "msgmenu"}


def test_a_typed_number_answers_the_last_menu(channel):
    deliver(channel, wx.text("hello", msg_id=8))
    conversation = Conversation.objects.get(channel=channel)
    options = [{"id": "track", "title": "Track my order"}, {"id": "human", "title": "Talk to a person"}]
    message_send(conversation=conversation, text="How can we help?", kind="interactive", payload={"options": options})

    message = deliver(channel, wx.text("2", msg_id=9))

    assert message.kind == "interactive"
    assert message.payload["reply_id"] == "human"


def test_a_click_on_the_accounts_own_menu_is_a_choice(channel):
    message = deliver(channel, wx.event("CLICK", event_key="V1001_ORDERS"))

    assert message.kind == "interactive"
    assert message.payload["reply_id"] == "V1001_ORDERS"
    assert message.provider_id.startswith(f"{wx.OPENID}:")


@pytest.mark.parametrize("name", ["VIEW", "LOCATION"])
def test_menu_links_and_location_reports_are_not_messages(channel, name):
    deliver(channel, wx.event(name, event_key="https://tea.example/shop"))

    assert not Message.objects.exists()
    assert InboundEvent.objects.get().state == InboundEvent.State.PROCESSED


def test_an_unknown_message_type_is_kept_as_unsupported(channel):
    message = deliver(channel, wx.message("miniprogrampage", ("Title", "Shop"), msg_id=10))

    assert message.kind == "unsupported"
    assert message.payload["type"] == "miniprogrampage"
    assert message.payload["raw"]["Title"] == "Shop"


def test_an_unknown_event_is_kept_as_unsupported(channel):
    message = deliver(channel, wx.event("SCAN", event_key="123"))

    assert message.kind == "unsupported" and message.payload["type"] == "SCAN"


def test_a_push_wechat_retries_is_one_message(channel):
    body = wx.text("Is the shop open?", msg_id=11)
    for _ in range(3):  # each attempt is a new request, signed afresh
        deliver(channel, body)

    assert Message.objects.count() == 1
    assert InboundEvent.objects.count() == 3


def test_a_retried_click_is_one_choice(channel):
    body = wx.event("CLICK", create_time=1700000000, event_key="V1001_ORDERS")
    deliver(channel, body)
    deliver(channel, body)

    assert Message.objects.count() == 1


def test_xml_declaring_entities_is_refused_without_expanding_them(channel):
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime>"
        b"<MsgType>text</MsgType><Content>&b;</Content><MsgId>1</MsgId></xml>"
    )
    with pytest.raises(ParseError, match="DOCTYPE"):
        connector_for(channel).parse(channel, bomb)

    deliver(channel, bomb)

    assert InboundEvent.objects.get().state == InboundEvent.State.FAILED
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "body",
    [b"not xml at all", b"<html><body/></html>", wx.xml(("MsgType", "text"), ("Content", "no sender"))],
)
def test_a_malformed_push_is_acknowledged_then_parked_as_failed(channel, body):
    deliver(channel, body)

    event = InboundEvent.objects.get()
    assert event.state == InboundEvent.State.FAILED and event.error
    assert not Message.objects.exists()


def test_unfollowing_makes_the_customer_unreachable_and_following_again_restores_it(channel):
    deliver(channel, wx.event("subscribe", event_key=""))
    identity = ContactIdentity.objects.get(channel=channel)
    assert identity.reachable

    deliver(channel, wx.event("unsubscribe", event_key=""))
    identity.refresh_from_db()
    assert not identity.reachable

    deliver(channel, wx.event("subscribe", event_key=""))
    identity.refresh_from_db()
    assert identity.reachable
    assert not Message.objects.exists()


# Outbound ---------------------------------------------------------------------------------------


def register(simulator, channel, **extra):
    simulator.post(
        "/_simulator/channels",
        {
            "kind": "wechat",
            "app_id": channel.credentials["app_id"],
            "app_secret": channel.credentials["app_secret"],
            "token": channel.credentials["token"],
            "original_id": wx.ORIGINAL_ID,
            "name": channel.name,
            **extra,
        },
    )


def customer_does(simulator, channel, action: dict, **fields):
    return simulator.post(
        "/_simulator/inbound",
        {"kind": "wechat", "channel": channel.credentials["app_id"], "user": wx.OPENID, **action, **fields},
    )


def outbox(simulator, channel) -> list:
    return simulator.get("/_simulator/outbox", kind="wechat", channel=channel.credentials["app_id"])


def token_requests(simulator) -> list:
    return [r for r in simulator.get("/_simulator/requests", kind="wechat") if r["path"] == "/cgi-bin/token"]


@pytest.fixture
def account(db, simulator):
    """A follower who wrote a minute ago, in the simulator as in Parley."""
    channel = make_wechat_channel(base_url=simulator.url)
    register(simulator, channel)
    customer_does(simulator, channel, {"type": "text", "text": "hello"})
    contact = contact_resolve(channel=channel, external_id=wx.OPENID)
    now = timezone.now()
    conversation = Conversation.objects.create(
        workspace=channel.workspace,
        contact=contact,
        channel=channel,
        last_inbound_at=now,
        window_expires_at=now + timedelta(hours=48),
    )
    yield conversation
    get_redis().delete(key("wechat", "access-token", channel.credentials["app_id"]))


@pytest.fixture
def agent(account):
    return make_member(account.workspace).user


def send(conversation, agent, text="Your oolong ships today", **fields) -> Message:
    message = message_send(conversation=conversation, author=agent, text=text, **fields)
    message_deliver(message_id=message.id)
    message.refresh_from_db()
    return message


def test_a_reply_goes_out_as_a_customer_service_text(account, agent, simulator):
    message = send(account, agent)

    assert message.state == DeliveryState.SENT
    assert message.provider_id.startswith("wx-")
    sent = outbox(simulator, account.channel)[-1]
    assert sent["path"] == "/cgi-bin/message/custom/send"
    assert sent["body"] == {"touser": wx.OPENID, "msgtype": "text", "text": {"content": "Your oolong ships today"}}


def test_the_access_token_is_fetched_once_for_many_replies(account, agent, simulator):
    for text in ("one", "two", "three"):
        assert send(account, agent, text).state == DeliveryState.SENT

    assert len(token_requests(simulator)) == 1


def test_an_expired_token_is_replaced_once_and_the_reply_still_goes(account, agent, simulator):
    send(account, agent, "first")
    simulator.post("/_simulator/tokens/expire", {"kind": "wechat", "channel": account.channel.credentials["app_id"]})

    message = send(account, agent, "second")

    assert message.state == DeliveryState.SENT
    assert len(token_requests(simulator)) == 2
    sends = [r for r in simulator.get("/_simulator/requests", kind="wechat") if r["path"].endswith("/custom/send")]
    assert len(sends) == 3  # first, second refused with 42001, second again with the new token
    assert [r["body"]["text"]["content"] for r in outbox(simulator, account.channel) if r["state"] == "sent"] == [
        "first",
        "second",
    ]


def test_saving_the_channel_checks_its_app_id_and_secret(account, simulator):
    channel_activate(channel=account.channel)
    register(simulator, account.channel, app_secret="the-real-secret")

    with pytest.raises(ProviderError) as refused:
        channel_activate(channel=account.channel)

    assert (refused.value.error_class, refused.value.code) == (ErrorClass.CREDENTIALS, "40125")
    assert "app secret" in refused.value.detail


def test_a_wrong_app_secret_fails_as_a_credentials_problem(account, agent, simulator):
    register(simulator, account.channel, app_secret="the-real-secret")

    message = send(account, agent)

    assert message.state == DeliveryState.FAILED
    assert message.error_code == "40125"
    assert "app secret" in message.error_reason


def test_a_picture_is_uploaded_then_sent_with_its_caption_after_it(account, agent, simulator, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    upload = SimpleUploadedFile("teapot.png", PNG, "image/png")

    message = send(account, agent, "The teapot you asked about", upload=upload)

    assert message.state == DeliveryState.SENT
    uploads = [r for r in simulator.get("/_simulator/requests", kind="wechat") if r["path"] == "/cgi-bin/media/upload"]
    assert uploads[0]["query"]["type"] == "image"
    image, caption = outbox(simulator, account.channel)[-2:]
    assert image["body"]["msgtype"] == "image"
    assert image["media"]["url"].startswith(simulator.url)
    assert caption["body"]["text"]["content"] == "The teapot you asked about"


def test_a_pdf_is_named_in_a_text_because_wechat_has_no_file_messages(account, agent, simulator, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    upload = SimpleUploadedFile("invoice-1001.pdf", b"%PDF-1.4 invoice", "application/pdf")

    send(account, agent, "Your invoice", upload=upload)

    sent = outbox(simulator, account.channel)[-1]["body"]
    assert sent["msgtype"] == "text"
    assert sent["text"]["content"] == "Your invoice\n📎 invoice-1001.pdf"


def test_options_go_out_as_wechats_menu_message(account, agent, simulator):
    options = [{"id": "track", "title": "Track my order"}, {"id": "human", "title": "Talk to a person"}]

    send(account, agent, "How can we help?", kind="interactive", payload={"options": options})

    sent = outbox(simulator, account.channel)[-1]
    assert sent["body"]["msgtype"] == "msgmenu"
    assert sent["body"]["msgmenu"] == {
        "head_content": "How can we help?",
        "list": [{"id": "track", "content": "Track my order"}, {"id": "human", "content": "Talk to a person"}],
        "tail_content": "",
    }
    assert sent["replies"] == [
        {"id": "track", "title": "Track my order"},
        {"id": "human", "title": "Talk to a person"},
    ]


def test_a_reply_wechat_finds_past_its_48_hours_fails_as_window_closed(account, agent, simulator):
    simulator.post(
        "/_simulator/window",
        {"kind": "wechat", "channel": account.channel.credentials["app_id"], "user": wx.OPENID, "hours_ago": 49},
    )

    message = send(account, agent)

    assert message.state == DeliveryState.FAILED
    assert message.error_code == "45015"
    assert "48 hours" in message.error_reason


def test_a_reply_over_wechats_quota_fails_with_the_reason_spelled_out(account, agent, simulator):
    register(simulator, account.channel, replies_per_window=1)
    assert send(account, agent, "one").state == DeliveryState.SENT

    message = send(account, agent, "two")

    assert message.state == DeliveryState.FAILED
    assert message.error_code == "45047"
    assert "quota" in message.error_reason and "used up" in message.error_reason


def test_a_customer_who_unfollowed_becomes_unreachable(account, agent, simulator):
    customer_does(simulator, account.channel, {"type": "unsubscribe"})

    message = send(account, agent)

    assert message.state == DeliveryState.FAILED and message.error_code == "43004"
    assert not ContactIdentity.objects.get(channel=account.channel).reachable


def test_system_busy_is_retried_later(account, agent, simulator):
    simulator.post(
        "/_simulator/faults",
        {
            "kind": "wechat",
            "channel": account.channel.credentials["app_id"],
            "status": 200,
            "body": {"errcode": -1, "errmsg": "system error"},
        },
    )
    message = message_send(conversation=account, author=agent, text="hello")

    with pytest.raises(SendLater):
        message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.QUEUED and message.error_code == "-1"


@pytest.mark.parametrize(
    ("status", "body", "state", "reason"),
    [
        (200, {"errcode": 45009, "errmsg": "reach max api daily quota limit"}, DeliveryState.QUEUED, "daily quota"),
        (502, "Bad Gateway", DeliveryState.QUEUED, "unavailable"),
        (200, {"errcode": 48001, "errmsg": "api unauthorized"}, DeliveryState.FAILED, "api unauthorized"),
    ],
    ids=["api quota: retried", "http 502: retried", "anything else: failed with errmsg"],
)
def test_other_wechat_errors_are_retried_or_failed_with_wechats_words(
    account, agent, simulator, status, body, state, reason
):
    simulator.post(
        "/_simulator/faults",
        {"kind": "wechat", "channel": account.channel.credentials["app_id"], "status": status, "body": body},
    )
    message = message_send(conversation=account, author=agent, text="hello")

    with contextlib.suppress(SendLater):  # a retried error asks the task to come back later
        message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == state
    assert reason in message.error_reason


def test_a_customers_picture_is_downloaded_with_the_access_token(account, simulator):
    customer_does(simulator, account.channel, {"type": "image"})
    thread = simulator.get(
        "/_simulator/thread", kind="wechat", channel=account.channel.credentials["app_id"], user=wx.OPENID
    )
    media_id = thread["messages"][-1]["preview"]["media"]["id"]

    media = connector_for(account.channel).fetch_media(account.channel, {"id": media_id}, 1024 * 1024)

    assert media.mime_type == "image/png" and media.content.startswith(b"\x89PNG")


def test_a_customers_video_is_downloaded_from_the_link_wechat_gives(account, simulator):
    customer_does(simulator, account.channel, {"type": "video"})
    thread = simulator.get(
        "/_simulator/thread", kind="wechat", channel=account.channel.credentials["app_id"], user=wx.OPENID
    )
    media_id = thread["messages"][-1]["preview"]["media"]["id"]

    media = connector_for(account.channel).fetch_media(account.channel, {"id": media_id}, 1024 * 1024)

    assert media.mime_type == "video/mp4" and media.content


def test_an_unknown_media_id_is_a_fatal_download_error(account):
    with pytest.raises(ProviderError) as refused:
        connector_for(account.channel).fetch_media(account.channel, {"id": "gone"}, 1024)

    assert (refused.value.error_class, refused.value.code) == (ErrorClass.FATAL, "40007")


# The local window and quota ---------------------------------------------------------------------


def test_parley_refuses_a_reply_48_hours_after_the_customer_wrote(account, agent):
    Conversation.objects.filter(pk=account.pk).update(window_expires_at=timezone.now() - timedelta(minutes=1))
    account.refresh_from_db()

    with pytest.raises(DomainError) as refused:
        message_send(conversation=account, author=agent, text="Still there?")

    assert refused.value.code == "window_closed"
    assert "48 hours" in refused.value.detail


def test_parley_refuses_a_sixth_reply_before_the_customer_writes_again(account, agent):
    for n in range(5):
        message_send(conversation=account, author=agent, text=f"update {n}")

    with pytest.raises(DomainError) as refused:
        message_send(conversation=account, author=agent, text="one more")

    assert refused.value.code == "window_quota"
    assert "5 messages" in refused.value.detail


# From the simulator's customer to the inbox, over a live server ---------------------------------


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_menu_tap_in_wechat_reaches_the_inbox_as_the_chosen_option(
    live_server_process, celery_worker_process, simulator
):
    channel = make_wechat_channel(base_url=simulator.url)
    register(simulator, channel, webhook_url=f"{live_server_process.url}/webhooks/{channel.uuid}/")
    agent = make_member(channel.workspace).user
    assert customer_does(simulator, channel, {"type": "text", "text": "hi"}, wait=True)["status"] == 200
    _wait_for(lambda: Message.objects.filter(channel=channel).exists(), 30, "the customer's first message")
    conversation = Conversation.objects.get(channel=channel)

    options = [{"id": "track", "title": "Track my order"}, {"id": "human", "title": "Talk to a person"}]
    message_send(
        conversation=conversation,
        author=agent,
        text="How can we help?",
        kind="interactive",
        payload={"options": options},
    )
    _wait_for(lambda: any(r["type"] == "msgmenu" for r in outbox(simulator, channel)), 30, "the menu at WeChat")
    answer = customer_does(
        simulator, channel, {"type": "choice", "choice": {"id": "human", "title": "Talk to a person"}}, wait=True
    )

    assert answer["status"] == 200
    _wait_for(
        lambda: Message.objects.filter(channel=channel, kind="interactive", direction="in").exists(), 30, "the tap"
    )
    tap = Message.objects.get(channel=channel, kind="interactive", direction="in")
    assert (tap.text, tap.payload["reply_id"]) == ("Talk to a person", "human")
    assert not any(push["answer"] for push in simulator.get("/_simulator/webhooks", kind="wechat"))
    get_redis().delete(key("wechat", "access-token", channel.credentials["app_id"]))


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_the_simulators_handshake_and_pushes_pass_and_forged_ones_do_not(live_server_process, simulator):
    channel = make_wechat_channel(base_url=simulator.url)
    register(simulator, channel, webhook_url=f"{live_server_process.url}/webhooks/{channel.uuid}/")
    app_id = channel.credentials["app_id"]

    handshake = simulator.post("/_simulator/verify", {"kind": "wechat", "channel": app_id})
    statuses = {
        mode: simulator.post(
            "/_simulator/inbound/raw",
            {"kind": "wechat", "channel": app_id, "body": wx.text("hi", msg_id=1).decode(), "signature": mode},
        )["statuses"]
        for mode in ("good", "bad", "stale", "none")
    }

    assert handshake["ok"] is True
    assert statuses == {"good": [200], "bad": [401], "stale": [401], "none": [401]}
    assert InboundEvent.objects.filter(channel=channel).count() == 1
