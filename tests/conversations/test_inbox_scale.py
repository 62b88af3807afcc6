"""What keeps the inbox quick on a large data set, as an operator would notice it: the list and
a long thread cost the same number of queries whatever they hold (people without a name,
messages with and without files), and show the same thing."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.contacts.services import contact_resolve
from apps.conversations.models import Attachment, Conversation, Message
from tests.conftest import client_for
from tests.conversations.whatsapp import make_whatsapp_channel


def queries_for(client, path: str) -> tuple[dict, int]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, response.content
    return response.json(), len(captured.captured_queries)


def conversation_with(workspace, channel, *, external_id: str, name: str = "", phone: str = "", email: str = ""):
    contact = contact_resolve(channel=channel, external_id=external_id, name=name, phone=phone)
    if email:
        contact.email = email
        contact.save(update_fields=["email"])
    return Conversation.objects.create(
        workspace=workspace, contact=contact, channel=channel, last_message_at=timezone.now()
    )


def test_people_without_a_name_are_listed_by_phone_or_email_at_no_query_per_row(tenants):
    channel = make_whatsapp_channel(tenants.a)
    client = client_for(tenants.teammate)
    conversation_with(tenants.a, channel, external_id="201000000001", name="Amira Hassan")
    _, named_only = queries_for(client, "/api/v1/conversations/?view=all")

    conversation_with(tenants.a, channel, external_id="201000000002", phone="+201000000002")
    conversation_with(tenants.a, channel, external_id="201000000003", email="omar@example.com")
    nobody = conversation_with(tenants.a, channel, external_id="201000000004")
    body, with_unnamed = queries_for(client, "/api/v1/conversations/?view=all")

    names = [row["contact_name"] for row in body["results"]]
    assert names == [f"Contact {nobody.contact_id}", "omar@example.com", "+201000000002", "Amira Hassan"]
    assert with_unnamed == named_only


def message_in(conversation, text: str) -> Message:
    return Message.objects.create(
        workspace=conversation.workspace,
        conversation=conversation,
        channel=conversation.channel,
        direction="in",
        sender_kind="contact",
        text=text,
        state="received",
    )


def with_file(message: Message, filename: str) -> Attachment:
    return Attachment.objects.create(
        workspace=message.workspace,
        message=message,
        filename=filename,
        content_type="image/jpeg",
        size=3,
        state=Attachment.State.STORED,
    )


@pytest.mark.parametrize("thread", ["conversation", "contact"])
def test_a_long_thread_shows_each_messages_files_in_a_constant_number_of_queries(tenants, thread):
    channel = make_whatsapp_channel(tenants.a)
    conversation = conversation_with(tenants.a, channel, external_id="201000000009", name="Layla Said")
    client = client_for(tenants.teammate)
    path = (
        f"/api/v1/conversations/{conversation.id}/messages/?limit=200"
        if thread == "conversation"
        else f"/api/v1/contacts/{conversation.contact_id}/timeline/?limit=200"
    )
    photo = with_file(message_in(conversation, "the broken eggs"), "eggs.jpg")
    message_in(conversation, "hello")
    _, few = queries_for(client, path)

    for n in range(30):
        message = message_in(conversation, f"message {n}")
        if n % 10 == 0:
            with_file(message, f"receipt-{n}.jpg")
    body, many = queries_for(client, path)

    rows = body["results"]
    assert len(rows) == 32 and many == few
    files = {row["text"]: [a["filename"] for a in row["attachments"]] for row in rows}
    assert files["the broken eggs"] == ["eggs.jpg"] and files["message 10"] == ["receipt-10.jpg"]
    assert files["hello"] == [] and files["message 11"] == []
    [eggs] = [row for row in rows if row["text"] == "the broken eggs"]
    assert eggs["attachments"][0]["url"] == f"/attachments/{photo.uuid}/"
