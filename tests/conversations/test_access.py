"""Conversations, messages, channels and attachments stay inside their workspace."""

import pytest
from django.core.files.base import ContentFile

from apps.contacts.services import contact_resolve
from apps.conversations.models import Attachment, Conversation, Message
from tests.conftest import client_for, token_client
from tests.conversations.whatsapp import make_whatsapp_channel


@pytest.fixture
def thread(tenants, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    channel = make_whatsapp_channel(tenants.a)
    contact = contact_resolve(channel=channel, external_id="201001234567", name="Amira", phone="+201001234567")
    conversation = Conversation.objects.create(workspace=tenants.a, contact=contact, channel=channel)
    message = Message.objects.create(
        workspace=tenants.a,
        conversation=conversation,
        channel=channel,
        direction="in",
        sender_kind="contact",
        text="hello",
        state="received",
        provider_id="wamid.1",
    )
    attachment = Attachment(
        workspace=tenants.a, message=message, filename="invoice.pdf", content_type="application/pdf", state="stored"
    )
    attachment.file.save("invoice.pdf", ContentFile(b"%PDF-1.4 test"), save=True)
    return channel, conversation, attachment


def test_member_reads_the_conversation_and_its_messages(tenants, thread):
    _, conversation, _ = thread
    client = client_for(tenants.teammate)

    assert client.get(f"/api/v1/conversations/{conversation.id}/").status_code == 200
    messages = client.get(f"/api/v1/conversations/{conversation.id}/messages/").json()["results"]
    assert [m["text"] for m in messages] == ["hello"]


def test_outsider_gets_404_for_conversation_messages_channel_and_attachment(tenants, thread):
    channel, conversation, attachment = thread
    for client in (client_for(tenants.outsider), token_client(tenants.token_b)):
        assert client.get(f"/api/v1/conversations/{conversation.id}/").status_code == 404
        assert client.get(f"/api/v1/conversations/{conversation.id}/messages/").status_code == 404
        response = client.post(
            f"/api/v1/conversations/{conversation.id}/messages/", {"text": "hi"}, content_type="application/json"
        )
        assert response.status_code == 404
        assert client.get(f"/api/v1/channels/{channel.id}/").status_code == 404
        assert client.get("/api/v1/conversations/").json()["results"] == []
    assert client_for(tenants.outsider).get(f"/attachments/{attachment.uuid}/").status_code == 404
    assert not Message.objects.filter(direction="out").exists()


def test_member_downloads_an_attachment_as_a_file(tenants, thread):
    _, _, attachment = thread

    response = client_for(tenants.teammate).get(f"/attachments/{attachment.uuid}/")

    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")
    assert response["Content-Type"] == "application/octet-stream"
    assert b"".join(response.streaming_content) == b"%PDF-1.4 test"


def test_an_svg_is_never_served_inline(tenants, thread):
    _, _, attachment = thread
    Attachment.objects.filter(pk=attachment.pk).update(content_type="image/svg+xml", filename="x.svg")

    response = client_for(tenants.teammate).get(f"/attachments/{attachment.uuid}/")

    assert response["Content-Disposition"].startswith("attachment")
    assert "sandbox" in response["Content-Security-Policy"]


def test_channel_credentials_are_never_in_the_api(tenants, thread):
    body = token_client(tenants.token_a).get("/api/v1/channels/").content.decode()

    assert "test-app-secret" not in body and "test-token" not in body
    assert "/webhooks/" in body


def test_sending_outside_the_window_is_a_400_naming_templates(tenants, thread):
    _, conversation, _ = thread

    response = client_for(tenants.teammate).post(
        f"/api/v1/conversations/{conversation.id}/messages/", {"text": "hi"}, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "window_closed"


def test_a_note_is_accepted_outside_the_window(tenants, thread):
    _, conversation, _ = thread

    response = client_for(tenants.teammate).post(
        f"/api/v1/conversations/{conversation.id}/messages/",
        {"text": "VIP", "kind": "note"},
        content_type="application/json",
    )

    assert response.status_code == 201
    assert response.json()["kind"] == "note"


def test_operator_attaches_a_file_and_one_over_the_channels_limit_is_refused_by_name(tenants, thread):
    from datetime import timedelta

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone

    _, conversation, _ = thread
    Conversation.objects.filter(pk=conversation.pk).update(window_expires_at=timezone.now() + timedelta(hours=1))
    client = client_for(tenants.teammate)
    url = f"/api/v1/conversations/{conversation.id}/messages/"

    sent = client.post(
        url, {"text": "Your invoice", "file": SimpleUploadedFile("inv.pdf", b"%PDF-1.4", "application/pdf")}
    )
    huge = SimpleUploadedFile("photo.jpg", b"\xff" * (5 * 1024 * 1024 + 1), "image/jpeg")
    refused = client.post(url, {"file": huge})

    assert sent.status_code == 201, sent.content
    [attachment] = sent.json()["attachments"]
    assert (attachment["filename"], attachment["state"]) == ("inv.pdf", "stored")
    assert sent.json()["kind"] == "media" and sent.json()["text"] == "Your invoice"
    assert refused.status_code == 400
    assert refused.json()["code"] == "too_large" and "file" in refused.json()["fields"]
    assert Message.objects.filter(direction="out").count() == 1
