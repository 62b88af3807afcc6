"""The simulated Messenger Platform (Facebook Messenger and Instagram Direct): the Send API
Parley's connector calls, the signed page webhooks Meta would send back, and the customer's side.

Registration (`POST /_simulator/channels`): `{kind: messenger|instagram, page_id, page_access_token,
app_secret, verify_token?, webhook_url?, name?}`; for Instagram `page_id` is the Instagram
professional account's id.

Send API: `POST /{page_id}/messages` (the `/v21.0` prefix is optional), bearer token or
`access_token` in the query; JSON, or multipart with `recipient`, `message` (JSON strings) and a
`filedata` file. Answers as Meta does: 401 code 190 for a wrong token; 400 code 100 naming the
problem for a bad body (≤ 13 quick replies, title ≤ 20, payload ≤ 1000, text ≤ 2000 / 1000 bytes);
400 code 100 subcode 2018001 for a person who never wrote to the page; 400 code 10 subcode
2018278 outside the window (24 h after the customer's last message, 7 days with `MESSAGE_TAG` +
`HUMAN_AGENT`). Success: `{recipient_id, message_id}`, then (Messenger only: Instagram has no
delivery receipts) a `delivery` webhook with the mid and a watermark.

Control verbs: those of chat.ChatProvider, and `POST /_simulator/window {kind, channel, user,
hours_ago}` to move the customer's last message back in time (null forgets it). Customer events
(`POST /_simulator/inbound`): `type` text (`text`, `reply_to?`), choice (a quick-reply tap,
`choice: {id, title}`), postback (`choice: {id, title}`), image | video | audio | file (a sample
file served by the simulator), location (`latitude, longitude, name?`), reaction (`reply_to`:
the mid of a Parley message, `emoji`); Instagram also story_mention, share and ig_reel.
`POST /_simulator/read` sends Messenger's read watermark (Instagram's `read.mid`).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from email import policy as email_policy
from email.parser import BytesParser
from typing import Any, ClassVar
from urllib.parse import urlencode

from .chat import ChatProvider
from .core import ControlError, Request, Response, assert_loopback, http_call, in_background, json_response, route

WEBHOOK_HEADERS = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}
MESSAGING_TYPES = ("RESPONSE", "UPDATE", "MESSAGE_TAG")
ATTACHMENT_TYPES = ("image", "video", "audio", "file")
HUMAN_AGENT_HOURS = 7 * 24
WINDOW_MESSAGE = (
    "(#10) This message is sent outside of allowed window. Learn more about the new policy here: "
    "https://developers.facebook.com/docs/messenger-platform/policy-overview"
)
# Which built-in sample stands for each attachment a customer may send.
SAMPLES = {
    "image": "image",
    "video": "video",
    "audio": "audio",
    "file": "document",
    "story_mention": "image",
    "share": "image",
    "ig_reel": "video",
}

_sequence = itertools.count(1)


class GraphError(Exception):
    """A Send API refusal, rendered as Meta's error body."""

    def __init__(self, code: int, message: str, *, subcode: int | None = None, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.subcode, self.status = code, message, subcode, status

    def response(self) -> Response:
        error: dict[str, Any] = {"message": self.message, "type": "OAuthException", "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["fbtrace_id"] = "A" + secrets.token_urlsafe(16)
        return json_response({"error": error}, self.status)


def invalid(problem: str) -> GraphError:
    return GraphError(100, f"(#100) {problem}")


def now_ms() -> int:
    return int(time.time() * 1000)


def new_mid() -> str:
    # Real mids are long opaque strings starting "m_"; letters and digits keep tests simple.
    return f"m_{next(_sequence)}{secrets.token_hex(20)}"


def wire_bytes(payload: Any) -> bytes:
    """Serialised like Meta: compact, non-ASCII as \\uXXXX and "/" escaped, so a connector that
    re-serialises before checking the signature fails here as it would in production."""
    return json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()


def signature_headers(app_secret: str, raw: bytes) -> dict[str, str]:
    secret = app_secret.encode()
    return {
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest(),
        "X-Hub-Signature": "sha1=" + hmac.new(secret, raw, hashlib.sha1).hexdigest(),
    }


class Messenger(ChatProvider):
    kind = "messenger"
    key_field = "page_id"
    required_fields = ("page_access_token", "app_secret")
    window_hours = 24
    read_receipts = True
    webhook_object: ClassVar[str] = "page"
    delivery_receipts: ClassVar[bool] = True
    text_limit: ClassVar[int] = 2000
    text_limit_unit: ClassVar[str] = "characters"
    customer_attachments: ClassVar[tuple[str, ...]] = ATTACHMENT_TYPES

    # Registration and routes -------------------------------------------------------------------

    def register_channel(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("webhook_url"):
            assert_loopback(str(body["webhook_url"]))
        return super().register_channel(body)

    def api_routes(self):
        return [*super().api_routes(), route("POST", r"/(?P<page_id>[^/_][^/]*)/messages", self._send)]

    # Send API ------------------------------------------------------------------------------------

    def _send(self, request: Request, page_id: str) -> Response | None:
        channel = self.channel(page_id)
        if channel is None:
            return None  # another provider's Graph object (WhatsApp shares this path)
        fault = self.take_fault(page_id)
        if fault is not None:
            self.record_out(page_id, "", request, fault.status, errors=[_loggable(fault.body)])
            return fault
        try:
            self._check_token(request, channel)
            send = self._read_send(request)
            self._check_window(page_id, send)
        except GraphError as error:
            self.record_out(page_id, _recipient_of(request), request, error.status, errors=[error.message])
            return error.response()
        return self._accept(channel, request, send)

    def _check_token(self, request: Request, channel: dict[str, Any]) -> None:
        token = request.bearer_token or request.query.get("access_token") or ""
        if not hmac.compare_digest(token, str(channel["page_access_token"])):
            raise GraphError(190, "Invalid OAuth access token - Cannot parse access token", status=401)

    def _read_send(self, request: Request) -> dict[str, Any]:
        """The send call's fields, whether it came as JSON or as Meta's multipart upload."""
        fields, upload = _form(request) if _is_multipart(request) else (_json_fields(request), None)
        recipient = str((fields.get("recipient") or {}).get("id") or "")
        if not recipient:
            raise invalid("param recipient[id] must be non-empty.")
        message = fields.get("message")
        if not isinstance(message, dict):
            raise invalid("param message must be an object.")
        send = {
            "recipient": recipient,
            "messaging_type": fields.get("messaging_type") or "",
            "tag": fields.get("tag") or "",
            "reply_to": str((fields.get("reply_to") or {}).get("mid") or ""),
            "message": message,
            "upload": upload,
        }
        self._check_message(send)
        return send

    def _check_message(self, send: dict[str, Any]) -> None:
        if send["messaging_type"] not in MESSAGING_TYPES:
            raise invalid(f"param messaging_type must be one of {', '.join(MESSAGING_TYPES)}.")
        if send["messaging_type"] == "MESSAGE_TAG" and send["tag"] != "HUMAN_AGENT":
            raise invalid("param tag must be HUMAN_AGENT (the other tags were retired).")
        message = send["message"]
        if bool(message.get("text")) == bool(message.get("attachment")):
            raise invalid("message must have exactly one of text or attachment.")
        if message.get("text"):
            self._check_text(str(message["text"]))
        else:
            _check_attachment(message["attachment"], send["upload"])
        _check_quick_replies(message.get("quick_replies"))

    def _check_text(self, text: str) -> None:
        length = len(text.encode()) if self.text_limit_unit == "bytes" else len(text)
        if length > self.text_limit:
            raise invalid(f"param message[text] must be at most {self.text_limit} {self.text_limit_unit}.")

    def _check_window(self, page_id: str, send: dict[str, Any]) -> None:
        with self.lock:
            last = self.last_inbound.get((page_id, send["recipient"]))
        if last is None:
            raise GraphError(100, "(#100) No matching user found", subcode=2018001)
        hours = HUMAN_AGENT_HOURS if send["tag"] == "HUMAN_AGENT" else self.window_hours
        if time.time() - last >= hours * 3600:
            raise GraphError(10, WINDOW_MESSAGE, subcode=2018278)

    def _accept(self, channel: dict[str, Any], request: Request, send: dict[str, Any]) -> Response:
        mid = new_mid()
        message = send["message"]
        media = self._sent_media(message.get("attachment"), send["upload"])
        record = self.record_out(
            channel["id"],
            send["recipient"],
            request,
            200,
            id=mid,
            type=media["type"] if media else "text",
            text=str(message.get("text") or ""),
            replies=[
                {"id": r.get("payload", ""), "title": r.get("title", "")} for r in message.get("quick_replies") or []
            ],
            media=media,
            reply_to=send["reply_to"],
            messaging_type=send["messaging_type"],
            tag=send["tag"],
        )
        answer = {"recipient_id": send["recipient"], "message_id": mid}
        if media and media.get("attachment_id"):
            answer["attachment_id"] = media["attachment_id"]
        response = json_response(answer)
        if self.delivery_receipts and channel.get("webhook_url"):
            response.after.append(lambda: in_background(self._deliver_receipt, channel, record))
        return response

    def _sent_media(self, attachment: dict[str, Any] | None, upload: tuple[bytes, str, str] | None) -> dict | None:
        """What the customer's page shows for an attachment: the uploaded file, served here, or
        the URL Parley gave (the simulator does not fetch it)."""
        if not attachment:
            return None
        payload = attachment.get("payload") or {}
        media: dict[str, Any] = {"type": attachment["type"], "url": payload.get("url", "")}
        if upload is not None:
            media_id = self.store_media(*upload)
            media.update(url=self.media_url(media_id), mime_type=upload[1], filename=upload[2])
        if payload.get("is_reusable"):
            media["attachment_id"] = str(10**15 + next(_sequence))
        return media

    def _deliver_receipt(self, channel: dict[str, Any], record: dict[str, Any]) -> None:
        """Messenger's `message_deliveries`: the mids delivered and a watermark."""
        moment = now_ms()
        item = self._item(channel, record["user"], delivery={"mids": [record["id"]], "watermark": moment})
        url, raw, headers = self._signed(channel, item)
        delivery = self.post_webhook(channel, url, raw, headers, what="delivery")
        if delivery.ok:
            with self.lock:
                if record["state"] == "sent":
                    record["state"] = "delivered"

    # The customer's side -------------------------------------------------------------------------

    def customer_event(self, channel: dict[str, Any], user: str, body: dict[str, Any]) -> dict[str, Any]:
        """The neutral record of what the customer did, with its webhook item as `wire`."""
        return {**self._customer_record(str(body.get("type") or "text"), body), "user": user}

    def _customer_record(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        mid = new_mid()
        if kind == "text":
            text = str(body.get("text") or "")
            message = {"mid": mid, "text": text, **_reply_to(body)}
            return {
                "id": mid,
                "type": "text",
                "text": text,
                "reply_to": body.get("reply_to"),
                "wire": {"message": message},
            }
        if kind in ("choice", "postback"):
            return self._choice(kind, mid, body)
        if kind in self.customer_attachments or kind == "document":
            return self._attachment("file" if kind == "document" else kind, mid)
        if kind == "location":
            return self._location(mid, body)
        if kind == "reaction":
            return self._reaction(body)
        raise ControlError(f"{self.kind} customers cannot send {kind!r}")

    def _choice(self, kind: str, mid: str, body: dict[str, Any]) -> dict[str, Any]:
        choice = body.get("choice") or {}
        if not choice.get("id"):
            raise ControlError("choice {id, title} is required")
        title, payload = str(choice.get("title") or choice["id"]), str(choice["id"])
        if kind == "postback":
            wire = {"postback": {"title": title, "payload": payload, "mid": mid}}
        else:  # a quick reply tap posts its title as the customer's message
            wire = {"message": {"mid": mid, "text": title, "quick_reply": {"payload": payload}}}
        return {"id": mid, "type": kind, "text": title, "wire": wire}

    def _attachment(self, kind: str, mid: str) -> dict[str, Any]:
        media_id, _, mime_type, filename = self.sample_media(SAMPLES[kind])
        url = self.media_url(media_id)
        message = {"mid": mid, "attachments": [{"type": kind, "payload": {"url": url}}]}
        media = {"type": kind, "url": url, "mime_type": mime_type, "filename": filename}
        return {"id": mid, "type": kind, "media": media, "wire": {"message": message}}

    def _location(self, mid: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            lat, long = float(body["latitude"]), float(body["longitude"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ControlError("location needs numeric latitude and longitude") from exc
        name = str(body.get("name") or "Pinned location")
        attachment = {"type": "location", "title": name, "payload": {"coordinates": {"lat": lat, "long": long}}}
        return {
            "id": mid,
            "type": "location",
            "text": name,
            "wire": {"message": {"mid": mid, "attachments": [attachment]}},
        }

    def _reaction(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("reply_to"):
            raise ControlError("reply_to (the mid reacted to) is required")
        emoji = str(body.get("emoji") or "❤️")
        reaction = {
            "mid": str(body["reply_to"]),
            "action": "react",
            "emoji": emoji,
            "reaction": "love" if "❤" in emoji else "other",
        }
        return {"id": f"reaction-{next(_sequence)}", "type": "reaction", "text": emoji, "wire": {"reaction": reaction}}

    def webhook(self, channel: dict[str, Any], record: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
        return self._signed(channel, self._item(channel, record["user"], **record["wire"]))

    def read(self, channel: dict[str, Any], user: str) -> tuple[str, bytes, dict[str, str]] | None:
        """Messenger's `message_reads`: everything sent up to this moment was read."""
        if not channel.get("webhook_url"):
            return None
        return self._signed(channel, self._item(channel, user, read={"watermark": now_ms()}))

    def handshake(self, channel: dict[str, Any]) -> dict[str, Any]:
        """The subscription check Meta makes when the webhook is configured."""
        url = self._webhook_url(channel)
        challenge = secrets.token_hex(8)
        query = {
            "hub.mode": "subscribe",
            "hub.verify_token": channel.get("verify_token", ""),
            "hub.challenge": challenge,
        }
        status, answer = http_call("GET", f"{url}?{urlencode(query)}", timeout=self.policy.timeout)
        body = answer.decode("utf-8", "replace")
        return {"status": status, "ok": status == 200 and body == challenge, "body": body}

    def sign(self, channel: dict[str, Any], raw: bytes, mode: str) -> tuple[str, dict[str, str]]:
        secrets_by_mode = {"good": channel["app_secret"], "bad": channel["app_secret"] + "-not-the-secret"}
        if mode == "none":
            return self._webhook_url(channel), dict(WEBHOOK_HEADERS)
        if mode not in secrets_by_mode:
            raise ControlError("signature must be good, bad or none")
        return self._webhook_url(channel), {**WEBHOOK_HEADERS, **signature_headers(secrets_by_mode[mode], raw)}

    # Helpers -------------------------------------------------------------------------------------

    def _item(self, channel: dict[str, Any], user: str, **event: Any) -> dict[str, Any]:
        return {"sender": {"id": user}, "recipient": {"id": channel["id"]}, "timestamp": now_ms(), **event}

    def _signed(self, channel: dict[str, Any], item: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
        envelope = {
            "object": self.webhook_object,
            "entry": [{"id": channel["id"], "time": now_ms(), "messaging": [item]}],
        }
        raw = wire_bytes(envelope)
        return self._webhook_url(channel), raw, {**WEBHOOK_HEADERS, **signature_headers(channel["app_secret"], raw)}

    def _webhook_url(self, channel: dict[str, Any]) -> str:
        if not channel.get("webhook_url"):
            raise ControlError(f"{self.kind} channel {channel['id']} has no webhook_url", 409)
        return str(channel["webhook_url"])


class Instagram(Messenger):
    """Instagram Direct on the same platform: its own webhook object, smaller limits, no
    delivery receipts, and `messaging_seen` naming the last message seen."""

    kind = "instagram"
    webhook_object = "instagram"
    delivery_receipts = False
    text_limit = 1000
    text_limit_unit = "bytes"
    customer_attachments = (*ATTACHMENT_TYPES, "story_mention", "share", "ig_reel")

    def read(self, channel: dict[str, Any], user: str) -> tuple[str, bytes, dict[str, str]] | None:
        if not channel.get("webhook_url"):
            return None
        with self.lock:
            sent = [r for r in self.threads.get((channel["id"], user), []) if r["direction"] == "out"]
        if not sent:
            return None
        return self._signed(channel, self._item(channel, user, read={"mid": sent[-1]["id"]}))


# Request bodies ----------------------------------------------------------------------------------


def _is_multipart(request: Request) -> bool:
    return (request.header("Content-Type") or "").startswith("multipart/form-data")


def _json_fields(request: Request) -> dict[str, Any]:
    try:
        body = request.json_body
    except ControlError as exc:
        raise invalid("the request body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object.")
    return body


def _form(request: Request) -> tuple[dict[str, Any], tuple[bytes, str, str] | None]:
    """Meta's upload-and-send: JSON-valued form fields and the file as `filedata`."""
    head = f"Content-Type: {request.header('Content-Type')}\r\n\r\n".encode()
    parsed = BytesParser(policy=email_policy.HTTP).parsebytes(head + request.body)
    if not parsed.is_multipart():
        raise invalid("could not parse the multipart body.")
    fields: dict[str, Any] = {}
    upload = None
    for part in parsed.iter_parts():
        name = str(part.get_param("name", header="content-disposition") or "")
        data = part.get_payload(decode=True) or b""
        if name == "filedata":
            upload = (data, part.get_content_type(), part.get_filename() or "file")
            continue
        text = data.decode("utf-8", "replace")
        try:
            fields[name] = json.loads(text) if text[:1] in "{[" and text else text
        except ValueError as exc:
            raise invalid(f"param {name} is not valid JSON.") from exc
    return fields, upload


def _check_attachment(attachment: Any, upload: tuple[bytes, str, str] | None) -> None:
    if not isinstance(attachment, dict) or attachment.get("type") not in ATTACHMENT_TYPES:
        raise invalid(f"param message[attachment][type] must be one of {', '.join(ATTACHMENT_TYPES)}.")
    payload = attachment.get("payload") or {}
    if upload is None and not (payload.get("url") or payload.get("attachment_id")):
        raise invalid("an attachment needs payload.url, payload.attachment_id or an uploaded filedata.")


def _check_quick_replies(replies: Any) -> None:
    """Messenger Platform, "Quick Replies": at most 13; a text reply needs a title of at most 20
    characters and a payload of at most 1000."""
    if replies is None:
        return
    if not isinstance(replies, list) or len(replies) > 13:
        raise invalid("param message[quick_replies] must be an array of at most 13 elements.")
    for reply in replies:
        if not isinstance(reply, dict) or reply.get("content_type") != "text":
            raise invalid("quick_replies[][content_type] must be text.")
        if not 0 < len(str(reply.get("title") or "")) <= 20:
            raise invalid("quick_replies[][title] must be 1 to 20 characters.")
        if not 0 < len(str(reply.get("payload") or "")) <= 1000:
            raise invalid("quick_replies[][payload] must be 1 to 1000 characters.")


def _reply_to(body: dict[str, Any]) -> dict[str, Any]:
    return {"reply_to": {"mid": str(body["reply_to"])}} if body.get("reply_to") else {}


def _recipient_of(request: Request) -> str:
    try:
        body = request.json_body
    except ControlError:
        return ""
    return str(((body or {}).get("recipient") or {}).get("id") or "") if isinstance(body, dict) else ""


def _loggable(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
