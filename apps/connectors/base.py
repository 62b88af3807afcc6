"""The one shape every connector has (see ../shared/STYLE.md, point 9):

    verify the request → parse it into neutral inbound events → send a neutral outbound
    message → classify the provider's errors.

Adding a channel is adding one module in apps/connectors/providers/ with a `Connector`
subclass; nothing else changes. The rest of Parley only ever sees the dataclasses below.
"""

import dataclasses
import enum
import functools
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from django.http import HttpResponse

from apps.core.exceptions import DomainError

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
    # More files of the same message (an email's attachments), each shaped like `media`.
    extra_media: tuple = ()
    # Provider ids of earlier messages this one continues (an email's In-Reply-To and
    # References): a reply from another address still joins that conversation.
    thread_ids: tuple = ()


@dataclass(frozen=True)
class InboundEdit:
    """The customer changed a message they sent earlier (Telegram's edited_message)."""

    provider_id: str
    text: str
    timestamp: datetime
    payload: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ReachabilityUpdate:
    """The customer followed or left the account (WeChat subscribe / unsubscribe): whether
    Parley may message them on this channel at all."""

    sender_id: str
    reachable: bool
    timestamp: datetime
    sender_name: str = ""
    reason: str = ""


@dataclass(frozen=True)
class StatusUpdate:
    provider_id: str
    state: str  # sent | delivered | read | failed
    timestamp: datetime
    recipient_id: str = ""
    error_code: str = ""
    error_reason: str = ""
    opaque: str = ""
    # Messenger's delivery and read "watermarks": with `provider_id` empty, every message sent to
    # `recipient_id` at or before this moment has reached `state`.
    watermark: datetime | None = None


@dataclass(frozen=True)
class TemplateStatusUpdate:
    """The provider's word on a message template, outside any conversation (WhatsApp's
    message_template_status_update and message_template_quality_update webhooks): a review's
    outcome, a pause, a quality rating. apps/connectors/templates.py applies it."""

    account_id: str  # the business account the template belongs to (WhatsApp's WABA id)
    template_id: str  # the provider's id of the template
    name: str
    language: str
    timestamp: datetime
    status: str = ""  # a MessageTemplate.Status value; "" when the event leaves the status as it is
    event: str = ""  # the provider's own word for what happened (APPROVED, FLAGGED, FIRST_PAUSE…)
    reason: str = ""  # why, in words a supervisor can act on (a rejection's reason and advice)
    quality: str = ""  # green | yellow | red | unknown, when the quality rating changed
    flagged: bool | None = None  # at risk of being disabled (True), no longer (False), not said (None)


InboundEvent = InboundMessage | InboundEdit | StatusUpdate | ReachabilityUpdate | TemplateStatusUpdate


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
    # What a connector may need to know about the conversation: "sender_kind" (agent | bot |
    # system), "last_inbound_at" (datetime or None), "last_inbound_id" (the provider id of the
    # customer's last message) and "last_inbound_payload" (its payload: an email's subject and
    # references; both only for a connector that `wants_last_inbound`), "message_uuid".
    context: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    provider_id: str


@dataclass(frozen=True)
class MediaFile:
    content: bytes
    mime_type: str
    filename: str


# Helpers connectors share -------------------------------------------------------------------


# Errors after which a POST may have reached the provider: the request went out, the answer did
# not come back. Sending it again could give the customer the message twice (no provider here
# takes an idempotency key), so such a send is failed for a person to check, not retried.
_ANSWER_LOST = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)
NO_ANSWER = "no_answer"


def network_error(error: Exception) -> ProviderError:
    """A connection that failed or timed out: worth another try, unless a POST went out and only
    its answer was lost."""
    detail = str(error) or type(error).__name__
    try:
        method = error.request.method if isinstance(error, httpx.RequestError) else ""
    except RuntimeError:  # an error raised before any request was made
        method = ""
    if method == "POST" and isinstance(error, _ANSWER_LOST):
        return ProviderError(
            ErrorClass.FATAL,
            NO_ANSWER,
            f"The provider did not answer in time ({detail}); the message may have reached the customer. "
            "Check the conversation before sending it again.",
        )
    return ProviderError(ErrorClass.RETRY, "network", detail)


def read_capped(response: httpx.Response, max_bytes: int, describe=None) -> bytes:
    """The body of a streamed download, refused (`too_large`, fatal) as soon as it is known to
    be over `max_bytes`: by its Content-Length, else while counting. `describe(size)` words the
    refusal for the operator when the provider has its own limit to name."""
    describe = describe or (lambda size: f"{size} bytes, over {max_bytes}")
    declared = int(response.headers.get("Content-Length") or 0)
    if declared > max_bytes:
        raise ProviderError(ErrorClass.FATAL, "too_large", describe(declared))
    content = bytearray()
    for chunk in response.iter_bytes():
        content += chunk
        if len(content) > max_bytes:
            raise ProviderError(ErrorClass.FATAL, "too_large", describe(len(content)))
    return bytes(content)


def stored_media(media: dict, max_bytes: int, *, under: str, missing_code: str, missing: str) -> MediaFile:
    """A file that is already in our storage (a widget's upload, an email's attachment written
    when the mail was parsed), read back only from the channel's own folder `under`."""
    from django.core.files.storage import default_storage

    path = media["id"]
    if not path.startswith(under) or not default_storage.exists(path):
        raise ProviderError(ErrorClass.FATAL, missing_code, missing)
    if default_storage.size(path) > max_bytes:
        raise ProviderError(ErrorClass.FATAL, "too_large", "The file is larger than this channel accepts.")
    with default_storage.open(path, "rb") as handle:
        content = handle.read()
    return MediaFile(content=content, mime_type=media.get("mime_type", ""), filename=media.get("filename", ""))


def json_body(raw_body: bytes, **options):
    """A webhook's JSON, or ParseError however malformed it is: a body nested a hundred thousand
    deep is a RecursionError to `json`, not a ValueError."""
    try:
        return json.loads(raw_body, **options)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ParseError(f"not JSON: {error}") from error


def moment(value, *, per_second: int = 1) -> datetime:
    """An epoch timestamp (seconds, or milliseconds with per_second=1000) as an aware moment;
    now when it is missing or malformed, since a message is worth more than its clock."""
    try:
        return datetime.fromtimestamp(int(value) / per_second, tz=UTC)
    except (TypeError, ValueError, OverflowError):
        return datetime.now(tz=UTC)


# Parsed events are checked before anything is stored -----------------------------------------
#
# Whatever a provider (or someone holding a channel's secret) posts, `parse` either returns neutral
# events that PostgreSQL can store or raises ParseError, which parks the delivery as failed with
# that error (admin: inbound events, replay). Without this, a payload of the wrong shape broke the
# parser with a TypeError, or an event with a NUL character, a lone surrogate, NaN or a 300-character
# id broke the write: the drainer retried it five times before parking it, with a traceback for its
# reason (tests/trust/test_fuzz_parsers.py found these).

MALFORMED = (LookupError, TypeError, AttributeError, ValueError, RecursionError, OverflowError)
PROVIDER_ID_MAX = 191  # Message.provider_id
CUSTOMER_ID_MAX = 120  # Contact.external_id
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(value):
    """`value` with what PostgreSQL's text and jsonb refuse taken out: NUL characters, lone
    surrogates (JSON may escape them; UTF-8 cannot hold them) and non-finite numbers."""
    if isinstance(value, str):
        value = value.replace("\x00", "")
        return value if value.isascii() else LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(_storable(key)): _storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_storable(item) for item in value)
    return value


def _text(event, name: str, *, required: bool = False, limit: int | None = None) -> str:
    """A string field of an event, from a number where a provider sent one; anything else (a
    list, an object, `true`) is not what the provider documents."""
    value = getattr(event, name)
    if value is None:
        value = ""
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ParseError(f"{type(event).__name__}.{name} is {type(value).__name__}, not text")
    value = _storable(value)
    if required and not value.strip():
        raise ParseError(f"{type(event).__name__} without {name}")
    if limit is not None and len(value) > limit:
        raise ParseError(f"{type(event).__name__}.{name} has {len(value)} characters; at most {limit} fit")
    return value


TEXT_FIELDS = {
    InboundMessage: {
        "provider_id": {"required": True, "limit": PROVIDER_ID_MAX},
        "sender_id": {"required": True},
        "text": {},
        "sender_name": {},
        "sender_phone": {},
        "sender_email": {},
        "reply_to_provider_id": {},
        "customer_id": {"limit": CUSTOMER_ID_MAX},
    },
    InboundEdit: {"provider_id": {"required": True}, "text": {}},
    StatusUpdate: {
        name: {} for name in ("provider_id", "state", "recipient_id", "error_code", "error_reason", "opaque")
    },
    ReachabilityUpdate: {"sender_id": {"required": True}, "sender_name": {}, "reason": {}},
    TemplateStatusUpdate: {
        "account_id": {},
        "template_id": {"limit": 64},  # MessageTemplate.provider_id
        "name": {"required": True, "limit": 512},
        "language": {"required": True, "limit": 15},
        "status": {},
        "event": {},
        "reason": {},
        "quality": {},
    },
}


def _neutral(event):
    """The event as Parley stores it, or ParseError saying what is wrong with it."""
    if type(event) not in TEXT_FIELDS:
        raise ParseError(f"not a neutral event: {type(event).__name__}")
    changes = {name: _text(event, name, **rule) for name, rule in TEXT_FIELDS[type(event)].items()}
    if not isinstance(event.timestamp, datetime) or event.timestamp.tzinfo is None:
        raise ParseError(f"{type(event).__name__}.timestamp is not an aware datetime")
    if hasattr(event, "payload"):
        if not isinstance(event.payload, dict):
            raise ParseError(f"{type(event).__name__}.payload is {type(event.payload).__name__}, not an object")
        changes["payload"] = _storable(event.payload)
    if isinstance(event, InboundMessage):
        files = [event.media, *event.extra_media]
        if not all(media is None or isinstance(media, dict) for media in files):
            raise ParseError("InboundMessage.media is not an object")
        media = [_media(item) for item in files if item]
        changes["media"] = media[0] if event.media else None
        changes["extra_media"] = tuple(media[1:] if event.media else media)
        changes["thread_ids"] = tuple(str(_storable(i)) for i in event.thread_ids if isinstance(i, str | int))
    elif isinstance(event, StatusUpdate) and event.watermark is None and not changes["provider_id"]:
        raise ParseError("StatusUpdate without provider_id")
    return dataclasses.replace(event, **changes)


def _media(media: dict) -> dict:
    for key in ("id", "mime_type", "filename", "caption"):
        value = media.get(key)
        if value is not None and not isinstance(value, str | int):
            raise ParseError(f"media {key} is {type(value).__name__}, not text")
    return _storable({**media, **{key: str(media.get(key) or "") for key in ("id", "mime_type", "filename")}})


def _parse_checked(parse):
    @functools.wraps(parse)
    def parse_checked(self, channel, raw_body: bytes, headers=None) -> list:
        try:
            events = parse(self, channel, raw_body, headers)
            return [_neutral(event) for event in events]
        except ParseError:
            raise
        except MALFORMED as error:
            raise ParseError(f"malformed {self.kind} delivery: {type(error).__name__}: {error}") from error

    return parse_checked


class Connector:
    kind: str = ""
    # Whether free-form messages are allowed only within a window after the customer's last
    # message, and how long it is.
    reply_window_hours: int | None = None
    # Whether the provider has approved templates for use outside the window (WhatsApp).
    templates: bool = False
    # A longer window for replies written by a person (Messenger's HUMAN_AGENT tag: 7 days).
    human_reply_window_hours: int | None = None
    # How many messages may be sent within one window before the customer writes again
    # (WeChat's customer-service quota); None is no limit.
    replies_per_window: int | None = None
    # Menus go out as a numbered list, so a customer's "2" is taken as the second option.
    numbered_menus: bool = False
    # Whether a send needs the customer's last message (`context["last_inbound_id"]` and
    # `["last_inbound_payload"]`: an email's reply threads under it); a query per send otherwise saved.
    wants_last_inbound: bool = False
    # Largest file the provider accepts, by media family (bytes).
    size_limits: dict[str, int] = {}
    # Error codes meaning "this channel sends too fast": every worker then pauses the channel,
    # not just the message that met it (an error with retry_after does the same).
    rate_limit_codes: frozenset[str] = frozenset({"429"})
    # Largest webhook body accepted (an inbound-parse email carries its attachments).
    max_webhook_bytes: int = 5 * 1024 * 1024
    # Whether beat should call `poll` (IMAP mailboxes).
    polls: bool = False

    def __init_subclass__(cls, **kwargs):
        """Every connector's `parse` answers neutral, storable events or ParseError (see
        `_neutral`), so a new channel cannot bring a payload that half-breaks the pipeline."""
        super().__init_subclass__(**kwargs)
        if "parse" in cls.__dict__:
            cls.parse = _parse_checked(cls.__dict__["parse"])

    def handshake(self, channel, request) -> HttpResponse:
        return HttpResponse(status=405)

    def verify(self, channel, raw_body: bytes, headers, query=None) -> bool:
        """Whether the request comes from the provider: checked on the raw bytes, before
        anything is stored. `query` is the URL's query parameters (WeChat signs there). May
        raise apps.connectors.replay.WebhookRefused to say why (a stale or replayed request)."""
        raise NotImplementedError

    def forget(self, channel, raw_body: bytes, headers, query=None) -> None:
        """The verified request was not kept after all (refused as malformed, or the database
        was down): undo what `verify` remembered of it, so its sender's retry is taken."""

    def acknowledge(self, channel=None, raw_body: bytes = b"") -> HttpResponse:
        """The answer to a stored webhook (WeChat wants `success`; Telegram may carry one Bot API
        call in it, such as answering a button press)."""
        return HttpResponse("OK", content_type="text/plain")

    def parse(self, channel, raw_body: bytes, headers=None) -> list[InboundEvent]:
        """Neutral events from a stored delivery; `headers` are the ones the webhook kept
        (Content-Type for a multipart email)."""
        raise NotImplementedError

    def activate(self, channel) -> None:
        """Called once the channel is saved: register the webhook with the provider (Telegram's
        setWebhook). Raises ProviderError when the provider refuses."""

    def address_of(self, contact) -> str:
        """The contact's id on this channel when they never wrote here but can be reached
        anyway (a WhatsApp number is the phone, an email channel the address); "" if not."""
        return ""

    def reject(self, channel, raw_body: bytes, headers) -> str | None:
        """Why a signed body cannot be a delivery at all (answered 400 with this reason, nothing
        stored), for channels whose sender can fix their request (the custom channel)."""
        return None

    def poll(self, channel, store) -> int:
        """For channels that fetch rather than receive (IMAP): calls `store(body, headers)` for
        each new delivery, which keeps it like a webhook; only then is it marked as taken at the
        provider, so a crash in between fetches it again (and the pipeline dedupes). Returns
        how many were stored."""
        return 0

    def send(self, channel, message: OutboundMessage) -> SendResult:
        raise NotImplementedError

    def templates_fetch(self, channel) -> list[dict]:
        """The channel's message templates as the provider lists them, every page, each as
        {"provider_id", "name", "language", "category", "status", "rejected_reason",
        "parameter_format", "header_format", "header", "body", "footer", "buttons", "examples"}
        with Parley's values (MessageTemplate's choices). Raises ProviderError when the provider
        refuses."""
        raise DomainError(f"{self.kind} channels have no message templates to sync.", code="templates_unsupported")

    def template_payload(self, template, parameters) -> dict:
        """A MessageTemplate filled with `parameters` (a list in the order of its variables, or
        a dict by slot) in the provider's shape, as `send` puts it on the wire."""
        raise DomainError(f"{self.kind} channels cannot send message templates.", code="templates_unsupported")

    def fetch_media(self, channel, media: dict, max_bytes: int) -> MediaFile:
        raise NotImplementedError

    def size_limit(self, mime_type: str, channel=None) -> int:
        """The provider's limit for this kind of file, lowered by the channel's own
        `settings.max_media_bytes` where a workspace wants less."""
        family = (mime_type or "").split("/")[0]
        limit = self.size_limits.get(family, self.size_limits.get("document", 100 * 1024 * 1024))
        own = (channel.settings or {}).get("max_media_bytes") if channel is not None else None
        return min(limit, int(own)) if own else limit
