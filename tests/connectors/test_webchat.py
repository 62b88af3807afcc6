"""Web chat end to end: a visitor's widget socket on a live daphne, the real Redis channel layer,
a real Celery worker running the inbound pipeline, and an operator's socket and API."""

import json

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from apps.connectors.models import Channel
from apps.connectors.services import identity_hash
from apps.contacts.models import Contact
from apps.contacts.services import contact_resolve
from apps.conversations.models import Attachment, Conversation, Message
from tests.conftest import _wait_for, client_for
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.core.test_realtime import open_socket, receive_type
from tests.factories import make_member, make_workspace

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SHOP = "http://shop.test"


def make_webchat_channel(workspace, **settings) -> Channel:
    return Channel.objects.create(
        workspace=workspace,
        kind="webchat",
        name="Website",
        settings={"allowed_origins": [SHOP], **settings},
    )


def visitor_socket(live, channel, origin=SHOP):
    return connect(f"{live.ws_url}/ws/widget/{channel.uuid}/", additional_headers={"Origin": origin}, open_timeout=10)


def frame(socket, frame_type, timeout=15):
    while True:
        received = json.loads(socket.recv(timeout=timeout))
        if received["type"] == frame_type:
            return received
        if received["type"] == "error" and frame_type != "error":
            raise AssertionError(received)


def join(socket, **fields):
    socket.send(json.dumps({"type": "join", **fields}))
    return frame(socket, "joined")


def say(socket, message_id, text, **fields):
    socket.send(json.dumps({"type": "message", "id": message_id, "text": text, **fields}))
    return frame(socket, "ack")


def wait_for_messages(count, timeout=20, **filters):
    _wait_for(lambda: Message.objects.filter(**filters).count() >= count, timeout, f"{count} message(s)")


@pytest.fixture
def shop(live_server_process, celery_worker_process):
    workspace = make_workspace(slug="shop")
    return workspace, make_webchat_channel(workspace), make_member(workspace).user


def test_visitor_writes_operator_answers_and_sees_the_read_receipt(live_server_process, shop):
    _, channel, operator = shop
    with open_socket(live_server_process, operator) as inbox, visitor_socket(live_server_process, channel) as widget:
        receive_type(inbox, "hello")
        joined = join(widget)
        assert joined["history"] == [] and joined["config"]["title"] == "Website"

        say(widget, "m1", "Is the blue kettle in stock?")
        created = receive_type(inbox, "message.created", timeout=30)
        assert created["payload"]["message"]["text"] == "Is the blue kettle in stock?"
        assert created["payload"]["message"]["channel_kind"] == "webchat"

        conversation = Conversation.objects.get(channel=channel)
        response = client_for(operator).post(
            f"/api/v1/conversations/{conversation.id}/messages/",
            {"text": "Yes, 4 left"},
            content_type="application/json",
        )
        assert response.status_code == 201, response.content
        reply = frame(widget, "message")["message"]
        assert reply["text"] == "Yes, 4 left" and reply["direction"] == "out"

        widget.send(json.dumps({"type": "receipt", "state": "read", "ids": [reply["id"]]}))
        while receive_type(inbox, "message.status", timeout=30)["payload"]["state"] != "read":
            pass
    assert Message.objects.get(direction="out").state == "read"


def test_a_message_resent_after_a_reconnect_is_stored_once_and_history_survives_a_reload(live_server_process, shop):
    _, channel, _ = shop
    with visitor_socket(live_server_process, channel) as widget:
        token = join(widget)["token"]
        say(widget, "m1", "Hello")
        say(widget, "m1", "Hello")  # the widget did not see the ack and sends it again
    wait_for_messages(1, channel=channel)

    with visitor_socket(live_server_process, channel) as widget:
        joined = join(widget, token=token)
        say(widget, "m1", "Hello")
        say(widget, "m2", "Anyone there?")
    wait_for_messages(2, channel=channel)

    with visitor_socket(live_server_process, channel) as widget:
        history = join(widget, token=token)["history"]
    assert [m["text"] for m in history] == ["Hello", "Anyone there?"]
    assert [m["id"] for m in history] == ["m1", "m2"]
    assert Message.objects.filter(channel=channel).count() == 2
    assert Conversation.objects.filter(channel=channel).count() == 1
    assert joined["token"]


def test_a_page_from_another_site_cannot_open_the_widget(live_server_process, shop):
    _, channel, _ = shop
    with pytest.raises(InvalidStatus):
        visitor_socket(live_server_process, channel, origin="http://evil.test")


def test_a_visitor_token_of_another_workspaces_channel_is_a_stranger_here(live_server_process, shop):
    _, channel, _ = shop
    other = make_webchat_channel(make_workspace(slug="other-shop"))
    with visitor_socket(live_server_process, channel) as widget:
        token = join(widget)["token"]
        say(widget, "m1", "my address is 12 Nile St")
    wait_for_messages(1, channel=channel)

    with visitor_socket(live_server_process, other) as widget:
        joined = join(widget, token=token)
    assert joined["history"] == []
    assert joined["token"] != token


def test_a_signed_in_customer_is_tied_to_their_contact_and_the_conversation_is_authorized(live_server_process, shop):
    workspace, channel, _ = shop
    customer = Contact.objects.create(workspace=workspace, name="Amira", external_id="cust-42")
    with visitor_socket(live_server_process, channel) as widget:
        joined = join(widget, customer_id="cust-42", customer_hash=identity_hash(channel, "cust-42"))
        assert joined["verified"] is True
        say(widget, "m1", "Where is order 1001?")
    wait_for_messages(1, channel=channel)
    conversation = Conversation.objects.get(channel=channel)
    assert conversation.contact_id == customer.id
    assert conversation.authorized is True


def test_a_forged_customer_signature_is_refused(live_server_process, shop):
    _, channel, _ = shop
    with visitor_socket(live_server_process, channel) as widget:
        widget.send(json.dumps({"type": "join", "customer_id": "cust-42", "customer_hash": "00" * 32}))
        error = frame(widget, "error")
    assert error["code"] == "identity_invalid"


def test_prechat_form_errors_name_the_field_and_a_known_phone_finds_the_whatsapp_customer(live_server_process, shop):
    workspace, channel, _ = shop
    whatsapp = make_whatsapp_channel(workspace)
    known = contact_resolve(channel=whatsapp, external_id="201001234567", name="Amira", phone="+201001234567")
    with visitor_socket(live_server_process, channel) as widget:
        join(widget)
        widget.send(json.dumps({"type": "prechat", "name": "Amira", "email": "not-an-email", "phone": "12"}))
        error = frame(widget, "error")
        assert error["code"] == "invalid_prechat"
        assert set(error["fields"]) == {"email", "phone"}

        widget.send(json.dumps({"type": "prechat", "name": "Amira", "email": "", "phone": "+20 100 123 4567"}))
        frame(widget, "prechat_ok")
        say(widget, "m1", "Hi again, on the website this time")
    wait_for_messages(1, channel=channel)
    assert Conversation.objects.get(channel=channel).contact_id == known.id


def test_a_visitor_sends_a_file_and_an_oversized_or_scripted_one_is_refused(live_server_process, shop):
    _, channel, _ = shop
    upload_url = f"{live_server_process.url}/widget/{channel.uuid}/uploads/"
    with visitor_socket(live_server_process, channel) as widget:
        token = join(widget)["token"]
        headers = {"X-Parley-Visitor": token, "Origin": SHOP}

        response = httpx.post(
            upload_url, headers=headers, files={"file": ("receipt.pdf", b"%PDF-1.4 x", "application/pdf")}
        )
        assert response.status_code == 201, response.text
        assert response.headers["Access-Control-Allow-Origin"] == SHOP
        say(widget, "m1", "my receipt", upload=response.json()["upload"])

        too_big = httpx.post(
            upload_url, headers=headers, files={"file": ("big.pdf", b"0" * (26 * 1024 * 1024), "application/pdf")}
        )
        svg = httpx.post(upload_url, headers=headers, files={"file": ("x.svg", b"<svg/>", "image/svg+xml")})
        anonymous = httpx.post(
            upload_url, headers={"Origin": SHOP}, files={"file": ("a.pdf", b"%PDF", "application/pdf")}
        )
    assert (too_big.status_code, too_big.json()["code"]) == (413, "too_large")
    assert (svg.status_code, svg.json()["code"]) == (415, "unsupported_file")
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "invalid_visitor")

    _wait_for(lambda: Attachment.objects.filter(state="stored").exists(), 20, "the attachment")
    attachment = Attachment.objects.get()
    assert attachment.message.text == "my receipt"
    assert attachment.file.read() == b"%PDF-1.4 x"


def test_an_operators_file_reaches_only_its_visitor(live_server_process, shop):
    _, channel, operator = shop
    with visitor_socket(live_server_process, channel) as widget:
        join(widget)
        say(widget, "m1", "Can you send the invoice?")
        wait_for_messages(1, channel=channel)
        conversation = Conversation.objects.get(channel=channel)
        response = client_for(operator).post(
            f"/api/v1/conversations/{conversation.id}/messages/",
            {"text": "Here it is", "file": _file("invoice.pdf", b"%PDF-1.4 invoice")},
        )
        assert response.status_code == 201, response.content
        pushed = frame(widget, "message")["message"]
    [file] = pushed["attachments"]
    assert file["filename"] == "invoice.pdf"
    download = httpx.get(f"{live_server_process.url}{file['url']}")
    assert download.status_code == 200 and download.content == b"%PDF-1.4 invoice"

    stranger_link = file["url"].replace(f"/files/{Attachment.objects.get().uuid}/", "/files/" + "0" * 32 + "/")
    assert httpx.get(f"{live_server_process.url}{stranger_link}").status_code == 404
    assert httpx.get(f"{live_server_process.url}{file['url'].split('?')[0]}?t=forged").status_code == 404


def test_the_widget_script_carries_the_channels_look(live_server_process, shop):
    _, channel, _ = shop
    script = httpx.get(f"{live_server_process.url}/widget/{channel.uuid}.js")
    assert script.status_code == 200
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert f'"channel": "{channel.uuid}"' in script.text and "__PARLEY_CONFIG__" not in script.text
    assert httpx.get(f"{live_server_process.url}/widget/{'0' * 8}-0000-0000-0000-{'0' * 12}.js").status_code == 404


def test_nobody_can_post_web_chat_events_as_a_webhook(live_server_process, shop):
    _, channel, _ = shop
    body = {"visitor": "v-1", "events": [{"type": "message", "id": "x", "text": "forged"}]}
    response = httpx.post(f"{live_server_process.url}/webhooks/{channel.uuid}/", json=body)
    assert response.status_code == 401
    assert not Message.objects.exists()


def test_unknown_or_malformed_frames_get_an_error_not_a_closed_socket(live_server_process, shop):
    _, channel, _ = shop
    with visitor_socket(live_server_process, channel) as widget:
        widget.send("not json")
        assert frame(widget, "error")["code"] == "unknown_message"
        widget.send(json.dumps({"type": "message", "id": "m1", "text": "before joining"}))
        assert frame(widget, "error")["code"] == "not_joined"
        join(widget)
        widget.send(json.dumps({"type": "message", "id": "bad id!", "text": "x"}))
        assert frame(widget, "error")["code"] == "invalid_message"
        widget.send(json.dumps({"type": "message", "id": "m2", "text": ""}))
        assert frame(widget, "error")["code"] == "empty_message"
        widget.send(json.dumps({"type": "ping"}))
        frame(widget, "pong")


def _file(name: str, content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type="application/pdf")
