"""Reads for channels: the channel a webhook names; what a web chat visitor may see of their own
conversation."""

import time

from django.db.models import F

from apps.connectors.models import Channel, ChannelKind
from apps.connectors.providers.webchat import file_url
from apps.conversations.models import Attachment, Message
from apps.core.crypto import blind_index

HISTORY_LENGTH = 100


# Channels that webhooks named lately, per web process: under load one channel receives hundreds
# of deliveries a second, and reading and decrypting it each time was a third of the webhook's cost.
_webhook_channels: dict[str, tuple[float, Channel]] = {}


def webhook_channel_get(*, channel_uuid, max_age: float = 0) -> Channel | None:
    """The enabled channel a provider's webhook is for. With `max_age`, possibly the one read that
    many seconds ago: a channel disabled, or given a new secret, is seen that much later."""
    if max_age:
        cached = _webhook_channels.get(str(channel_uuid))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
    channel = Channel.objects.select_related("workspace").filter(uuid=channel_uuid, enabled=True).first()
    if max_age and channel is not None:
        _webhook_channels[str(channel_uuid)] = (time.monotonic() + max_age, channel)
    return channel


def webchat_channel_get(*, channel_uuid) -> Channel | None:
    return (
        Channel.objects.select_related("workspace")
        .filter(uuid=channel_uuid, kind=ChannelKind.WEBCHAT, enabled=True)
        .first()
    )


def _visitor_messages(channel, visitor_id: str):
    return Message.objects.filter(
        channel=channel,
        conversation__contact__identities__channel=channel,
        conversation__contact__identities__external_id_index=blind_index(visitor_id),
    )


def webchat_history(*, channel, visitor_id: str) -> list[dict]:
    """The visitor's conversation as the widget shows it: never internal notes or system events."""
    messages = (
        _visitor_messages(channel, visitor_id)
        .exclude(kind__in=[Message.Kind.NOTE, Message.Kind.EVENT])
        .exclude(direction=Message.Direction.OUTBOUND, provider_id="")  # not sent yet, or failed
        .prefetch_related("attachments")
        .order_by("-created_at", "-id")[:HISTORY_LENGTH]
    )
    return [visitor_message(channel, visitor_id, message) for message in reversed(messages)]


def visitor_message(channel, visitor_id: str, message: Message) -> dict:
    inbound = message.direction == Message.Direction.INBOUND
    return {
        # The widget's own id for what the visitor wrote; ours for what the operator wrote.
        "id": message.provider_id.split("/", 1)[-1] if inbound else message.provider_id,
        "direction": message.direction,
        "text": message.text,
        "payload": message.payload if not inbound else {},
        "state": message.state,
        "sent_at": message.created_at.isoformat(),
        "attachments": [
            {
                "filename": attachment.filename,
                "content_type": attachment.content_type,
                "url": file_url(channel, str(attachment.uuid), visitor_id),
            }
            for attachment in message.attachments.all()
            if attachment.state == Attachment.State.STORED
        ],
    }


def webchat_attachment_get(*, channel, visitor_id: str, attachment_uuid) -> Attachment | None:
    return Attachment.objects.filter(
        uuid=attachment_uuid,
        state=Attachment.State.STORED,
        message__in=_visitor_messages(channel, visitor_id).exclude(kind=Message.Kind.NOTE),
    ).first()


# Message templates -----------------------------------------------------------------------------

# The contact's fields a template variable may take, as broadcasts name them ("contact.<field>";
# a custom field is "contact.custom.<key>").
CONTACT_FIELDS = ("first_name", "name", "phone", "email", "language", "country", "external_id")


def contact_field_value(contact, field: str) -> str:
    path = field.removeprefix("contact.")
    if path.startswith("custom."):
        value = (contact.custom_fields or {}).get(path.removeprefix("custom."))
    else:
        value = getattr(contact, path, None) if path in CONTACT_FIELDS else None
    return "" if value is None else str(value)


def contact_field_choices(*, workspace_id: int) -> list[tuple[str, str]]:
    from apps.contacts.models import CustomFieldDefinition

    custom = CustomFieldDefinition.objects.filter(workspace_id=workspace_id).values_list("key", "label")
    return [(f"contact.{f}", f.replace("_", " ")) for f in CONTACT_FIELDS] + [
        (f"contact.custom.{key}", label) for key, label in custom
    ]


def template_default_mapping(*, template, workspace_id: int) -> list[dict]:
    """One entry per variable, as a broadcast maps them: a named variable takes the contact's
    field of its name ({{first_name}}, or a custom field's key), any other its example."""
    known = {field.rsplit(".", 1)[-1]: field for field, _ in contact_field_choices(workspace_id=workspace_id)}
    return [{"field": known[v.name]} if template.named and v.name in known else {} for v in template.variables]


def template_values_for_contact(*, template, contact, mapping: list[dict] | None = None) -> list[str]:
    """The values a send to `contact` would carry: per variable `{"field": "contact.first_name"}`,
    `{"value": "SPRING10"}`, or nothing for the example; an empty field falls back to the
    example too, so the preview never shows a hole."""
    mapping = (
        mapping
        if mapping is not None
        else template_default_mapping(template=template, workspace_id=template.workspace_id)
    )
    examples = list(template.example or [])
    values = []
    for index, _variable in enumerate(template.variables):
        rule = mapping[index] if index < len(mapping) else {}
        value = contact_field_value(contact, rule["field"]) if rule.get("field") else str(rule.get("value") or "")
        values.append(value or (str(examples[index]) if index < len(examples) else ""))
    return values


def _preview_contacts(template):
    from apps.contacts.models import Contact

    contacts = Contact.objects.filter(workspace_id=template.workspace_id, merged_into__isnull=True)
    return contacts.order_by(F("last_seen_at").desc(nulls_last=True), "-created_at", "-pk")


def template_sample_contacts(*, template, limit: int = 50) -> list:
    """The contacts a preview may be filled with: the template's workspace's, latest seen first."""
    return list(_preview_contacts(template)[:limit])


def template_sample_contact(*, template, contact_id=None):
    """The contact a preview is filled with: the one asked for, if it is in the template's
    workspace, else the one seen most recently (with a name, when any has one)."""
    contacts = _preview_contacts(template)
    if contact_id and str(contact_id).isdigit():
        chosen = contacts.filter(pk=contact_id).first()
        if chosen is not None:
            return chosen
    return contacts.exclude(name="").first() or contacts.first()
