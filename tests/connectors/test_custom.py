"""The custom channel (docs/channels/custom.md): a shop's own app posts signed JSON events to
Parley, and Parley posts signed replies to the app, here played by the channel simulator.

Signatures are computed here as the documentation tells an app developer to, independently of
Parley's own signing code."""

import base64
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.connectors.base import ProviderError
from apps.connectors.models import Channel
from apps.connectors.services import channel_activate
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
from apps.core.redis import get_redis, key
from tests.conftest import _wait_for
from tests.conversations.whatsapp import envelope, make_whatsapp_channel, messages_value, post_webhook, text
from tests.factories import make_member, make_workspace

SECRET = "shop-app-secret"
APP_ID = "shop-app"
USER = "user-42"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "channels" / "custom.md"


def make_custom_channel(workspace, *, credentials=None, **settings) -> Channel:
    return Channel.objects.create(
        workspace=workspace,
        kind="custom",
        name="Shop app",
        credentials={"secret": SECRET} if credentials is None else credentials,
        settings={"outbound_url": "http://127.0.0.1:9/unused", **settings},
    )


def signature(raw: bytes, secret: str = SECRET, at: int | None = None) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`, as the documentation says."""
    t = int(time.time()) if at is None else at
    return f"t={t},v1=" + hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()


def post(channel, body, *, header: str | None = None, content_type="application/json", **signing):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"X-Parley-Signature": signature(raw, **signing) if header is None else header}
    return Client().post(f"/webhooks/{channel.uuid}/", raw, content_type=content_type, headers=headers)


def deliver(channel, *events):
    """Posts the events as the app would, then applies them as the worker would."""
    response = post(channel, {"events": list(events)})
    assert response.status_code == 200, response.content
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)


def said(message_id="msg-1", sender=None, **fields) -> dict:
    return {"type": "message", "id": message_id, "sender": sender or {"id": USER, "name": "Amira"}, **fields}


def receipt(message_id, state, **fields) -> dict:
    return {"type": "status", "id": message_id, "state": state, **fields}


def sent_by_parley(channel, provider_id="parley-77", **fields) -> Message:
    """An operator's message the app accepted, as message_deliver leaves it."""
    contact = contact_resolve(channel=channel, external_id=USER, name="Amira")
    conversation, _ = Conversation.objects.get_or_create(
        contact=contact, channel=channel, defaults={"workspace": channel.workspace}
    )
    return Message.objects.create(
        workspace=channel.workspace,
        conversation=conversation,
        channel=channel,
        direction="out",
        sender_kind="agent",
        kind=fields.pop("kind", "text"),
        text=fields.pop("text", "It ships today"),
        provider_id=provider_id,
        state=DeliveryState.SENT,
        **fields,
    )


@pytest.fixture
def channel(db):
    return make_custom_channel(make_workspace(name="Nile Basket", slug="nile"))


# Signatures ------------------------------------------------------------------------------------


def test_a_signed_message_is_stored_and_answered_ok(channel):
    response = post(channel, {"events": [said(text="hello")]})

    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert InboundEvent.objects.count() == 1


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda raw: "", id="missing"),
        pytest.param(lambda raw: signature(raw, secret="another-secret"), id="another secret"),
        pytest.param(lambda raw: signature(raw, at=int(time.time()) - 330), id="older than five minutes"),
        pytest.param(lambda raw: signature(raw, at=int(time.time()) + 330), id="from the future"),
        pytest.param(lambda raw: signature(raw + b" "), id="over other bytes"),
        pytest.param(lambda raw: signature(raw).split(",")[1], id="without timestamp"),
        pytest.param(lambda raw: "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest(), id="meta"),
    ],
)
def test_a_bad_missing_or_stale_signature_is_401_and_nothing_is_stored(channel, header):
    raw = json.dumps({"events": [said(text="hello")]}).encode()

    response = post(channel, raw, header=header(raw))

    assert response.status_code == 401
    assert response.json()["code"] == "bad_signature"
    assert not InboundEvent.objects.exists()


def test_without_a_secret_the_channels_verify_token_signs(db):
    channel = make_custom_channel(make_workspace(slug="token"), credentials={})

    assert post(channel, {"events": [said(text="hi")]}, secret=SECRET).status_code == 401
    assert post(channel, {"events": [said(text="hi")]}, secret=channel.verify_token).status_code == 200


def test_two_signatures_let_an_app_change_its_secret_without_downtime(channel):
    raw = json.dumps({"events": [said(text="hello")]}).encode()
    now = int(time.time())
    old, new = signature(raw, secret="old-secret", at=now), signature(raw, at=now)

    response = post(channel, raw, header=f"{old},v1={new.split('v1=')[1]}")

    assert response.status_code == 200


# Malformed bodies ------------------------------------------------------------------------------


MALFORMED = [
    pytest.param(b"not json", "not JSON", id="not json"),
    pytest.param([], '"events" list', id="not an object"),
    pytest.param({"messages": []}, '"events" list', id="no events"),
    pytest.param({"events": []}, "1 to 100 events; it holds 0", id="no event"),
    pytest.param({"events": [said(f"m{n}", text="hi") for n in range(101)]}, "it holds 101", id="101 events"),
    pytest.param({"events": ["hello"]}, "events[0] must be an object", id="event not an object"),
    pytest.param({"events": [{"id": "m1", "text": "hi"}]}, 'events[0] has no "type"', id="no type"),
    pytest.param({"events": [said(type="typing")]}, "events[0].type must be", id="unknown type"),
    pytest.param({"events": [{"type": "message", "sender": {"id": USER}, "text": "x"}]}, 'has no "id"', id="no id"),
    pytest.param({"events": [said(message_id=1042, text="x")]}, "events[0].id must be a string", id="number id"),
    pytest.param({"events": [said(message_id="parley-9", text="x")]}, "Parley's own", id="parley id"),
    pytest.param(
        {"events": [said(sender={"name": "Amira"}, text="x")]}, "events[0].sender.id is missing", id="sender"
    ),
    pytest.param({"events": [said(text="x" * 4097)]}, "events[0].text has 4097 characters", id="text too long"),
    pytest.param({"events": [said()]}, "nothing to show", id="empty message"),
    pytest.param({"events": [said(text="  ")]}, "nothing to show", id="blank text"),
    pytest.param(
        {"events": [said(attachments=[{"url": "ftp://files.example/a.jpg"}])]},
        "events[0].attachments[0].url 'ftp://files.example/a.jpg' is not an http(s) URL",
        id="ftp url",
    ),
    pytest.param({"events": [said(attachments=[{"name": "a.jpg"}])]}, "attachments[0].url is missing", id="no url"),
    pytest.param(
        {"events": [said(attachments=[{"url": "https://f.example/a", "mime_type": "jpeg"}])]},
        "not a type/subtype",
        id="bad mime type",
    ),
    pytest.param({"events": [said(choice={"id": "track"})]}, "events[0].choice must be an object", id="no title"),
    pytest.param(
        {"events": [said(location={"latitude": 91, "longitude": 31})]},
        "location.latitude must be a number from -90 to 90",
        id="latitude",
    ),
    pytest.param(
        {"events": [said(choice={"id": "a", "title": "A"}, location={"latitude": 1, "longitude": 2})]},
        "mixes choice and location",
        id="mixed",
    ),
    pytest.param({"events": [said(text="x", timestamp=1764672000000)]}, "looks like milliseconds", id="ms"),
    pytest.param(
        {"events": [said(sender={"id": USER, "phone": "0100 123 4567"}, text="x")]},
        "international form",
        id="local phone",
    ),
    pytest.param({"events": [said(sender={"id": USER, "email": "amira"}, text="x")]}, "not an email", id="email"),
    pytest.param({"events": [receipt("parley-1", "seen")]}, "events[0].state must be one of", id="state"),
    pytest.param(
        {"events": [said("m1", text="fine"), said("m2", text="x" * 5000)]}, "events[1].text", id="second event"
    ),
]


@pytest.mark.parametrize(("body", "problem"), MALFORMED)
def test_a_malformed_body_is_400_naming_the_problem_and_nothing_is_stored(channel, body, problem):
    response = post(channel, body)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_payload"
    assert problem in response.json()["detail"]
    assert not InboundEvent.objects.exists()


def test_a_body_posted_as_a_form_is_400_naming_the_content_type(channel):
    response = post(channel, {"events": [said(text="hi")]}, content_type="application/x-www-form-urlencoded")

    assert response.status_code == 400
    assert "Content-Type: application/json" in response.json()["detail"]


# Each event ------------------------------------------------------------------------------------


def test_a_text_message_makes_a_contact_a_conversation_and_a_message(channel):
    sender = {"id": USER, "name": "Amira Hassan", "phone": "+201001234567", "email": "Amira@Example.com"}

    deliver(channel, said("msg-1", sender=sender, text="Where is my order?", timestamp=1764672000))

    message = Message.objects.get()
    assert (message.kind, message.text, message.provider_id) == ("text", "Where is my order?", "msg-1")
    assert message.provider_timestamp.timestamp() == 1764672000
    contact = message.conversation.contact
    assert (contact.name, contact.phone, contact.email) == ("Amira Hassan", "+201001234567", "amira@example.com")
    assert contact.identities.get().external_id == USER
    assert message.conversation.window_expires_at is None  # no reply window on the app's channel


def test_a_choice_comes_back_as_the_chosen_option(channel):
    deliver(channel, said(choice={"id": "track", "title": "Track my order"}))

    message = Message.objects.get()
    assert message.kind == "interactive"
    assert message.text == "Track my order"
    assert message.payload == {"reply_id": "track", "title": "Track my order", "type": "choice"}


def test_a_bare_number_answers_the_last_menu_sent(channel):
    options = [{"id": "track", "title": "Track my order"}, {"id": "human", "title": "Talk to a person"}]
    sent_by_parley(channel, kind="interactive", text="How can we help?", payload={"options": options})

    deliver(channel, said(text="2"))

    message = Message.objects.filter(direction="in").get()
    assert message.kind == "interactive"
    assert message.payload["reply_id"] == "human"


def test_a_location_keeps_its_coordinates_and_name(channel):
    location = {"latitude": 30.0444, "longitude": 31.2357, "name": "Tahrir Square", "address": "Cairo, Egypt"}

    deliver(channel, said(location=location))

    message = Message.objects.get()
    assert (message.kind, message.text) == ("location", "Tahrir Square")
    assert message.payload == location


def test_a_reply_is_linked_to_the_message_it_answers(channel):
    ours = sent_by_parley(channel, provider_id="parley-5120")

    deliver(channel, said("msg-2", text="Thanks!", reply_to="parley-5120"))

    assert Message.objects.get(provider_id="msg-2").reply_to == ours


def test_an_attachment_is_expected_with_its_caption(channel):
    url = "https://files.shop.example/chat/7f3a/box.jpg"

    deliver(channel, said(text="The box arrived like this", attachments=[{"url": url}, {"url": f"{url}?v=2"}]))

    message = Message.objects.get()
    assert (message.kind, message.text) == ("media", "The box arrived like this")
    first, second = message.attachments.order_by("id")
    assert (first.provider_media_id, first.filename, first.content_type) == (url, "box.jpg", "image/jpeg")
    assert second.provider_media_id == f"{url}?v=2"


def test_the_same_message_id_twice_is_one_message(channel):
    deliver(channel, said("msg-1", text="hello"))
    deliver(channel, said("msg-1", text="hello"), said("msg-1", text="hello"))

    assert Message.objects.count() == 1


def test_receipts_move_parleys_message_to_delivered_then_read(channel):
    message = sent_by_parley(channel)

    deliver(channel, receipt("parley-77", "delivered", timestamp=1764672030))
    message.refresh_from_db()
    assert message.state == "delivered"
    assert message.delivered_at.timestamp() == 1764672030

    deliver(channel, receipt("parley-77", "read"), receipt("parley-77", "delivered"))
    message.refresh_from_db()
    assert message.state == "read"  # a late "delivered" does not step back


def test_a_failed_receipt_shows_the_apps_reason_to_the_operator(channel):
    message = sent_by_parley(channel)

    deliver(channel, receipt("parley-77", "failed", error={"code": "app_uninstalled", "reason": "App removed."}))

    message.refresh_from_db()
    assert (message.state, message.error_code, message.error_reason) == ("failed", "app_uninstalled", "App removed.")


def test_one_customer_is_one_contact_across_whatsapp_and_the_app_by_phone(channel):
    whatsapp = make_whatsapp_channel(channel.workspace)
    response = post_webhook(Client(), whatsapp, envelope(messages_value(text("hi on WhatsApp", wamid="wamid.1"))))
    assert response.status_code == 200
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)

    deliver(channel, said(sender={"id": USER, "phone": "+20 100 123 4567"}, text="hi from the app"))

    assert Contact.objects.count() == 1
    assert Conversation.objects.count() == 2
    assert {i.channel.kind for i in ContactIdentity.objects.all()} == {"whatsapp", "custom"}


# The documentation's examples ------------------------------------------------------------------


def documented_bodies() -> list[str]:
    return re.findall(r"^send '(.*)'$", DOCS.read_text(), flags=re.MULTILINE)


def test_every_send_example_of_the_documentation_is_accepted_and_applied(channel):
    for provider_id in ("parley-5120", "parley-5121", "parley-5122"):
        sent_by_parley(channel, provider_id=provider_id)
    bodies = documented_bodies()
    assert len(bodies) == 6

    for body in bodies:
        response = post(channel, body.encode())
        assert response.status_code == 200, (body, response.content)
        inbound_event_process(event_id=InboundEvent.objects.latest("id").id)

    kinds = list(Message.objects.filter(direction="in").order_by("id").values_list("kind", flat=True))
    assert kinds == ["text", "media", "interactive", "location"]
    states = dict(Message.objects.filter(direction="out").values_list("provider_id", "state"))
    assert states == {"parley-5120": "delivered", "parley-5121": "read", "parley-5122": "failed"}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the documented recipe uses openssl")
def test_the_documented_shell_recipe_signs_as_parley_verifies():
    recipe = re.search(r"^\s*(SIG=\$\(printf .*)$", DOCS.read_text(), flags=re.MULTILINE).group(1)
    body = documented_bodies()[0]

    script = f'T=1764672000; SECRET={SECRET}; {recipe}; echo "t=$T,v1=$SIG"'
    result = subprocess.run(["bash", "-c", script, "bash", body], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == signature(body.encode(), at=1764672000)


# Replies to the app, against the simulator -----------------------------------------------------


@pytest.fixture
def app(db, simulator, settings, tmp_path):
    """A channel whose outbound_url is the simulator playing the app's backend, and a customer
    who wrote from the app."""
    settings.MEDIA_ROOT = tmp_path
    channel = make_custom_channel(make_workspace(slug="app"), outbound_url=f"{simulator.url}/custom/{APP_ID}/outbound")
    register_app(simulator, channel, webhook_url=f"http://127.0.0.1:9/webhooks/{channel.uuid}/")
    contact = contact_resolve(channel=channel, external_id=USER, name="Amira")
    conversation = Conversation.objects.create(workspace=channel.workspace, contact=contact, channel=channel)
    return conversation


def register_app(simulator, channel, *, webhook_url):
    simulator.post(
        "/_simulator/channels",
        {"kind": "custom", "app_id": APP_ID, "name": "Shop app", "secret": SECRET, "webhook_url": webhook_url},
    )


def send(conversation, **fields) -> Message:
    agent = make_member(conversation.workspace).user
    message = message_send(conversation=conversation, author=agent, **fields)
    message_deliver(message_id=message.id)
    message.refresh_from_db()
    return message


def outbox(simulator) -> list:
    return simulator.get("/_simulator/outbox", kind="custom", channel=APP_ID)


def test_a_reply_reaches_the_app_signed_and_is_sent_under_parleys_id(app, simulator):
    message = send(app, text="It left our warehouse this morning.")

    assert message.state == DeliveryState.SENT
    assert message.provider_id == f"parley-{message.id}"
    (call,) = outbox(simulator)
    assert call["http_status"] == 200  # the simulator checked X-Parley-Signature
    assert call["delivery"] == message.provider_id  # X-Parley-Delivery
    assert call["body"] == {
        "id": message.provider_id,
        "recipient": {"id": USER},
        "text": "It left our warehouse this morning.",
        "type": "text",
    }


def test_a_reply_signed_with_another_secret_is_refused_by_the_app_as_a_credentials_error(app, simulator):
    Channel.objects.filter(pk=app.channel_id).update(credentials={"secret": "not-the-apps"})

    message = send(app, text="hello")

    assert (message.state, message.error_code) == ("failed", "401")
    assert "does not match this app's secret" in message.error_reason
    assert outbox(simulator)[0]["errors"][0]["code"] == "bad_signature"


def test_a_file_goes_to_the_app_inline_as_base64(app, simulator):
    pdf = sample_for("document").data

    message = send(app, text="Your invoice", upload=SimpleUploadedFile("invoice 1042.pdf", pdf, "application/pdf"))

    assert message.state == DeliveryState.SENT
    (call,) = outbox(simulator)
    attachment = call["body"]["attachment"]
    assert call["body"]["type"] == "media" and call["body"]["text"] == "Your invoice"
    assert (attachment["filename"], attachment["mime_type"]) == ("invoice_1042.pdf", "application/pdf")
    assert base64.b64decode(attachment["content_base64"]) == pdf
    assert httpx.get(call["media"]["url"]).content == pdf  # the app kept the file it was sent


def test_options_go_to_the_app_as_a_menu_with_a_numbered_fallback(app, simulator):
    options = [
        {"id": "track", "title": "Track my order", "description": "Where it is now"},
        {"id": "human", "title": "Talk to a person"},
    ]

    send(app, text="How can we help?", kind="interactive", payload={"options": options})

    (call,) = outbox(simulator)
    assert call["body"]["type"] == "interactive"
    assert call["body"]["options"] == options
    assert call["body"]["fallback_text"] == "How can we help?\n1. Track my order\n2. Talk to a person"
    assert call["replies"] == [
        {"id": "track", "title": "Track my order"},
        {"id": "human", "title": "Talk to a person"},
    ]


def test_a_location_goes_to_the_app_with_its_coordinates(app, simulator):
    location = {"latitude": 30.0444, "longitude": 31.2357, "name": "Our shop"}

    send(app, kind="location", payload=location)

    assert outbox(simulator)[0]["body"]["location"] == location


def test_an_app_answering_a_retry_it_already_showed_shows_it_once(app, simulator):
    from apps.connectors.base import OutboundMessage
    from apps.connectors.registry import connector_for

    channel = app.channel
    reply = OutboundMessage(recipient_id=USER, kind="text", text="hello", context={"message_uuid": "parley-1"})
    connector_for(channel).send(channel, reply)
    connector_for(channel).send(channel, reply)

    assert len(outbox(simulator)) == 1


def fault(simulator, status, body, headers=None):
    simulator.post(
        "/_simulator/faults",
        {"kind": "custom", "channel": APP_ID, "status": status, "body": body, "headers": headers or {}},
    )


@pytest.fixture
def throttle(app):
    """The channel's token bucket, emptied by a 429; cleared afterwards, since the test Redis is
    shared with other test runs."""
    bucket = key("bucket", f"channel:{app.channel_id}")
    yield bucket
    get_redis().delete(bucket)


def test_a_busy_app_is_tried_again_after_its_retry_after(app, simulator, throttle):
    fault(simulator, 429, {"detail": "slow down"}, {"Retry-After": "7"})
    message = message_send(conversation=app, author=None, text="hello", sender_kind="bot")

    with pytest.raises(SendLater) as later:
        message_deliver(message_id=message.id)

    assert later.value.delay == 7
    message.refresh_from_db()
    assert (message.state, message.error_code, message.error_reason) == ("queued", "429", "slow down")
    with pytest.raises(SendLater):  # every worker holds back from this channel meanwhile
        message_deliver(message_id=message.id)
    get_redis().delete(throttle)  # seven seconds later
    message_deliver(message_id=message.id)
    message.refresh_from_db()
    assert message.state == DeliveryState.SENT


@pytest.mark.parametrize("outbound_url", ["down", "http://127.0.0.1:9/unreachable"])
def test_an_app_that_is_down_is_tried_again_later(app, simulator, outbound_url):
    if outbound_url == "down":
        fault(simulator, 503, "upstream unavailable")
    else:
        Channel.objects.filter(pk=app.channel_id).update(settings={"outbound_url": outbound_url})
    message = message_send(conversation=app, author=None, text="hello", sender_kind="bot")

    with pytest.raises(SendLater):
        message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == "queued"
    assert message.error_code in ("503", "network")


def test_410_gone_stops_sending_to_that_customer_on_the_channel(app, simulator):
    fault(simulator, 410, {"detail": "user-42 deleted their account"})

    message = send(app, text="hello")

    assert (message.state, message.error_code) == ("failed", "410")
    assert message.error_reason == "user-42 deleted their account"
    assert app.contact.identities.get(channel=app.channel).reachable is False


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (401, {"detail": "unknown key"}, "unknown key"),
        (403, "", "The app refused Parley's signature: compare the secrets."),
        (400, {"code": "invalid", "detail": "recipient.id user-42 is unknown"}, "recipient.id user-42 is unknown"),
        (422, "no such user", "no such user"),
    ],
)
def test_an_app_refusing_a_message_fails_it_with_the_apps_own_words(app, simulator, status, body, reason):
    fault(simulator, status, body)

    message = send(app, text="hello")

    assert (message.state, message.error_code, message.error_reason) == ("failed", str(status), reason)


def test_a_channel_without_an_outbound_url_fails_the_reply_saying_so(app):
    Channel.objects.filter(pk=app.channel_id).update(settings={})

    message = send(app, text="hello")

    assert (message.state, message.error_code) == ("failed", "no_outbound_url")


def test_saving_a_channel_without_an_outbound_url_is_flagged_at_once(db):
    channel = make_custom_channel(make_workspace(slug="setup"), outbound_url="")

    with pytest.raises(ProviderError) as refused:
        channel_activate(channel=channel)

    assert refused.value.code == "no_outbound_url"


# Files from the app ----------------------------------------------------------------------------


def photo_url_from_the_app(simulator, channel) -> str:
    """The simulator's app keeps a sample photo at a URL, as an app's file storage would."""
    register_app(simulator, channel, webhook_url="http://127.0.0.1:9/unused/")
    simulator.post("/_simulator/inbound", {"kind": "custom", "channel": APP_ID, "user": USER, "type": "image"})
    thread = simulator.get("/_simulator/thread", kind="custom", channel=APP_ID, user=USER)
    return thread["messages"][-1]["preview"]["media"]["url"]


def test_a_file_from_the_app_is_downloaded_from_its_url(db, simulator, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    channel = make_custom_channel(make_workspace(slug="files"), allow_private_media_urls=True)
    url = photo_url_from_the_app(simulator, channel)
    deliver(channel, said(attachments=[{"url": url, "filename": "box.png"}]))
    attachment = Attachment.objects.get()

    attachment_fetch(attachment_id=attachment.id)

    attachment.refresh_from_db()
    assert (attachment.state, attachment.content_type, attachment.filename) == ("stored", "image/png", "box.png")
    assert attachment.file.read() == sample_for("image").data


def test_a_file_on_a_private_address_is_not_fetched_unless_the_channel_allows_it(db, simulator, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.OUTBOUND_ALLOWED_NETWORKS = []  # production's: the simulator's 127.0.0.1 is private there
    channel = make_custom_channel(make_workspace(slug="private"))
    deliver(channel, said(attachments=[{"url": photo_url_from_the_app(simulator, channel)}]))
    attachment = Attachment.objects.get()

    attachment_fetch(attachment_id=attachment.id)

    attachment.refresh_from_db()
    assert attachment.state == "failed"
    assert "allow_private_media_urls" in attachment.error


# End to end: the simulator's app and a live Parley ----------------------------------------------


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_conversation_with_the_app_end_to_end(live_server_process, simulator):
    """The app posts a message, the operator answers, the app reports it delivered and read;
    and the documentation's own shell function posts to the live endpoint."""
    channel = make_custom_channel(
        make_workspace(slug="live-app"), outbound_url=f"{simulator.url}/custom/{APP_ID}/outbound"
    )
    webhook_url = f"{live_server_process.url}/webhooks/{channel.uuid}/"
    register_app(simulator, channel, webhook_url=webhook_url)

    made = simulator.post(
        "/_simulator/inbound",
        {"kind": "custom", "channel": APP_ID, "user": USER, "name": "Amira", "text": "Hello", "wait": True},
    )
    assert made["status"] == 200
    process_all()
    conversation = Conversation.objects.get(channel=channel)

    reply = send(conversation, text="Hi Amira, how can we help?")
    # A Celery worker of another live test may be running and apply the receipt first: either way.
    eventually_in_state(reply, "delivered")

    assert simulator.post("/_simulator/read", {"kind": "custom", "channel": APP_ID, "user": USER})["status"] == 200
    eventually_in_state(reply, "read")

    earlier = sent_by_parley(channel, provider_id="parley-earlier")
    failed = {"code": "app_uninstalled", "reason": "The customer removed the app."}
    answer = simulator.post(
        "/_simulator/statuses",
        {"kind": "custom", "channel": APP_ID, "id": "parley-earlier", "state": "failed", "error": failed},
    )
    assert answer["status"] == 200
    eventually_in_state(earlier, "failed")
    assert earlier.error_reason == failed["reason"]

    raw = {"kind": "custom", "channel": APP_ID, "body": {"events": [said("msg-raw", text="hi")]}}
    statuses = {
        mode: simulator.post("/_simulator/inbound/raw", {**raw, "signature": mode})["statuses"]
        for mode in ("none", "bad", "stale", "good")
    }
    assert statuses == {"none": [401], "bad": [401], "stale": [401], "good": [200]}

    docs = DOCS.read_text()
    function = re.search(r"^send\(\) \{\n.*?^\}$", docs, flags=re.MULTILINE | re.DOTALL).group(0)
    script = f'PARLEY={webhook_url}\nSECRET={SECRET}\n{function}\nsend "$1"'
    result = subprocess.run(["bash", "-c", script, "bash", documented_bodies()[0]], capture_output=True, text=True)
    assert json.loads(result.stdout) == {"ok": True}, result


def eventually_in_state(message, state: str) -> None:
    def reached() -> bool:
        process_all()
        message.refresh_from_db()
        return message.state == state

    _wait_for(reached, 10, f"the message {state}")


def process_all():
    for event_id in InboundEvent.objects.filter(state="pending").order_by("id").values_list("id", flat=True):
        inbound_event_process(event_id=event_id)
