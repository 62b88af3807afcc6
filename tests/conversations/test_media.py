"""Customers' files: fetched from the provider (here the simulator) into our storage, served to
members only; a file over the channel's limit is refused with an event, the text kept."""

import pytest
from django.test import Client

from apps.conversations.models import Attachment, InboundEvent, Message
from apps.conversations.services import attachment_fetch, inbound_event_process
from tests.conftest import client_for
from tests.conversations.whatsapp import envelope, make_whatsapp_channel, messages_value, post_webhook
from tests.factories import make_member, make_workspace


@pytest.fixture
def channel(db, simulator, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    channel = make_whatsapp_channel(make_workspace(slug="media"), base_url=simulator.url)
    simulator.register(channel, webhook_url="http://127.0.0.1:9/unused/")
    return channel


def receive_from_simulator(simulator, channel, **message):
    """The simulator makes the customer's message and keeps its media; we post the message to
    our endpoint in the webhook envelope, signed as Meta signs it."""
    made = simulator.post(
        "/_simulator/inbound", {"phone_number_id": "1000001", "from": "201001234567", "name": "Amira", **message}
    )
    response = post_webhook(Client(), channel, envelope(messages_value(made["message"])))
    assert response.status_code == 200, response.content
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)
    return Message.objects.latest("id")


def test_a_customers_photo_is_downloaded_and_served_to_members(channel, simulator):
    message = receive_from_simulator(simulator, channel, type="image", caption="the broken box")
    attachment = message.attachments.get()
    assert attachment.state == "pending"

    attachment_fetch(attachment_id=attachment.id)

    attachment.refresh_from_db()
    assert attachment.state == "stored"
    assert attachment.content_type == "image/png"
    assert attachment.size > 0
    assert message.text == "the broken box"
    member = make_member(channel.workspace).user
    response = client_for(member).get(f"/attachments/{attachment.uuid}/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")


def test_a_document_keeps_its_name_and_is_a_download(channel, simulator):
    message = receive_from_simulator(simulator, channel, type="document", filename="invoice 12.pdf")
    attachment = message.attachments.get()

    attachment_fetch(attachment_id=attachment.id)

    attachment.refresh_from_db()
    assert attachment.filename == "invoice_12.pdf"
    response = client_for(make_member(channel.workspace).user).get(f"/attachments/{attachment.uuid}/")
    assert response["Content-Disposition"].startswith("attachment")


def test_a_file_over_the_channels_limit_is_refused_but_the_message_stays(channel, simulator):
    channel.settings = {**channel.settings, "max_media_bytes": 10}
    channel.save(update_fields=["settings"])
    message = receive_from_simulator(simulator, channel, type="image", caption="see photo")
    attachment = message.attachments.get()

    attachment_fetch(attachment_id=attachment.id)

    attachment.refresh_from_db()
    assert attachment.state == "too_large"
    assert "limit" in attachment.error
    assert not attachment.file
    assert Message.objects.get(pk=message.pk).text == "see photo"


def test_fetching_twice_stores_once(channel, simulator):
    message = receive_from_simulator(simulator, channel, type="image")
    attachment = message.attachments.get()

    attachment_fetch(attachment_id=attachment.id)
    attachment_fetch(attachment_id=attachment.id)

    assert Attachment.objects.filter(message=message).count() == 1
