"""Files customers (the web chat widget) and agents (the API and inbox) send are checked by their
content (apps/core/uploads.py): a size limit, magic bytes that match the declared type, and no
programs, pages or scripted SVG. What is stored is served as a download unless it is a plain image,
sound or video, always with nosniff."""

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.connectors.models import Channel
from apps.connectors.services import Visitor, visitor_token
from apps.contacts.services import contact_resolve
from apps.conversations.models import Attachment, Conversation, Message
from tests.conftest import client_for
from tests.conversations.whatsapp import make_whatsapp_channel

pytestmark = pytest.mark.django_db

SHOP = "http://shop.test"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 64
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64
PAGE = b"  <!DOCTYPE html><html><script>fetch('/api/v1/contacts/')</script></html>"
SCRIPTED_SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" onload="alert(document.cookie)"/>'
PLAIN_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"><rect width="1" height="1"/></svg>'


# The web chat widget ---------------------------------------------------------------------------


@pytest.fixture
def widget(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    from tests.factories import make_workspace

    channel = Channel.objects.create(
        workspace=make_workspace(slug="widget-files"),
        kind="webchat",
        name="Website",
        settings={"allowed_origins": [SHOP]},
    )
    token = visitor_token(channel, Visitor(id="visitor-1"))

    def upload(name: str, content: bytes, content_type: str):
        return Client().post(
            reverse("widget-upload", kwargs={"channel_uuid": channel.uuid}),
            {"file": SimpleUploadedFile(name, content, content_type)},
            headers={"X-Parley-Visitor": token, "Origin": SHOP},
        )

    return upload


def test_a_customers_photo_and_pdf_are_accepted(widget):
    assert widget("box.png", PNG, "image/png").status_code == 201
    assert widget("receipt.pdf", PDF, "application/pdf").status_code == 201


@pytest.mark.parametrize(
    ("name", "content", "content_type", "code", "words"),
    [
        ("receipt.pdf", EXE, "application/pdf", "unsupported_file", "executable"),
        ("photo.png", ELF, "image/png", "unsupported_file", "executable"),
        ("photo.png", PAGE, "image/png", "unsupported_file", "Web pages"),
        ("notes.txt", PAGE, "text/plain", "unsupported_file", "Web pages"),
        ("photo.jpg", PDF, "image/jpeg", "type_mismatch", "application/pdf, not the image/jpeg"),
        ("report.pdf", PNG, "application/pdf", "type_mismatch", "image/png, not the application/pdf"),
        ("photo.jpg", b"not really a photo", "image/jpeg", "type_mismatch", "not image/jpeg"),
        ("data.csv", PNG, "text/csv", "type_mismatch", "image/png, not the text/csv"),
    ],
)
def test_a_customers_file_that_is_not_what_it_says_is_refused(widget, name, content, content_type, code, words):
    response = widget(name, content, content_type)

    assert response.status_code == 415, response.content
    assert response.json()["code"] == code and words in response.json()["detail"]


def test_a_customers_file_over_the_upload_limit_is_refused(widget, settings):
    settings.UPLOAD_MAX_BYTES = 1024

    response = widget("receipt.pdf", PDF + b"0" * 2048, "application/pdf")

    assert response.status_code == 413 and response.json()["code"] == "too_large"


def test_a_customers_svg_is_refused_by_the_widget(widget):
    response = widget("logo.svg", PLAIN_SVG, "image/svg+xml")

    assert response.status_code == 415 and response.json()["code"] == "unsupported_file"


# Agents' uploads ---------------------------------------------------------------------------------


@pytest.fixture
def conversation(tenants, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    channel = make_whatsapp_channel(tenants.a)
    contact = contact_resolve(channel=channel, external_id="201001234567", name="Amira", phone="+201001234567")
    return Conversation.objects.create(
        workspace=tenants.a, contact=contact, channel=channel, window_expires_at=timezone.now() + timedelta(hours=1)
    )


def agent_sends(tenants, conversation, name: str, content: bytes, content_type: str):
    return client_for(tenants.teammate).post(
        f"/api/v1/conversations/{conversation.id}/messages/",
        {"text": "Here you are", "file": SimpleUploadedFile(name, content, content_type)},
    )


def test_an_agents_pdf_is_sent(tenants, conversation):
    response = agent_sends(tenants, conversation, "invoice.pdf", PDF, "application/pdf")

    assert response.status_code == 201, response.content
    assert response.json()["attachments"][0]["state"] == "stored"


@pytest.mark.parametrize(
    ("name", "content", "content_type", "code"),
    [
        ("invoice.pdf", EXE, "application/pdf", "unsupported_file"),
        ("setup.exe", EXE, "application/octet-stream", "unsupported_file"),
        ("offer.html", PAGE, "text/html", "unsupported_file"),
        ("logo.svg", SCRIPTED_SVG, "image/svg+xml", "unsupported_file"),
        ("photo.png", PDF, "image/png", "type_mismatch"),
    ],
)
def test_an_agents_file_that_could_run_or_lies_about_its_type_is_refused_and_nothing_is_sent(
    tenants, conversation, name, content, content_type, code
):
    response = agent_sends(tenants, conversation, name, content, content_type)

    assert response.status_code == 415, response.content
    assert response.json()["code"] == code and "file" in response.json()["fields"]
    assert not Message.objects.filter(direction="out").exists() and not Attachment.objects.exists()


def test_an_agents_svg_without_script_is_sent(tenants, conversation):
    response = agent_sends(tenants, conversation, "logo.svg", PLAIN_SVG, "image/svg+xml")

    assert response.status_code == 201, response.content


def test_an_agents_file_over_the_upload_limit_is_refused(tenants, conversation, settings):
    settings.UPLOAD_MAX_BYTES = 1024

    response = agent_sends(tenants, conversation, "invoice.pdf", PDF + b"0" * 2048, "application/pdf")

    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert response.json()["fields"]["file"] == ["At most 1 KB."]


# Serving -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "content", "inline"),
    [
        ("image/png", PNG, True),
        ("application/pdf", PDF, False),
        ("text/html", PAGE, False),
        ("image/svg+xml", SCRIPTED_SVG, False),
    ],
)
def test_stored_files_are_downloads_unless_plain_media_and_never_sniffed(
    tenants, conversation, content_type, content, inline
):
    message = Message.objects.create(
        workspace=tenants.a,
        conversation=conversation,
        channel=conversation.channel,
        direction="in",
        sender_kind="contact",
        state="received",
        provider_id="wamid.files",
    )
    attachment = Attachment(
        workspace=tenants.a, message=message, filename="file", content_type=content_type, state="stored"
    )
    attachment.file.save("file", ContentFile(content), save=True)

    response = client_for(tenants.teammate).get(f"/attachments/{attachment.uuid}/")

    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"].startswith("inline" if inline else "attachment")
    if not inline:
        assert response["Content-Type"] == "application/octet-stream"
