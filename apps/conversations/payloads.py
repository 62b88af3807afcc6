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


def _iso(moment) -> str | None:
    return moment.isoformat() if moment else None


def _tag_ids(conversation) -> list[int]:
    annotated = getattr(conversation, "tag_id_list", None)  # selectors.with_tag_ids
    if annotated is not None:
        return sorted(annotated)
    return sorted(tag.pk for tag in conversation.tags.all())


_NOT_ANNOTATED = object()


def _bot(conversation) -> str | None:
    """The workflow handling the conversation now, if any: annotated on lists
    (selectors.with_bot), else looked up (one query)."""
    annotated = getattr(conversation, "active_bot", _NOT_ANNOTATED)
    if annotated is not _NOT_ANNOTATED:
        return annotated
    from apps.conversations.selectors import conversation_active_bot

    return conversation_active_bot(conversation_id=conversation.id)


def conversation_event(conversation) -> dict:
    """A conversation as an inbox row shows it (the API's list serializer reuses it)."""
    return {
        "id": conversation.id,
        "contact_id": conversation.contact_id,
        "contact_name": str(conversation.contact),
        "channel_id": conversation.channel_id,
        "channel_kind": conversation.channel.kind,
        "status": conversation.status,
        "assignee_id": conversation.assignee_id,
        "team_id": conversation.team_id,
        "priority": conversation.priority,
        "category": conversation.category,
        "tag_ids": _tag_ids(conversation),
        "language": conversation.language,
        "unread_count": conversation.unread_count,
        "authorized": conversation.authorized,
        "waiting_since": _iso(conversation.waiting_since),
        "snoozed_until": _iso(conversation.snoozed_until),
        "last_message_at": _iso(conversation.last_message_at),
        "window_expires_at": _iso(conversation.window_expires_at),
        "closed_at": _iso(conversation.closed_at),
        "csat_score": conversation.csat_score,
        "queued_at": _iso(conversation.queued_at),
        "bot": _bot(conversation),
    }


def notification_event(notification) -> dict:
    return {
        "id": notification.id,
        "kind": notification.kind,
        "conversation_id": notification.conversation_id,
        "message_id": notification.message_id,
        "actor_id": notification.actor_id,
        "created_at": _iso(notification.created_at),
        "read_at": _iso(notification.read_at),
    }
