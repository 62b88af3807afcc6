"""Web chat: our own channel, the widget a shop adds to its site with one `<script>` tag.

There is no provider in between. The visitor's socket (apps/connectors/consumers.py) stores what
the widget says as an `InboundEvent` whose body is our own JSON, so web chat rides the same
pipeline as every provider: a worker parses it here, the message is stored once by its provider
id (the visitor's id and the widget's own message id), and the inbox hears of it. Sending is a
push to the visitor's Channels group; the widget answers with delivered and read receipts, which
come back as status events the same way.

Body of a stored event: `{"visitor": "<visitor id>", "customer_id": "<verified id or ''>",
"events": [{"type": "message", "id", "text", "sent_at", "upload"?} | {"type": "status", "id",
"state", "at"}]}`.
"""

import hashlib
import json
import uuid
from datetime import UTC, datetime

from django.core import signing

from apps.connectors.base import (
    Connector,
    ErrorClass,
    InboundMessage,
    MediaFile,
    OutboundMessage,
    ParseError,
    ProviderError,
    SendResult,
    StatusUpdate,
    moment,
    stored_media,
)
from apps.core.realtime import layer_send

MB = 1024 * 1024
RECEIPT_STATES = ("delivered", "read")
FILE_SALT = "parley.webchat.file"


def visitor_group(channel_id: int, visitor_id: str) -> str:
    # Channels group names allow only ASCII letters, digits, hyphens, underscores and periods,
    # and a verified visitor's id carries the shop's customer id, which may hold anything.
    return f"webchat.{channel_id}.{hashlib.sha256(visitor_id.encode()).hexdigest()[:40]}"


def file_url(channel, attachment_uuid: str, visitor_id: str) -> str:
    """A link only this visitor can open (the widget lives on another site: no session there)."""
    token = signing.dumps({"a": attachment_uuid, "v": visitor_id}, salt=FILE_SALT, compress=True)
    return f"/widget/{channel.uuid}/files/{attachment_uuid}/?t={token}"


class WebChatConnector(Connector):
    kind = "webchat"
    reply_window_hours = None  # our own channel: operators may always answer
    size_limits = {"image": 10 * MB, "video": 25 * MB, "audio": 16 * MB, "document": 25 * MB}

    def verify(self, channel, raw_body: bytes, headers, query=None) -> bool:
        return False  # nobody posts web chat webhooks: the widget speaks over its own socket

    def parse(self, channel, raw_body: bytes, headers=None) -> list:
        try:
            body = json.loads(raw_body)
            visitor = str(body["visitor"])
            customer_id = str(body.get("customer_id") or "")
            return [self._event(visitor, customer_id, item) for item in body["events"]]
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
            raise ParseError(f"not a web chat event: {error!r}") from error

    def _event(self, visitor: str, customer_id: str, item: dict):
        if item["type"] == "status":
            if item["state"] not in RECEIPT_STATES:
                raise ParseError(f"unknown receipt state {item['state']!r}")
            return StatusUpdate(
                provider_id=str(item["id"]), state=item["state"], timestamp=moment(item.get("at"), per_second=1000)
            )
        upload = item.get("upload")
        return InboundMessage(
            provider_id=f"{visitor}/{item['id']}",
            sender_id=visitor,
            customer_id=customer_id,
            timestamp=moment(item.get("sent_at"), per_second=1000),
            kind="media" if upload else "text",
            text=str(item.get("text", "")),
            media={"id": upload["path"], "mime_type": upload["content_type"], "filename": upload["filename"]}
            if upload
            else None,
        )

    def send(self, channel, message: OutboundMessage) -> SendResult:
        provider_id = f"out-{uuid.uuid4().hex}"
        media = message.media or {}
        pushed = {
            "id": provider_id,
            "direction": "out",
            "text": message.text,
            "payload": message.payload,
            "sent_at": datetime.now(tz=UTC).isoformat(),
            "attachments": [
                {
                    "filename": media.get("filename", ""),
                    "content_type": media.get("mime_type", ""),
                    "url": file_url(channel, media["uuid"], message.recipient_id),
                }
            ]
            if media.get("uuid")
            else [],
        }
        try:
            layer_send(visitor_group(channel.id, message.recipient_id), {"type": "visitor.message", "message": pushed})
        except Exception as error:  # the channel layer is Redis: a blip is worth another try
            raise ProviderError(ErrorClass.RETRY, "layer_unavailable", str(error)) from error
        return SendResult(provider_id=provider_id)

    def fetch_media(self, channel, media: dict, max_bytes: int) -> MediaFile:
        """The widget uploaded the file to us already (views.widget_upload); take it from there."""
        return stored_media(
            media,
            max_bytes,
            under=f"webchat/{channel.id}/",
            missing_code="missing_upload",
            missing="The uploaded file is gone.",
        )
