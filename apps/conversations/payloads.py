"""The shapes of messages and conversations in realtime events (the API's serializers reuse
them), so the inbox renders what it receives without another request."""


def attachment_payload(attachment) -> dict:
    return {
        "id": attachment.id,
        "uuid": str(attachment.uuid),
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "state": attachment.state,
        "url": f"/attachments/{attachment.uuid}/" if attachment.state == "stored" else None,
    }


def message_event(message) -> dict:
    return {
        "id": message.id,
        "direction": message.direction,
        "sender_kind": message.sender_kind,
        "author_id": message.author_id,
        "kind": message.kind,
        "text": message.text,
        "payload": message.payload,
        "channel_kind": message.channel.kind,
        "reply_to_id": message.reply_to_id,
        "state": message.state,
        "error_code": message.error_code,
        "error_reason": message.error_reason,
        "created_at": message.created_at.isoformat(),
        "attachments": [attachment_payload(a) for a in message.attachments.all()],
    }


def conversation_event(conversation) -> dict:
    return {
        "id": conversation.id,
        "contact_id": conversation.contact_id,
        "channel_id": conversation.channel_id,
        "status": conversation.status,
        "assignee_id": conversation.assignee_id,
        "team_id": conversation.team_id,
        "unread_count": conversation.unread_count,
        "authorized": conversation.authorized,
        "last_message_at": conversation.last_message_at.isoformat() if conversation.last_message_at else None,
        "window_expires_at": conversation.window_expires_at.isoformat() if conversation.window_expires_at else None,
    }
