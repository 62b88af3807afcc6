"""The one shape every connector has (see ../shared/STYLE.md, point 9):

    verify the request → parse it into neutral inbound events → send a neutral outbound
    message → classify the provider's errors.

Adding a channel is adding one module in apps/connectors/providers/ with a `Connector`
subclass; nothing else changes. The rest of Parley only ever sees the dataclasses below.
"""

import enum
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from django.http import HttpResponse

HTTP_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


class ErrorClass(enum.StrEnum):
    RETRY = "retry"  # transient: back off and try again
    NEEDS_TEMPLATE = "needs_template"  # outside the customer-service window
    STOP_RECIPIENT = "stop_recipient"  # this person cannot or will not receive messages
    FIX_TEMPLATE = "fix_template"  # the template or its parameters are wrong
    CREDENTIALS = "credentials"  # the channel's token is bad: nothing will work until fixed
    FATAL = "fatal"  # this message will never go


class ProviderError(Exception):
    def __init__(self, error_class: ErrorClass, code: str, detail: str, *, retry_after: float | None = None):
        super().__init__(f"{code}: {detail}")
        self.error_class = error_class
        self.code = str(code)
        self.detail = detail
        self.retry_after = retry_after


class ParseError(ValueError):
    """The payload is not what the provider documents; kept with this error for replay."""


@dataclass(frozen=True)
class InboundMessage:
    provider_id: str
    sender_id: str
    timestamp: datetime
    kind: str  # a Message.Kind value
    text: str = ""
    sender_name: str = ""
    sender_phone: str = ""
    sender_email: str = ""
    payload: dict = field(default_factory=dict)
    media: dict | None = None  # {"id", "mime_type", "filename", "sha256", "caption"}
    reply_to_provider_id: str = ""
    # The shop's own id for a signed-in customer, proven by the site's signature (web chat).
    customer_id: str = ""


@dataclass(frozen=True)
class StatusUpdate:
    provider_id: str
    state: str  # sent | delivered | read | failed
    timestamp: datetime
    recipient_id: str = ""
    error_code: str = ""
    error_reason: str = ""
    opaque: str = ""


InboundEvent = InboundMessage | StatusUpdate


@dataclass(frozen=True)
class OutboundMessage:
    recipient_id: str
    kind: str  # text | media | interactive | template | location | reaction
    text: str = ""
    payload: dict = field(default_factory=dict)
    # {"content"} (bytes), {"provider_media_id"} or {"url"}, plus "mime_type", "filename" and
    # the attachment's "uuid"
    media: dict | None = None
    reply_to_provider_id: str = ""
    opaque: str = ""


@dataclass(frozen=True)
class SendResult:
    provider_id: str


@dataclass(frozen=True)
class MediaFile:
    content: bytes
    mime_type: str
    filename: str


class Connector:
    kind: str = ""
    # Whether free-form messages are allowed only within a window after the customer's last
    # message, and how long it is.
    reply_window_hours: int | None = None
    # Largest file the provider accepts, by media family (bytes).
    size_limits: dict[str, int] = {}

    def handshake(self, channel, request) -> HttpResponse:
        return HttpResponse(status=405)

    def verify(self, channel, raw_body: bytes, headers) -> bool:
        raise NotImplementedError

    def acknowledge(self) -> HttpResponse:
        return HttpResponse("OK", content_type="text/plain")

    def parse(self, channel, raw_body: bytes) -> list[InboundEvent]:
        raise NotImplementedError

    def send(self, channel, message: OutboundMessage) -> SendResult:
        raise NotImplementedError

    def fetch_media(self, channel, media: dict, max_bytes: int) -> MediaFile:
        raise NotImplementedError

    def size_limit(self, mime_type: str, channel=None) -> int:
        """The provider's limit for this kind of file, lowered by the channel's own
        `settings.max_media_bytes` where a workspace wants less."""
        family = (mime_type or "").split("/")[0]
        limit = self.size_limits.get(family, self.size_limits.get("document", 100 * 1024 * 1024))
        own = (channel.settings or {}).get("max_media_bytes") if channel is not None else None
        return min(limit, int(own)) if own else limit
