"""Data protection writes: a person's export and erasure (data subject rights), and the retention
period after which closed conversations lose their content. Each act is audited
(`workspaces.services.audit_record`). What is kept, removed or anonymised is listed in
docs/security.md, "Personal data"."""

import json
import tempfile
import zipfile
from datetime import datetime, timedelta

from django.core.files.storage import default_storage
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from apps.contacts.models import Contact, ContactIdentity, Order
from apps.contacts.services import contact_index, order_payload
from apps.core.exceptions import DomainError
from apps.workspaces.models import AuditEntry, PrivacySettings, User
from apps.workspaces.services import audit_record

EXPORT_FORMAT = 1
# Above this the ZIP being built spills from memory to a temporary file.
EXPORT_IN_MEMORY_BYTES = 8 * 1024 * 1024
REDACTED_ERASED = {"redacted": "erased"}
REDACTED_RETENTION = {"redacted": "retention"}


# Export -----------------------------------------------------------------------------------------


def contact_export(*, contact: Contact, actor: User | None = None, request: HttpRequest | None = None):
    """A ZIP of everything Parley holds about the person: `contact.json` (profile, identities,
    tags, custom fields, consents, conversations with every message and note, orders, broadcast
    receipts) and their attachments under `files/<attachment uuid>/<name>`. Returns an open
    file positioned at its start; the export is audited."""
    document, files = _export_document(contact)
    archive = tempfile.SpooledTemporaryFile(max_size=EXPORT_IN_MEMORY_BYTES)  # noqa: SIM115 (the caller streams it)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("contact.json", json.dumps(document, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2))
        for path, name in files:
            if default_storage.exists(name):
                with default_storage.open(name, "rb") as source, zipped.open(path, "w") as target:
                    for chunk in iter(lambda: source.read(1024 * 1024), b""):
                        target.write(chunk)
    audit_record(
        action=AuditEntry.Action.EXPORT,
        actor=actor,
        obj=contact,
        details={"what": "contact", "files": len(files)},
        request=request,
    )
    archive.seek(0)
    return archive


def contact_export_filename(contact: Contact) -> str:
    return f"contact-{contact.pk}-{timezone.now():%Y%m%d-%H%M%S}.zip"


def _export_document(contact: Contact) -> tuple[dict, list[tuple[str, str]]]:
    people = [contact, *Contact.objects.filter(merged_into=contact)]
    files: list[tuple[str, str]] = []
    document = {
        "format": EXPORT_FORMAT,
        "exported_at": timezone.now(),
        "workspace": contact.workspace.name,
        "contact": _profile(contact),
        "merged_duplicates": [_profile(duplicate) for duplicate in people[1:]],
        "identities": [_identity(identity) for identity in _identities(people)],
        "conversations": [_conversation(conversation, files) for conversation in _conversations(contact)],
        "orders": [order_payload(order) for order in Order.objects.filter(contact__in=people).order_by("id")],
        "broadcasts": _broadcast_receipts(people),
    }
    return document, files


def _profile(contact: Contact) -> dict:
    return {
        "id": contact.pk,
        "name": contact.name,
        "phone": contact.phone,
        "email": contact.email,
        "external_id": contact.external_id,
        "language": contact.language,
        "country": contact.country,
        "lifecycle_stage": contact.lifecycle_stage,
        "last_purchase_at": contact.last_purchase_at,
        "created_at": contact.created_at,
        "last_seen_at": contact.last_seen_at,
        "erased_at": contact.erased_at,
        "tags": sorted(tag.name for tag in contact.tags.all()),
        "custom_fields": contact.custom_fields,
        "marketing_consent": contact.marketing_consent,
    }


def _identities(people: list[Contact]):
    return ContactIdentity.objects.filter(contact__in=people).select_related("channel").order_by("id")


def _identity(identity: ContactIdentity) -> dict:
    return {
        "channel": identity.channel.name,
        "channel_kind": identity.channel.kind,
        "external_id": identity.external_id,
        "display_name": identity.display_name,
        "reachable": identity.reachable,
        "created_at": identity.created_at,
    }


def _conversations(contact: Contact):
    from apps.conversations.models import Conversation

    return (
        Conversation.objects.filter(contact=contact)
        .select_related("channel")
        .prefetch_related("messages__attachments", "tags")
        .order_by("id")
    )


def _conversation(conversation, files: list[tuple[str, str]]) -> dict:
    return {
        "id": conversation.pk,
        "channel": conversation.channel.name,
        "channel_kind": conversation.channel.kind,
        "status": conversation.status,
        "opened_at": conversation.opened_at,
        "closed_at": conversation.closed_at,
        "category": conversation.category,
        "tags": sorted(tag.name for tag in conversation.tags.all()),
        "csat_score": conversation.csat_score,
        "csat_comment": conversation.csat_comment,
        "closing_summary": conversation.closing_summary,
        "messages": [_message(message, files) for message in conversation.messages.all()],
    }


def _message(message, files: list[tuple[str, str]]) -> dict:
    attachments = []
    for attachment in message.attachments.all():
        path = f"files/{attachment.uuid}/{_safe_name(attachment.filename or 'file')}" if attachment.file else None
        if path:
            files.append((path, attachment.file.name))
        attachments.append(
            {
                "filename": attachment.filename,
                "content_type": attachment.content_type,
                "size": attachment.size,
                "state": attachment.state,
                "file": path,
            }
        )
    return {
        "id": message.pk,
        "direction": message.direction,
        "sender": message.sender_kind,
        "kind": message.kind,
        "text": message.text,
        "payload": message.payload,
        "state": message.state,
        "created_at": message.created_at,
        "sent_at": message.sent_at,
        "delivered_at": message.delivered_at,
        "read_at": message.read_at,
        "attachments": attachments,
    }


def _safe_name(name: str) -> str:
    """A file name from a customer or provider, kept to one harmless path segment in the ZIP."""
    cleaned = name.replace("\\", "_").replace("/", "_").strip(". ") or "file"
    return cleaned[:150]


def _broadcast_receipts(people: list[Contact]) -> list[dict]:
    from apps.broadcasts.models import Recipient

    rows = Recipient.objects.filter(contact__in=people).select_related("broadcast").order_by("id")
    return [
        {
            "broadcast": recipient.broadcast.name,
            "state": recipient.state,
            "reason": recipient.reason,
            "parameters": recipient.parameters,
            "queued_at": recipient.queued_at,
            "sent_at": recipient.sent_at,
            "delivered_at": recipient.delivered_at,
            "read_at": recipient.read_at,
            "replied_at": recipient.replied_at,
            "converted_at": recipient.converted_at,
        }
        for recipient in rows
    ]


# Erasure ----------------------------------------------------------------------------------------


def contact_erase(*, contact: Contact, actor: User | None = None, request: HttpRequest | None = None) -> dict:
    """Erases the person and keeps the counts. The contact row stays, anonymised (no name,
    phone, email, ids, fields, consents or tags; `erased_at` set), so conversations, analytics
    cycles and the daily rollups, broadcast statistics and orders still add up, but nothing in
    them says who it was. Their identities are deleted (writing again makes a new contact), every
    message keeps its direction, kind, state and times but loses its text, data and files;
    summaries, CSAT comments, workflow variables, broadcast parameters, order addresses and
    outgoing webhook deliveries about them go too. Files are removed once this commits.

    Returns the counts of what was erased; the erasure is audited (by id only)."""
    from apps.conversations.models import Attachment, Conversation, Message

    with transaction.atomic():
        person_ids = [contact.pk, *Contact.objects.filter(merged_into=contact).values_list("pk", flat=True)]
        # Conversations first, then the contacts: the inbound pipeline's order (it locks the
        # conversation, then touches the contact), so a message arriving now waits, not deadlocks.
        conversation_ids = list(
            Conversation.objects.select_for_update()
            .filter(contact_id__in=person_ids)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        people = list(Contact.objects.select_for_update().filter(pk__in=person_ids).order_by("pk"))
        contact = next(person for person in people if person.pk == contact.pk)
        if contact.merged_into_id:
            raise DomainError("This contact was merged; erase the contact it was merged into.", code="merged")
        messages = Message.objects.filter(conversation_id__in=conversation_ids)
        attachments = Attachment.objects.filter(message__in=messages)
        file_names = [name for name in attachments.values_list("file", flat=True) if name]
        counts = {
            "conversations": len(conversation_ids),
            "messages": messages.count(),
            "files": len(file_names),
            "identities": ContactIdentity.objects.filter(contact__in=people).count(),
        }
        attachments.delete()
        # Timeline events too: a bot's step or a close carries the customer's words and the summary.
        messages.update(text="", payload=REDACTED_ERASED, error_reason="")
        Conversation.objects.filter(pk__in=conversation_ids).update(csat_comment="", closing_summary="")
        ContactIdentity.objects.filter(contact__in=people).delete()
        _erase_around(people, conversation_ids)
        for person in people:
            _anonymise(person)
        audit_record(action=AuditEntry.Action.ERASE, actor=actor, obj=contact, details=counts, request=request)
        transaction.on_commit(lambda: _files_delete(file_names))
    return counts


def _anonymise(contact: Contact) -> None:
    contact.tags.clear()
    contact.name = contact.phone = contact.email = contact.external_id = contact.country = ""
    contact.custom_fields, contact.marketing_consent = {}, {}
    contact.last_purchase_at = None
    contact.erased_at = contact.erased_at or timezone.now()
    contact.save(
        update_fields=[
            "name",
            "phone",
            "email",
            "external_id",
            "country",
            "custom_fields",
            "marketing_consent",
            "last_purchase_at",
            "erased_at",
            *contact_index(contact),
        ]
    )


def _erase_around(people: list[Contact], conversation_ids: list[int]) -> None:
    """What other apps keep about the person: their words and values go, the rows that other
    numbers are made of stay."""
    from apps.analytics.models import Cycle, Event
    from apps.broadcasts.models import Recipient
    from apps.connectors.models import WebhookDelivery
    from apps.workflows.models import Run, RunLog

    Order.objects.filter(contact__in=people).update(delivery_address="", tracking_number="", tracking_url="")
    Recipient.objects.filter(contact__in=people).update(parameters=[])
    Run.objects.filter(conversation_id__in=conversation_ids).update(variables={})
    RunLog.objects.filter(run__conversation_id__in=conversation_ids).update(detail="")
    # The closing summary is an analytics fact too; the folder rebuilds cycles from events, so
    # both lose it, or a rebuild would bring it back. The folder's kept state (`resume`) holds it
    # as well: dropped, the next fold of the conversation reads the scrubbed log instead.
    Cycle.objects.filter(conversation_id__in=conversation_ids).update(summary="", resume=None)
    for event in Event.objects.filter(conversation_id__in=conversation_ids, data__has_key="summary"):
        event.data.pop("summary")
        event.save(update_fields=["data"])
    ids = [person.pk for person in people]
    WebhookDelivery.objects.filter(workspace_id=people[0].workspace_id).filter(
        Q(contact_id__in=ids) | Q(conversation_id__in=conversation_ids)
    ).delete()
    _admin_log_anonymise(people, conversation_ids)


def _admin_log_anonymise(people: list[Contact], conversation_ids: list[int]) -> None:
    """Django's admin history names objects as they printed (a contact by name, a conversation
    with its contact's): those lines are renamed to ids."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    from apps.conversations.models import Conversation

    named = ((Contact, [person.pk for person in people], "Contact"), (Conversation, conversation_ids, "Conversation"))
    for model, ids, label in named:
        content_type = ContentType.objects.get_for_model(model)
        for object_id in ids:
            LogEntry.objects.filter(content_type=content_type, object_id=str(object_id)).update(
                object_repr=f"{label} #{object_id}"
            )


def _files_delete(names: list[str]) -> None:
    for name in names:
        default_storage.delete(name)


# Retention --------------------------------------------------------------------------------------

PURGE_BATCH = 500


def retention_purge(*, workspace_id: int, now: datetime | None = None) -> dict:
    """Removes the content of the workspace's conversations closed longer ago than its retention
    period: messages keep their rows (direction, kind, state, times: every count stays) and lose
    their text, data and files; raw webhook deliveries older than the period go too.

    A run reads only what closed since the last one (`PrivacySettings.purged_until`) and commits
    batch by batch, so a first run over years of history holds no long transaction; a run that
    dies is simply done again (purging twice changes nothing). A conversation reopened after its
    purge is purged again after its next close."""
    now = now or timezone.now()
    settings = PrivacySettings.objects.filter(workspace_id=workspace_id).first()
    counts = {"conversations": 0, "messages": 0, "files": 0, "raw_deliveries": 0}
    if settings is None or settings.retention_days is None:
        return counts
    cutoff = now - timedelta(days=settings.retention_days)
    ids = _closed_between(workspace_id, settings.purged_until, cutoff)
    for start in range(0, len(ids), PURGE_BATCH):
        with transaction.atomic():
            messages, files = _conversations_purge(ids[start : start + PURGE_BATCH])
        counts["conversations"] += len(ids[start : start + PURGE_BATCH])
        counts["messages"] += messages
        counts["files"] += files
    with transaction.atomic():
        counts["raw_deliveries"] = _raw_deliveries_purge(workspace_id, cutoff)
        if settings.purged_until is None or cutoff > settings.purged_until:
            PrivacySettings.objects.filter(pk=settings.pk).update(purged_until=cutoff)
        if counts["messages"] or counts["files"] or counts["raw_deliveries"]:
            details = {**counts, "retention_days": settings.retention_days, "closed_before": cutoff.isoformat()}
            audit_record(action=AuditEntry.Action.PURGE, workspace_id=workspace_id, details=details)
    return counts


def _closed_between(workspace_id: int, since: datetime | None, cutoff: datetime) -> list[int]:
    from apps.conversations.models import Conversation

    closed = Conversation.objects.filter(
        workspace_id=workspace_id, status=Conversation.Status.CLOSED, closed_at__lt=cutoff
    )
    if since is not None:
        closed = closed.filter(closed_at__gte=since)
    return list(closed.order_by("closed_at", "id").values_list("pk", flat=True))


def _conversations_purge(conversation_ids: list[int]) -> tuple[int, int]:
    from apps.conversations.models import Attachment, Conversation, Message

    messages = Message.objects.filter(conversation_id__in=conversation_ids)
    attachments = Attachment.objects.filter(message__in=messages)
    names = [name for name in attachments.values_list("file", flat=True) if name]
    attachments.delete()
    purged = messages.exclude(payload=REDACTED_RETENTION).update(text="", payload=REDACTED_RETENTION, error_reason="")
    Conversation.objects.filter(pk__in=conversation_ids).exclude(csat_comment="").update(csat_comment="")
    transaction.on_commit(lambda: _files_delete(names))
    return purged, len(names)


def _raw_deliveries_purge(workspace_id: int, cutoff: datetime) -> int:
    """The webhook bodies as they arrived (encrypted, but the same words): kept for replay, not
    past the retention period. Pending ones wait for their worker."""
    from apps.conversations.models import InboundEvent

    raw = InboundEvent.objects.filter(workspace_id=workspace_id, received_at__lt=cutoff)
    return raw.exclude(state=InboundEvent.State.PENDING).delete()[0]
