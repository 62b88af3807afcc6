"""Reads for channels: what a web chat visitor may see of their own conversation."""

from apps.connectors.models import Channel, ChannelKind
from apps.connectors.providers.webchat import file_url
from apps.conversations.models import Attachment, Message
from apps.core.crypto import blind_index

HISTORY_LENGTH = 100


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
