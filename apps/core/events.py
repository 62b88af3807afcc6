"""The schema of every realtime event sent to browsers.

Each event type names the exact fields of its payload; `build_event` refuses an unknown type or
a payload with missing or extra fields, so the inbox's scripts can rely on the shapes. Apps add
their event types here, in one place.
"""

EVENT_FIELDS: dict[str, frozenset[str]] = {
    # apps.workspaces
    "agent.status": frozenset({"user_id", "membership_id", "status", "capacity", "reason"}),
    "workspace.updated": frozenset({"name", "timezone", "default_language"}),
    "team.updated": frozenset({"team_id", "name"}),
    # apps.conversations
    "message.created": frozenset({"conversation_id", "message"}),
    "message.status": frozenset({"conversation_id", "message_id", "state", "error_code", "error_reason"}),
    "conversation.updated": frozenset({"conversation"}),
    "attachment.failed": frozenset({"conversation_id", "message_id", "attachment_id", "reason"}),
    "conversation.typing": frozenset({"conversation_id", "user_id", "name"}),
    "notification.created": frozenset({"notification"}),
    # apps.broadcasts (results.broadcast_stats: the live progress page)
    "broadcast.progress": frozenset(
        {
            "broadcast_id",
            "state",
            "total",
            "counts",
            "replied",
            "converted",
            "skipped_by_reason",
            "failed_by_reason",
            "rate",
            "eta_seconds",
            "started_at",
            "finished_at",
        }
    ),
}


class UnknownEvent(ValueError):
    pass


def build_event(event_type: str, /, **payload) -> dict:
    fields = EVENT_FIELDS.get(event_type)
    if fields is None:
        raise UnknownEvent(f"No schema for realtime event {event_type!r}")
    if set(payload) != fields:
        missing, extra = sorted(fields - set(payload)), sorted(set(payload) - fields)
        raise UnknownEvent(f"{event_type}: missing {missing}, unexpected {extra}")
    return {"type": event_type, "payload": payload}
