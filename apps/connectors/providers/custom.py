"""The custom channel: a shop's own mobile app chat, or any system Parley has no connector for.

The contract is ours, written for the app's developer in docs/channels/custom.md. Both ways are
signed like Parley's outgoing webhooks (`X-Parley-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
"<t>." + body)>`, Stripe's scheme), so an app verifies Parley's calls with the code it signs its
own with.

In: the app POSTs `{"events": [...]}` to the channel's webhook. A request that is not the
documented JSON is refused whole with a 400 naming the problem (`reject`), so the developer
sees their mistake at once and nothing half-valid is stored. Out: Parley POSTs one message to the
app's `outbound_url`; the app answers 2xx and reports delivered and read later as status events.

Credentials: secret (empty: the channel's generated verify token). Settings: outbound_url, and
allow_private_media_urls for an app whose files live on a private network.
"""

import base64
import hmac
import json
import math
import mimetypes
import re
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.http import HttpResponse, JsonResponse

from apps.connectors.base import (
    HTTP_TIMEOUT,
    Connector,
    ErrorClass,
    InboundMessage,
    MediaFile,
    OutboundMessage,
    ParseError,
    ProviderError,
    SendResult,
    StatusUpdate,
    network_error,
    read_capped,
)
from apps.connectors.replay import WebhookRefused, first_delivery, forget_delivery, replayed
from apps.connectors.services import webhook_signature
from apps.contacts.services import normalise_phone
from apps.core import netguard
from apps.core.exceptions import DomainError

MB = 1024 * 1024
SIGNATURE_HEADER = "X-Parley-Signature"
DELIVERY_HEADER = "X-Parley-Delivery"
# Stripe's default tolerance: a captured request cannot be replayed five minutes later, and an
# app server's clock is rarely that far off.
TOLERANCE_SECONDS = 300
REPLAY_SCHEME = "custom"  # the signed requests seen, apps/connectors/replay.py
CANONICAL_UNIX_TIME = re.compile(r"[1-9]\d{0,11}")
MAX_EVENTS = 100
MAX_TEXT = 4096
MAX_ID = 128
MAX_NAME = 120
MAX_TITLE = 256
MAX_ATTACHMENTS = 10
RECEIPT_STATES = ("delivered", "read", "failed")
LOCATION_FIELDS = ("latitude", "longitude", "name", "address")
# The ids Parley gives its own messages (the message_uuid of an outbound delivery). An app
# message with such an id would be taken for a duplicate of ours and dropped, so it is refused.
PARLEY_ID_PREFIX = "parley-"
# Unix seconds beyond this are a millisecond timestamp by mistake (this is the year 5138).
LATEST_UNIX_SECONDS = 10**11


def _secret(channel) -> str:
    return (channel.credentials or {}).get("secret") or channel.verify_token


def _when(value) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC) if value is not None else datetime.now(tz=UTC)


class CustomConnector(Connector):
    kind = "custom"
    reply_window_hours = None  # the shop's own app: operators may always answer
    # An app that only shows text still gets a numbered list (`fallback_text`), and a bare "2"
    # comes back as the second option.
    numbered_menus = True
    # Files go out inline as base64 in the JSON body (a third larger on the wire).
    size_limits = {"image": 10 * MB, "video": 16 * MB, "audio": 16 * MB, "document": 16 * MB}

    # Requests -----------------------------------------------------------------------------

    def verify(self, channel, raw_body: bytes, headers, query=None) -> bool:
        """Signed with the channel's secret at a moment within five minutes of now, and not seen
        before; raises WebhookRefused for a stale or replayed request."""
        timestamp, signatures = _signature_parts(headers.get(SIGNATURE_HEADER, ""))
        secret = _secret(channel)
        if timestamp is None or not secret:
            return False
        expected = webhook_signature(secret, timestamp, raw_body).partition(",v1=")[2]
        # Several v1 values are allowed (as Stripe does), so an app can sign with an old and a
        # new secret while the channel's secret is being changed.
        if not any(hmac.compare_digest(expected, signature) for signature in signatures):
            return False
        if abs(time.time() - timestamp) > TOLERANCE_SECONDS:
            raise WebhookRefused(
                "bad_signature",
                f"The signature's t={timestamp} is more than {TOLERANCE_SECONDS} seconds away from Parley's clock "
                f"({int(time.time())}): sign each request when you send it, with a clock set by NTP.",
            )
        # The same t and body signed again is the same request: a captured one sent again within
        # the window. Remembered until its t can no longer pass the window.
        if not first_delivery(channel, REPLAY_SCHEME, f"{timestamp}:{expected}", seconds=2 * TOLERANCE_SECONDS):
            raise replayed(
                "This very request (same t and body) was received already and stored the first time. "
                "To send again, sign it afresh; a message id sent twice is kept once."
            )
        return True

    def forget(self, channel, raw_body: bytes, headers, query=None) -> None:
        timestamp, _ = _signature_parts(headers.get(SIGNATURE_HEADER, ""))
        if timestamp is not None and _secret(channel):
            expected = webhook_signature(_secret(channel), timestamp, raw_body).partition(",v1=")[2]
            forget_delivery(channel, REPLAY_SCHEME, f"{timestamp}:{expected}")

    def reject(self, channel, raw_body: bytes, headers) -> str | None:
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return f"Send the body as Content-Type: application/json (this request said {content_type or 'nothing'})."
        try:
            _events(raw_body)
        except ParseError as problem:
            return str(problem)
        return None

    def acknowledge(self, channel=None, raw_body: bytes = b"") -> HttpResponse:
        return JsonResponse({"ok": True})  # what we ask of the app, answered in kind

    # Parsing ------------------------------------------------------------------------------

    def parse(self, channel, raw_body: bytes, headers=None) -> list:
        return [_message(e) if e["type"] == "message" else _status(e) for e in _events(raw_body)]

    # Sending ------------------------------------------------------------------------------

    def activate(self, channel) -> None:
        """Nothing to register with an app; but a channel that cannot send should say so now,
        not at the first operator reply."""
        _outbound_url(channel)

    def send(self, channel, message: OutboundMessage) -> SendResult:
        url = _outbound_url(channel)
        delivery_id = message.context.get("message_uuid") or f"{PARLEY_ID_PREFIX}{uuid.uuid4().hex}"
        raw = json.dumps(self.body_for(message, delivery_id), separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Parley",
            SIGNATURE_HEADER: webhook_signature(_secret(channel), int(time.time()), raw),
            # The same on every retry of this message: the app answers a repeat with 2xx and
            # shows it once.
            DELIVERY_HEADER: delivery_id,
        }
        try:
            response = netguard.post(url, content=raw, headers=headers, timeout=HTTP_TIMEOUT)
        except netguard.OutboundBlocked as error:
            raise ProviderError(ErrorClass.CREDENTIALS, "private_url", f"outbound_url refused: {error}") from error
        except httpx.HTTPError as error:
            raise network_error(error) from error
        if not response.is_success:
            raise _send_error(response)
        return SendResult(provider_id=delivery_id)

    def body_for(self, message: OutboundMessage, delivery_id: str) -> dict:
        body = {"id": delivery_id, "recipient": {"id": message.recipient_id}, "text": message.text}
        if message.reply_to_provider_id:
            body["reply_to"] = message.reply_to_provider_id
        if message.kind in ("text", "template"):  # a template is its rendered text here
            return {**body, "type": "text"}
        if message.kind == "media":
            return {**body, "type": "media", "attachment": _attachment(message.media or {})}
        if message.kind == "interactive":
            return {**body, "type": "interactive", **_menu(message)}
        if message.kind == "location":
            location = {name: message.payload[name] for name in LOCATION_FIELDS if name in message.payload}
            return {**body, "type": "location", "location": location}
        raise ProviderError(ErrorClass.FATAL, "unsupported_kind", f"The custom channel cannot send {message.kind}.")

    # Media --------------------------------------------------------------------------------

    def fetch_media(self, channel, media: dict, max_bytes: int) -> MediaFile:
        """The media id is the URL the app gave; the file is downloaded from there, unsigned."""
        url = media["id"]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProviderError(ErrorClass.FATAL, "bad_url", f"{url!r} is not an http(s) URL.")
        # A file URL comes from outside and its content is shown in the inbox: Parley fetches no
        # private address for anyone (netguard), unless the channel says its app keeps files on
        # a private network.
        private = bool((channel.settings or {}).get("allow_private_media_urls"))
        try:
            # No redirects: the app gives the file's own address.
            with netguard.stream("GET", url, timeout=HTTP_TIMEOUT, allow_private=private) as response:
                _check_download(response, url)
                content = read_capped(response, max_bytes)
                served_as = response.headers.get("Content-Type", "").split(";")[0].strip()
        except netguard.OutboundBlocked as error:
            detail = f"{error} Set allow_private_media_urls on the channel to fetch from a private network."
            raise ProviderError(ErrorClass.FATAL, "private_url", detail) from error
        except httpx.HTTPError as error:
            raise network_error(error) from error
        mime_type = media.get("mime_type") or served_as or "application/octet-stream"
        return MediaFile(content=content, mime_type=mime_type, filename=media.get("filename") or "")


# The signature ----------------------------------------------------------------------------------


def _signature_parts(header: str) -> tuple[int | None, list[str]]:
    """`t=<unix>,v1=<hex>[,v1=<hex>…]` → (t, [hex…]); other schemes are ignored."""
    timestamp, signatures = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and CANONICAL_UNIX_TIME.fullmatch(value):
            timestamp = int(value)
        elif name == "v1" and value:
            signatures.append(value)
    return timestamp, signatures


# The inbound document: checked whole at the door, then parsed without surprises ---------------


def _events(raw: bytes) -> list[dict]:
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:  # a deep nesting is a RecursionError
        raise ParseError(f"The body is not JSON: {error}.") from error
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise ParseError('The body must be a JSON object with an "events" list.')
    events = body["events"]
    if not 1 <= len(events) <= MAX_EVENTS:
        raise ParseError(f'"events" must hold 1 to {MAX_EVENTS} events; it holds {len(events)}.')
    for index, event in enumerate(events):
        _check_event(f"events[{index}]", event)
    return events


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _check_event(where: str, event) -> None:
    if not isinstance(event, dict):
        raise ParseError(f"{where} must be an object.")
    if "type" not in event:
        raise ParseError(f'{where} has no "type" ("message" or "status").')
    # Not stored as "unsupported" as a provider's new type would be: the app's developer
    # reads this answer and can fix the request, which they could not for a stored one.
    if event["type"] not in ("message", "status"):
        raise ParseError(f'{where}.type must be "message" or "status", not {event["type"]!r}.')
    if "id" not in event:
        raise ParseError(f'{where} has no "id".')
    _check_string(f"{where}.id", event["id"], limit=MAX_ID)
    if event.get("timestamp") is not None:
        _check_timestamp(f"{where}.timestamp", event["timestamp"])
    if event["type"] == "message":
        _check_message(where, event)
    else:
        _check_status(where, event)


def _check_string(where: str, value, *, limit: int, required: bool = True) -> None:
    if not isinstance(value, str):
        raise ParseError(f"{where} must be a string, not {type(value).__name__}.")
    if required and not value.strip():
        raise ParseError(f"{where} is empty.")
    if len(value) > limit:
        raise ParseError(f"{where} has {len(value)} characters; at most {limit} are allowed.")


def _check_timestamp(where: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ParseError(f"{where} must be Unix time in seconds, a positive number.")
    if value >= LATEST_UNIX_SECONDS:
        raise ParseError(f"{where} must be Unix time in seconds; {value} looks like milliseconds.")


def _check_message(where: str, event: dict) -> None:
    if event["id"].startswith(PARLEY_ID_PREFIX):
        raise ParseError(f"{where}.id must not start with {PARLEY_ID_PREFIX!r}: such ids are Parley's own.")
    _check_sender(f"{where}.sender", event.get("sender"))
    if event.get("reply_to") is not None:
        _check_string(f"{where}.reply_to", event["reply_to"], limit=191)
    text, attachments = event.get("text"), event.get("attachments")
    if text is not None:
        _check_string(f"{where}.text", text, limit=MAX_TEXT, required=False)
    if attachments is not None:
        _check_attachments(f"{where}.attachments", attachments)
    if event.get("choice") is not None:
        _check_choice(f"{where}.choice", event["choice"])
    if event.get("location") is not None:
        _check_location(f"{where}.location", event["location"])
    shown = [name for name in ("choice", "location") if event.get(name) is not None]
    if (text or "").strip() or attachments:
        shown.append("text or attachments")
    if not shown:
        raise ParseError(f"{where} has nothing to show: give text, attachments, a choice or a location.")
    if len(shown) > 1:
        raise ParseError(f"{where} mixes {' and '.join(shown)}; send them as separate messages.")


def _check_sender(where: str, sender) -> None:
    if not isinstance(sender, dict) or "id" not in sender:
        raise ParseError(f"{where}.id is missing: every message names its sender.")
    _check_string(f"{where}.id", sender["id"], limit=MAX_ID)
    if sender.get("name") is not None:
        _check_string(f"{where}.name", sender["name"], limit=MAX_NAME, required=False)
    if sender.get("phone"):
        _check_string(f"{where}.phone", sender["phone"], limit=32)
        try:
            normalise_phone(sender["phone"])
        except DomainError:
            raise ParseError(
                f"{where}.phone {sender['phone']!r} is not a phone number in international form (+<country><number>)."
            ) from None
    if sender.get("email"):
        _check_string(f"{where}.email", sender["email"], limit=254)
        try:
            validate_email(sender["email"])
        except ValidationError:
            raise ParseError(f"{where}.email {sender['email']!r} is not an email address.") from None


def _check_attachments(where: str, attachments) -> None:
    if not isinstance(attachments, list) or len(attachments) > MAX_ATTACHMENTS:
        raise ParseError(f"{where} must be a list of at most {MAX_ATTACHMENTS} files.")
    for index, attachment in enumerate(attachments):
        here = f"{where}[{index}]"
        if not isinstance(attachment, dict) or "url" not in attachment:
            raise ParseError(f"{here}.url is missing: Parley downloads each file from its URL.")
        _check_url(f"{here}.url", attachment["url"])
        for name in ("mime_type", "filename"):
            if attachment.get(name) is not None:
                _check_string(f"{here}.{name}", attachment[name], limit=255, required=False)
        mime_type = attachment.get("mime_type")
        if mime_type and not re.fullmatch(r"[\w.+-]+/[\w.+-]+", mime_type):
            raise ParseError(f"{here}.mime_type {mime_type!r} is not a type/subtype such as image/jpeg.")


def _check_url(where: str, url) -> None:
    from apps.conversations.models import Attachment  # the media id is the URL: it must fit there

    limit = Attachment._meta.get_field("provider_media_id").max_length
    _check_string(where, url, limit=limit)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ParseError(f"{where} {url!r} is not an http(s) URL.")


def _check_choice(where: str, choice) -> None:
    if not isinstance(choice, dict) or "id" not in choice or "title" not in choice:
        raise ParseError(f"{where} must be an object with the chosen option's id and title.")
    _check_string(f"{where}.id", choice["id"], limit=MAX_TITLE)
    _check_string(f"{where}.title", choice["title"], limit=MAX_TITLE)


def _check_location(where: str, location) -> None:
    if not isinstance(location, dict):
        raise ParseError(f"{where} must be an object with latitude and longitude.")
    for name, bound in (("latitude", 90), ("longitude", 180)):
        value = location.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not -bound <= value <= bound:
            raise ParseError(f"{where}.{name} must be a number from -{bound} to {bound}.")
    for name in ("name", "address"):
        if location.get(name) is not None:
            _check_string(f"{where}.{name}", location[name], limit=MAX_TITLE, required=False)


def _check_status(where: str, event: dict) -> None:
    if event.get("state") not in RECEIPT_STATES:
        raise ParseError(f"{where}.state must be one of {', '.join(RECEIPT_STATES)}, not {event.get('state')!r}.")
    error = event.get("error")
    if error is None:
        return
    if not isinstance(error, dict):
        raise ParseError(f"{where}.error must be an object with code and reason.")
    if error.get("code") is not None and not isinstance(error["code"], str | int):
        raise ParseError(f"{where}.error.code must be a string.")
    if error.get("reason") is not None:
        _check_string(f"{where}.error.reason", error["reason"], limit=1000, required=False)


def _message(event: dict) -> InboundMessage:
    sender = event["sender"]
    common = {
        "provider_id": event["id"],
        "sender_id": sender["id"],
        "sender_name": (sender.get("name") or "").strip(),
        "sender_phone": sender.get("phone") or "",
        "sender_email": sender.get("email") or "",
        "timestamp": _when(event.get("timestamp")),
        "reply_to_provider_id": event.get("reply_to") or "",
    }
    if event.get("choice") is not None:
        choice = event["choice"]
        payload = {"reply_id": choice["id"], "title": choice["title"], "type": "choice"}
        return InboundMessage(kind="interactive", text=choice["title"], payload=payload, **common)
    if event.get("location") is not None:
        location = event["location"]
        text = location.get("name") or location.get("address") or ""
        return InboundMessage(kind="location", text=text, payload=location, **common)
    text = event.get("text") or ""
    files = [_media(attachment, text) for attachment in event.get("attachments") or []]
    if files:
        return InboundMessage(kind="media", text=text, media=files[0], extra_media=tuple(files[1:]), **common)
    return InboundMessage(kind="text", text=text, **common)


def _media(attachment: dict, caption: str) -> dict:
    url = attachment["url"]
    filename = attachment.get("filename") or urlsplit(url).path.rsplit("/", 1)[-1]
    mime_type = attachment.get("mime_type") or mimetypes.guess_type(filename)[0] or ""
    return {"id": url, "mime_type": mime_type, "filename": filename, "caption": caption}


def _status(event: dict) -> StatusUpdate:
    error = event.get("error") or {}
    return StatusUpdate(
        provider_id=event["id"],
        state=event["state"],
        timestamp=_when(event.get("timestamp")),
        error_code=str(error.get("code") or ""),
        error_reason=error.get("reason") or "",
    )


# Outbound helpers -------------------------------------------------------------------------------


def _outbound_url(channel) -> str:
    url = (channel.settings or {}).get("outbound_url") or ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderError(
            ErrorClass.CREDENTIALS,
            "no_outbound_url",
            "The channel has no outbound_url (settings): the http(s) address of your app that receives "
            "Parley's messages.",
        )
    if problem := netguard.url_problem(url):
        raise ProviderError(ErrorClass.CREDENTIALS, "private_url", f"outbound_url refused: {problem}")
    return url


def _attachment(media: dict) -> dict:
    described = {"filename": media.get("filename", ""), "mime_type": media.get("mime_type", "")}
    if media.get("content") is not None:
        return {**described, "content_base64": base64.b64encode(media["content"]).decode("ascii")}
    if media.get("url"):
        return {**described, "url": media["url"]}
    raise ProviderError(ErrorClass.FATAL, "no_file", "The message has no file to send.")


def _menu(message: OutboundMessage) -> dict:
    options = [
        {"id": o["id"], "title": o["title"], **({"description": o["description"]} if o.get("description") else {})}
        for o in message.payload.get("options", [])
    ]
    lines = [message.text, *(f"{number}. {o['title']}" for number, o in enumerate(options, start=1))]
    menu = {"options": options, "fallback_text": "\n".join(line for line in lines if line)}
    if message.payload.get("button"):
        menu["button"] = message.payload["button"]
    return menu


def _send_error(response: httpx.Response) -> ProviderError:
    status = response.status_code
    if status == 429 or status >= 500:
        error_class, default = ErrorClass.RETRY, "The app is busy or down; Parley tries again."
    elif status == 410:
        error_class, default = ErrorClass.STOP_RECIPIENT, "The app says this customer can no longer be reached."
    elif status in (401, 403):
        error_class, default = ErrorClass.CREDENTIALS, "The app refused Parley's signature: compare the secrets."
    else:
        error_class, default = ErrorClass.FATAL, f"The app refused the message ({status})."
    detail = _app_detail(response) or default
    return ProviderError(error_class, str(status), detail, retry_after=_retry_after(response))


def _app_detail(response: httpx.Response) -> str:
    """The app's own words: `detail` (or `message`, `error`) of a JSON answer, else the start
    of its body."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        words = [data.get(name) for name in ("detail", "message", "error")]
        return next((w[:500] for w in words if isinstance(w, str) and w.strip()), "")
    return response.text.strip()[:300]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None  # an HTTP date, or nothing: Parley's own backoff decides
    return min(max(seconds, 0.0), 3600.0) if math.isfinite(seconds) else None


# Media helpers ----------------------------------------------------------------------------------


def _check_download(response: httpx.Response, url: str) -> None:
    status = response.status_code
    if not response.is_success:
        error_class = ErrorClass.RETRY if status == 429 or status >= 500 else ErrorClass.FATAL
        raise ProviderError(error_class, str(status), f"{url} answered {status}.")
