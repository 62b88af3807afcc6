"""Data subject rights and retention: a person's data is exported whole and erased for good (the
numbers stay, anonymous), closed conversations lose their content after the workspace's
retention period, and a database dump holds no personal value or secret in the clear."""

import io
import json
import subprocess
import zipfile
from datetime import timedelta
from pathlib import Path

import pgserver
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.analytics.models import Cycle, Daily
from apps.analytics.services import events_fold_all
from apps.broadcasts.models import Broadcast, Recipient
from apps.connectors.models import MessageTemplate, WebhookDelivery, WebhookSubscription
from apps.contacts import privacy
from apps.contacts.models import Contact, ContactIdentity, CustomFieldDefinition, Order, Tag
from apps.contacts.services import contact_save, order_upsert
from apps.conversations.models import Attachment, Conversation, InboundEvent, Message
from apps.conversations.services import inbound_event_process, message_send, note_add
from apps.conversations.services.actions import conversation_close
from apps.workspaces import services as workspace_services
from apps.workspaces.models import AuditEntry, Membership, PrivacySettings
from apps.workspaces.tasks import retention_purge
from tests.conftest import client_for, token_client
from tests.conversations.whatsapp import (
    APP_SECRET,
    envelope,
    make_whatsapp_channel,
    messages_value,
    post_webhook,
    text,
)
from tests.factories import make_member, make_workspace

PG_DUMP = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_dump"
NAME, PHONE, WA_ID, EMAIL = "Amira Khalil", "+201001234567", "201001234567", "amira.khalil@example.com"
ADDRESS = "12 Tahrir Square, Cairo"


def customer_writes(channel, body: str, *, wamid: str, wa_id: str = WA_ID, name: str = NAME) -> Message:
    """A WhatsApp message through the webhook and the worker's pipeline, as in production."""
    delivery = envelope(messages_value(text(body, wamid=wamid, wa_id=wa_id), wa_id=wa_id, name=name))
    assert post_webhook(Client(), channel, delivery).status_code == 200
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)
    return Message.objects.get(channel=channel, provider_id=wamid)


def populate(workspace, agent, *, webhooks: bool = True) -> Contact:
    """One customer with everything Parley keeps: identity, profile, tags, a custom field,
    consent, a conversation with a message in, a reply, a note and a file, a close with a
    summary, an order with an address, a broadcast receipt and (unless `webhooks` is False) a
    webhook subscription with a delivery about them."""
    channel = make_whatsapp_channel(workspace)
    if webhooks:
        WebhookSubscription.objects.create(
            workspace=workspace, url="https://shop.example/hooks", events=["contact.updated", "message.created"]
        )
    inbound = customer_writes(channel, "Where is my parcel?", wamid="wamid.in1")
    contact = inbound.conversation.contact
    CustomFieldDefinition.objects.create(workspace=workspace, key="loyalty", label="Loyalty", type="text")
    contact = contact_save(
        workspace_id=workspace.pk,
        contact=contact,
        data={
            "email": EMAIL,
            "custom_fields": {"loyalty": "gold"},
            "marketing_consent": {"whatsapp": {"opted_in": True, "at": "2025-01-01T00:00:00Z"}},
            "tags": [Tag.objects.create(workspace=workspace, name="vip")],
        },
    )
    attachment = Attachment(
        workspace=workspace, message=inbound, filename="receipt.pdf", content_type="application/pdf", state="stored"
    )
    attachment.file.save("receipt.pdf", ContentFile(b"%PDF-1.4 the receipt"), save=True)
    conversation = inbound.conversation
    membership = Membership.objects.get(user=agent, workspace=workspace)
    message_send(conversation=conversation, author=agent, text="It ships today.")
    note_add(conversation=conversation, author=agent, text="Asked twice about the parcel")
    conversation_close(conversation=conversation, actor=agent, membership=membership, summary="Parcel question")
    order_upsert(
        workspace_id=workspace.pk,
        contact=contact,
        data={"external_id": "A-1001", "status": "paid", "total": "20.00", "delivery_address": ADDRESS},
    )
    template = MessageTemplate.objects.create(workspace=workspace, channel=channel, name="promo", body="Hi {{1}}")
    broadcast = Broadcast.objects.create(
        workspace=workspace, name="Spring sale", channel=channel, template=template, state="done"
    )
    Recipient.objects.create(
        workspace=workspace,
        broadcast=broadcast,
        contact=contact,
        dedupe_key=contact.phone_index,
        parameters=["Amira"],
        state="delivered",
    )
    if webhooks:
        WebhookDelivery.objects.create(
            workspace=workspace,
            subscription=WebhookSubscription.objects.get(workspace=workspace),
            event="contact.updated",
            payload={"id": contact.pk, "name": NAME, "phone": PHONE, "email": EMAIL},
            contact_id=contact.pk,  # as the fan-out fills it (WebhookDelivery.subjects)
            next_attempt_at=timezone.now(),
        )
    return Contact.objects.get(pk=contact.pk)


@pytest.fixture
def customer(tenants, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    return populate(tenants.a, tenants.supervisor)


def read_zip(content: bytes) -> tuple[dict, dict[str, bytes]]:
    archive = zipfile.ZipFile(io.BytesIO(content))
    files = {name: archive.read(name) for name in archive.namelist() if name != "contact.json"}
    return json.loads(archive.read("contact.json")), files


# Export -----------------------------------------------------------------------------------------


def test_the_export_holds_everything_parley_keeps_about_the_person_with_their_files(customer):
    document, files = read_zip(privacy.contact_export(contact=customer).read())

    assert (document["contact"]["name"], document["contact"]["phone"], document["contact"]["email"]) == (
        NAME,
        PHONE,
        EMAIL,
    )
    assert document["contact"]["tags"] == ["vip"]
    assert document["contact"]["custom_fields"] == {"loyalty": "gold"}
    assert document["contact"]["marketing_consent"]["whatsapp"]["opted_in"] is True
    assert [(i["channel_kind"], i["external_id"]) for i in document["identities"]] == [("whatsapp", WA_ID)]
    [conversation] = document["conversations"]
    texts = [m["text"] for m in conversation["messages"]]
    assert {"Where is my parcel?", "It ships today.", "Asked twice about the parcel"} <= set(texts)
    assert conversation["closing_summary"] == "Parcel question"
    [with_file] = [m for m in conversation["messages"] if m["attachments"]]
    path = with_file["attachments"][0]["file"]
    assert files == {path: b"%PDF-1.4 the receipt"}
    assert [(o["external_id"], o["delivery_address"]) for o in document["orders"]] == [("A-1001", ADDRESS)]
    assert [(b["broadcast"], b["state"]) for b in document["broadcasts"]] == [("Spring sale", "delivered")]


def test_a_supervisor_downloads_the_export_from_the_api_and_it_is_audited(tenants, customer):
    response = client_for(tenants.supervisor).get(f"/api/v1/contacts/{customer.pk}/export/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    document, _ = read_zip(b"".join(response.streaming_content))
    assert document["contact"]["id"] == customer.pk
    entry = AuditEntry.objects.get(action="export")
    assert (entry.actor, entry.object_type, entry.object_id, entry.object_repr) == (
        tenants.supervisor,
        "contact",
        str(customer.pk),
        f"Contact #{customer.pk}",
    )


def test_an_api_token_exports_and_the_audit_log_names_the_token(tenants, customer):
    response = token_client(tenants.token_a).get(f"/api/v1/contacts/{customer.pk}/export/")

    assert response.status_code == 200
    assert AuditEntry.objects.get(action="export").actor_label == "API token order system"


def test_an_agent_cannot_export_and_an_outsider_does_not_find_the_contact(tenants, customer):
    assert client_for(tenants.teammate).get(f"/api/v1/contacts/{customer.pk}/export/").status_code == 403
    assert client_for(tenants.outsider).get(f"/api/v1/contacts/{customer.pk}/export/").status_code == 404
    assert client_for(tenants.outsider).post(f"/api/v1/contacts/{customer.pk}/erase/").status_code == 404
    assert client_for(tenants.teammate).post(f"/api/v1/contacts/{customer.pk}/erase/").status_code == 403
    assert not AuditEntry.objects.filter(action__in=["export", "erase"]).exists()


def test_the_contact_admin_page_offers_the_export_as_a_zip(tenants, customer):
    owner = client_for(tenants.owner)

    page = owner.get(f"/admin/contacts/contact/{customer.pk}/change/")
    download = owner.get(f"/admin/contacts/contact/{customer.pk}/export/")

    assert f"/admin/contacts/contact/{customer.pk}/export/" in page.content.decode()
    assert download.status_code == 200
    assert read_zip(b"".join(download.streaming_content))[0]["contact"]["email"] == EMAIL
    assert client_for(tenants.outsider).get(f"/admin/contacts/contact/{customer.pk}/export/").status_code in (
        302,
        404,
    )


# Erasure ----------------------------------------------------------------------------------------


def test_erasing_removes_every_personal_value_and_file_and_keeps_the_counts(
    tenants, customer, django_capture_on_commit_callbacks
):
    events_fold_all()
    conversation = Conversation.objects.get(contact=customer)
    file_name = Attachment.objects.get().file.name
    rollups_before = list(Daily.objects.values_list("opened", "messages_in", "messages_out"))
    message_count = Message.objects.filter(conversation=conversation).count()
    assert "Parcel question" in json.dumps(Cycle.objects.get(conversation=conversation).resume)  # the folder's state

    with django_capture_on_commit_callbacks(execute=True):  # the files go once the erasure commits
        erased = privacy.contact_erase(contact=customer, actor=tenants.owner)

    contact = Contact.objects.get(pk=customer.pk)
    assert (contact.name, contact.phone, contact.email, contact.external_id) == ("", "", "", "")
    assert (contact.custom_fields, contact.marketing_consent, list(contact.tags.all())) == ({}, {}, [])
    assert contact.erased_at is not None and contact.phone_index == contact.email_index == ""
    assert not ContactIdentity.objects.filter(contact=contact).exists()
    messages = Message.objects.filter(conversation=conversation)
    assert messages.count() == message_count
    assert set(messages.values_list("text", flat=True)) == {""}
    assert not Attachment.objects.exists() and not default_storage.exists(file_name)
    assert Conversation.objects.get(pk=conversation.pk).closing_summary == ""
    assert Cycle.objects.get(conversation=conversation).summary == ""
    assert list(Daily.objects.values_list("opened", "messages_in", "messages_out")) == rollups_before
    # The conversation goes on: the next fold must not bring the summary back from its kept state.
    from apps.analytics.services import event_record

    event_record(conversation=conversation, kind="note", by="agent")
    events_fold_all()
    assert "Parcel question" not in json.dumps(list(Cycle.objects.values("summary", "resume")))
    assert Order.objects.get().delivery_address == ""
    assert Recipient.objects.get().parameters == []
    assert not WebhookDelivery.objects.exists()
    assert erased["files"] == 1 and erased["identities"] == 1
    entry = AuditEntry.objects.get(action="erase")
    assert (entry.actor, entry.object_repr) == (tenants.owner, f"Contact #{customer.pk}")
    assert NAME not in json.dumps(list(AuditEntry.objects.values()), default=str)


def test_an_erased_person_who_writes_again_is_a_new_contact(tenants, customer):
    privacy.contact_erase(contact=customer)

    message = customer_writes(make_whatsapp_channel(tenants.a), "Hello again", wamid="wamid.in2")

    assert message.conversation.contact_id != customer.pk


def test_the_api_erases_a_contact_and_answers_what_went(tenants, customer):
    response = token_client(tenants.token_a).post(f"/api/v1/contacts/{customer.pk}/erase/")

    assert response.status_code == 200, response.content
    assert response.json() == {"conversations": 1, "messages": Message.objects.count(), "files": 1, "identities": 1}
    assert Contact.objects.get(pk=customer.pk).name == ""


def test_the_admin_erases_after_a_confirmation_page(tenants, customer):
    supervisor = client_for(tenants.supervisor)
    url = f"/admin/contacts/contact/{customer.pk}/erase/"

    confirm = supervisor.get(url)
    assert confirm.status_code == 200 and Contact.objects.get(pk=customer.pk).name == NAME
    assert supervisor.post(url).status_code == 302

    assert Contact.objects.get(pk=customer.pk).erased_at is not None
    assert AuditEntry.objects.get(action="erase").actor == tenants.supervisor


# Retention --------------------------------------------------------------------------------------


def test_closed_conversations_lose_their_content_after_the_retention_period(
    tenants, customer, django_capture_on_commit_callbacks
):
    PrivacySettings.objects.create(workspace=tenants.a, retention_days=30)
    old = Conversation.objects.get(contact=customer)
    Conversation.objects.filter(pk=old.pk).update(closed_at=timezone.now() - timedelta(days=31))
    recent = customer_writes(old.channel, "New question", wamid="wamid.other", wa_id="201009999999", name="Omar")
    file_name = Attachment.objects.get().file.name
    count = Message.objects.filter(conversation=old).count()

    with django_capture_on_commit_callbacks(execute=True):
        assert retention_purge() == 1

    purged = Message.objects.filter(conversation=old)
    assert purged.count() == count
    assert set(purged.values_list("text", flat=True)) == {""}
    assert not Attachment.objects.exists() and not default_storage.exists(file_name)
    assert Message.objects.get(pk=recent.pk).text == "New question"  # open: kept
    assert Contact.objects.get(pk=customer.pk).name == NAME  # the person stays; their old words go
    entry = AuditEntry.objects.get(action="purge")
    assert (entry.workspace, entry.details["conversations"]) == (tenants.a, 1)


def test_a_conversation_closed_within_the_period_and_a_workspace_without_one_keep_everything(tenants, customer):
    PrivacySettings.objects.create(workspace=tenants.a, retention_days=30)
    other = make_workspace()
    elsewhere = populate(other, make_member(other, "supervisor").user)
    Conversation.objects.filter(contact=elsewhere).update(closed_at=timezone.now() - timedelta(days=400))

    assert retention_purge() == 0

    assert not Message.objects.filter(text="").exists()
    assert Attachment.objects.count() == 2


def test_an_owner_sets_the_retention_period_in_the_admin_and_it_is_audited(tenants):
    response = client_for(tenants.owner).post(
        "/admin/workspaces/privacysettings/add/", {"workspace": tenants.a.pk, "retention_days": "90"}
    )

    assert response.status_code == 302
    assert PrivacySettings.objects.get(workspace=tenants.a).retention_days == 90
    entry = AuditEntry.objects.get(object_type="privacysettings")
    assert (entry.actor, entry.action, entry.workspace) == (tenants.owner, "create", tenants.a)
    assert client_for(tenants.supervisor).get("/admin/workspaces/privacysettings/").status_code == 403


def test_the_purge_is_scheduled():
    from apps.workspaces.management.commands.setup_schedules import SCHEDULES

    assert "workspaces.retention_purge" in {entry["task"] for entry in SCHEDULES}


# Secrets and personal data at rest --------------------------------------------------------------


def dump_database() -> str:
    db = connection.settings_dict
    command = [str(PG_DUMP), "--data-only", "--dbname", db["NAME"], "--username", db["USER"] or "postgres"]
    if db["HOST"]:
        command += ["--host", db["HOST"]]
    if db["PORT"]:
        command += ["--port", str(db["PORT"])]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout


PERSONAL = (NAME, "Khalil", PHONE, WA_ID, "1001234567", EMAIL, ADDRESS, "Tahrir")


@pytest.mark.django_db(transaction=True)
def test_a_database_dump_of_a_populated_workspace_shows_no_personal_value_or_secret(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    workspace = make_workspace(slug="dumped")
    _, raw_token = workspace_services.api_token_create(workspace=workspace, name="order system")
    populate(workspace, make_member(workspace, "supervisor").user, webhooks=False)

    dump = dump_database()

    assert "contacts_contact" in dump and "contacts_order" in dump and "conversations_message" in dump
    secrets = (APP_SECRET, "test-token", raw_token, raw_token[len("prl_") :])
    assert [value for value in (*PERSONAL, *secrets) if value in dump] == []


@pytest.mark.django_db(transaction=True)
def test_outgoing_webhook_deliveries_keep_no_personal_value_in_clear(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    workspace = make_workspace(slug="hooked")
    populate(workspace, make_member(workspace, "supervisor").user, webhooks=True)

    dump = dump_database()

    assert [value for value in PERSONAL if value in dump] == []


def test_an_encrypted_delivery_is_shown_in_the_admin_replayed_and_sent_as_it_was(tenants, settings, tmp_path):
    from apps.connectors.services import webhook_body

    settings.MEDIA_ROOT = tmp_path
    contact = populate(tenants.a, tenants.supervisor)
    delivery = WebhookDelivery.objects.get(workspace=tenants.a)
    admin = client_for(tenants.owner)

    page = admin.get(f"/admin/connectors/webhookdelivery/{delivery.pk}/change/")
    replay = admin.post("/admin/connectors/webhookdelivery/", {"action": "replay", "_selected_action": [delivery.pk]})

    assert page.status_code == 200 and NAME in page.content.decode()
    assert replay.status_code == 302
    delivery.refresh_from_db()
    assert delivery.state == "pending" and delivery.attempts == 0
    sent = json.loads(webhook_body(delivery))["data"]
    assert sent == {"id": contact.pk, "name": NAME, "phone": PHONE, "email": EMAIL}


def test_a_deliverys_body_is_re_encrypted_when_the_keys_rotate(tenants, settings, tmp_path):
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    settings.MEDIA_ROOT = tmp_path
    populate(tenants.a, tenants.supervisor)
    old_key, new_key = settings.ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [new_key, old_key]

    call_command("rotate_encryption_keys", stdout=io.StringIO())

    settings.ENCRYPTION_KEYS = [new_key]  # the old key is gone
    assert WebhookDelivery.objects.get(workspace=tenants.a).payload["name"] == NAME


def test_api_tokens_are_stored_as_hashes(tenants):
    from apps.workspaces.models import ApiToken

    stored = ApiToken.objects.get(workspace=tenants.a)

    assert stored.token_hash == ApiToken.hash(tenants.token_a) and tenants.token_a not in stored.token_hash
    assert stored.hint == tenants.token_a[:10] and len(stored.hint) < len(tenants.token_a) // 3
