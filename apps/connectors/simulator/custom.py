"""The far side of Parley's custom channel: the backend of a shop's own app, written as the
channel's documentation (docs/channels/custom.md) asks an app developer to write it.

Register `{"kind": "custom", "app_id", "name", "secret", "webhook_url"}`: `webhook_url` is the
channel's Parley webhook (on loopback) and `secret` the channel's. Parley's channel points its
`settings.outbound_url` at `POST /custom/<app_id>/outbound`, the app's endpoint: it checks
Parley's signature (401 when wrong), drops a delivery it already has (same `X-Parley-Delivery`),
answers 200 `{"ok": true}`, and then reports the message delivered with a signed status event;
`/_simulator/read` reports it read.

Customer events (`/_simulator/inbound`, kind "custom"): `type` text (`text`), choice (`choice:
{id, title}`), image|document|audio|video (a sample file served at `media_url`, `text` or
`caption` as its caption), location (`latitude`, `longitude`, `name`, `address`); any of them
may carry the sender's `name`, `phone`, `email` and a `reply_to` id.

One more control verb: `POST /_simulator/statuses {kind: "custom", channel, id, state, error?}`
sends a status event for one of Parley's messages (a `failed` one, say).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import time
from typing import Any

from .chat import ChatProvider
from .core import ControlError, Request, Response, assert_loopback, in_background, json_response, route

TOLERANCE_SECONDS = 300
MEDIA_TYPES = ("image", "document", "audio", "video")
STATES = ("delivered", "read", "failed")
RANK = {"sent": 1, "delivered": 2, "read": 3}
_message_ids = itertools.count(1)


def signature(secret: str, raw: bytes, timestamp: int | None = None) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`, as the documentation shows."""
    moment = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{moment}.".encode() + raw, hashlib.sha256).hexdigest()
    return f"t={moment},v1={digest}"


def signature_valid(secret: str, raw: bytes, header: str) -> bool:
    """What an app does with Parley's header: a fresh timestamp and a matching v1."""
    parts = [part.strip().partition("=") for part in header.split(",")]
    stamps = [value for name, _, value in parts if name == "t" and value.isdigit()]
    signed = [value for name, _, value in parts if name == "v1"]
    if len(stamps) != 1 or abs(time.time() - int(stamps[0])) > TOLERANCE_SECONDS:
        return False
    expected = signature(secret, raw, int(stamps[0])).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, value) for value in signed)


class CustomApp(ChatProvider):
    kind = "custom"
    key_field = "app_id"
    required_fields = ("secret", "webhook_url")
    read_receipts = True

    def register_channel(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("webhook_url"):  # a missing one is named by the base class
            assert_loopback(str(body["webhook_url"]))
        return super().register_channel(body)

    def describe(self, channel: dict[str, Any]) -> str:
        return f"app {channel['id']}"

    # The app's endpoint, where Parley sends ----------------------------------------------------

    def api_routes(self):
        return [*super().api_routes(), route("POST", r"/custom/(?P<app_id>[^/]+)/outbound", self._outbound)]

    def _outbound(self, request: Request, app_id: str) -> Response:
        channel = self.channel(app_id)
        if channel is None:
            return _refusal(404, "not_found", f"No app {app_id!r} is registered with the simulator.")
        fault = self.take_fault(channel["id"])
        if fault is not None:
            self.record_out(channel["id"], _recipient(request), request, fault.status, errors=[_fault_error(fault)])
            return fault
        if not signature_valid(channel["secret"], request.body, request.header("X-Parley-Signature") or ""):
            error = {"code": "bad_signature", "title": "X-Parley-Signature does not match this app's secret."}
            self.record_out(channel["id"], _recipient(request), request, 401, errors=[error])
            return _refusal(401, error["code"], error["title"])
        delivery = request.header("X-Parley-Delivery") or ""
        if delivery and self._already_shown(channel["id"], delivery):
            return json_response({"ok": True, "duplicate": True})  # a retry of one we showed
        try:
            message = _checked_message(request.json_body)
            shown = self._shown(message)
        except ControlError as problem:
            error = {"code": "invalid_payload", "title": str(problem)}
            self.record_out(channel["id"], _recipient(request), request, 400, errors=[error])
            return _refusal(400, error["code"], error["title"])
        record = self.record_out(
            channel["id"], message["recipient"]["id"], request, 200, delivery=delivery or message["id"], **shown
        )
        response = json_response({"ok": True})
        response.after.append(lambda: in_background(self._report, channel, [record], "delivered"))
        return response

    def _already_shown(self, key: str, delivery: str) -> bool:
        with self.lock:
            return any(
                r.get("delivery") == delivery and r["http_status"] < 300 for r in self.outbox if r["channel"] == key
            )

    def _shown(self, message: dict[str, Any]) -> dict[str, Any]:
        """The thread entry the customer sees (shaped for the page, like WhatsApp's)."""
        shown = {
            "id": message["id"],
            "type": message["type"],
            "text": message.get("text") or "",
            "reply_to": message.get("reply_to") or "",
            "replies": [{"id": o["id"], "title": o["title"]} for o in message.get("options") or []],
            "fallback_text": message.get("fallback_text") or "",
            "location": message.get("location"),
        }
        if message.get("attachment"):
            shown["media"] = self._keep_attachment(message["attachment"])
        return shown

    def _keep_attachment(self, attachment: dict[str, Any]) -> dict[str, Any]:
        mime_type = attachment.get("mime_type") or "application/octet-stream"
        family = mime_type.split("/")[0] if mime_type.split("/")[0] in MEDIA_TYPES else "document"
        described = {"type": family, "mime_type": mime_type, "filename": attachment.get("filename") or ""}
        if "content_base64" in attachment:
            data = base64.b64decode(attachment["content_base64"], validate=True)
        else:
            try:
                status, data = self.fetch(attachment["url"])
            except ControlError:  # off this machine: the simulator only shows the link
                return {**described, "url": attachment["url"]}
            if status != 200:
                raise ControlError(f"could not download {attachment['url']} ({status})")
        media_id = self.store_media(data, mime_type, attachment.get("filename") or "file")
        return {
            **described,
            "id": media_id,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "url": self.media_url(media_id),
        }

    # Receipts, as the app reports them ---------------------------------------------------------

    def _report(self, channel: dict[str, Any], records: list[dict[str, Any]], state: str, error=None):
        with self.lock:
            for record in records:
                # The page may have read it before "delivered" went out: never step back.
                if state == "failed" or RANK.get(state, 0) > RANK.get(record.get("state", ""), 0):
                    record["state"] = state
        events = [{"type": "status", "id": r["id"], "state": state, "timestamp": int(time.time())} for r in records]
        if error:
            events = [{**event, "error": error} for event in events]
        raw = json.dumps({"events": events}).encode()
        return self.post_webhook(
            channel, channel["webhook_url"], raw, self._signed(channel, raw), what=f"status {state}"
        )

    def read(self, channel: dict[str, Any], user: str) -> tuple[str, bytes, dict[str, str]] | None:
        """The app tells Parley its messages were seen: each one once, at most 100 per request."""
        with self.lock:
            thread = self.threads.get((channel["id"], user), [])
            unreported = [r for r in thread if r["direction"] == "out" and r["state"] == "read" and not r.get("seen")]
            for record in unreported[:100]:
                record["seen"] = True
        if not unreported:
            return None
        events = [{"type": "status", "id": r["id"], "state": "read"} for r in unreported[:100]]
        raw = json.dumps({"events": events}).encode()
        return channel["webhook_url"], raw, self._signed(channel, raw)

    def control_verbs(self):
        return {**super().control_verbs(), ("POST", "statuses"): self._status}

    def _status(self, request: Request) -> Response:
        body = request.json_object()
        channel = self.require_channel(body)
        if body.get("state") not in STATES:
            raise ControlError(f"state must be one of {', '.join(STATES)}")
        with self.lock:
            record = next(
                (r for r in self.outbox if r.get("id") == body.get("id") and r["channel"] == channel["id"]), None
            )
        record = record or {"id": str(body.get("id") or "")}
        delivery = self._report(channel, [record], body["state"], body.get("error"))
        return json_response({"id": record["id"], "status": delivery.status})

    # The customer's side -----------------------------------------------------------------------

    def customer_event(self, channel: dict[str, Any], user: str, body: dict[str, Any]) -> dict[str, Any]:
        kind = str(body.get("type") or "text")
        event: dict[str, Any] = {
            "type": "message",
            "id": f"app-msg-{next(_message_ids)}-{int(time.time() * 1000)}",
            "timestamp": int(time.time()),
            "sender": {"id": user, **{k: body[k] for k in ("name", "phone", "email") if body.get(k)}},
        }
        if body.get("reply_to"):
            event["reply_to"] = str(body["reply_to"])
        record = {"id": event["id"], "type": kind, "text": "", "media": None, "reply_to": event.get("reply_to", "")}
        if kind == "text":
            event["text"] = record["text"] = str(body.get("text") or "")
        elif kind == "choice":
            choice = body.get("choice") or {}
            event["choice"] = {"id": str(choice.get("id") or ""), "title": str(choice.get("title") or "")}
            record["text"] = event["choice"]["title"]
        elif kind in MEDIA_TYPES:
            event.update(self._sample_attachment(kind, body, record))
        elif kind == "location":
            event["location"] = {
                "latitude": float(body.get("latitude", 30.0444)),
                "longitude": float(body.get("longitude", 31.2357)),
                **{k: str(body[k]) for k in ("name", "address") if body.get(k)},
            }
            record["text"] = event["location"].get("name", "")
        else:
            raise ControlError(f"a custom app sends text, choice, {', '.join(MEDIA_TYPES)} or location, not {kind!r}")
        record["event"] = event
        return record

    def _sample_attachment(self, kind: str, body: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        media_id, _, mime_type, filename = self.sample_media(kind)
        url = self.media_url(media_id)
        record["media"] = {"id": media_id, "type": kind, "mime_type": mime_type, "filename": filename, "url": url}
        caption = str(body.get("text") or body.get("caption") or "")
        record["text"] = caption
        attachment = {"url": url, "mime_type": mime_type, "filename": filename}
        return {"attachments": [attachment], **({"text": caption} if caption else {})}

    def webhook(self, channel: dict[str, Any], record: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
        raw = json.dumps({"events": [record["event"]]}).encode()
        return channel["webhook_url"], raw, self._signed(channel, raw)

    def sign(self, channel: dict[str, Any], raw: bytes, mode: str) -> tuple[str, dict[str, str]]:
        """good, bad (another secret), stale (signed six minutes ago) or none."""
        headers = {"Content-Type": "application/json"}
        if mode == "good":
            headers["X-Parley-Signature"] = signature(channel["secret"], raw)
        elif mode == "bad":
            headers["X-Parley-Signature"] = signature(channel["secret"] + "-wrong", raw)
        elif mode == "stale":
            headers["X-Parley-Signature"] = signature(channel["secret"], raw, int(time.time()) - 360)
        elif mode != "none":
            raise ControlError("signature must be good, bad, stale or none")
        return channel["webhook_url"], headers

    def _signed(self, channel: dict[str, Any], raw: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json", "X-Parley-Signature": signature(channel["secret"], raw)}


def _checked_message(body: Any) -> dict[str, Any]:
    """Parley's outbound body, checked as a careful app would (400 naming what is wrong)."""
    if not isinstance(body, dict):
        raise ControlError("the body must be a JSON object")
    for name in ("id", "type"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise ControlError(f"{name} is missing")
    if not isinstance(body.get("recipient"), dict) or not body["recipient"].get("id"):
        raise ControlError("recipient.id is missing")
    if body["type"] not in ("text", "media", "interactive", "location"):
        raise ControlError(f"unknown type {body['type']!r}")
    if body["type"] == "interactive" and not body.get("options"):
        raise ControlError("an interactive message needs options")
    if body["type"] == "media":
        attachment = body.get("attachment") or {}
        if "content_base64" in attachment:
            try:
                base64.b64decode(attachment["content_base64"], validate=True)
            except (binascii.Error, TypeError) as error:
                raise ControlError(f"attachment.content_base64 is not base64: {error}") from error
        elif not attachment.get("url"):
            raise ControlError("a media message needs attachment.content_base64 or attachment.url")
    return body


def _recipient(request: Request) -> str:
    try:
        return str(request.json_body["recipient"]["id"])
    except (ControlError, KeyError, TypeError):
        return ""


def _fault_error(fault: Response) -> dict[str, Any]:
    try:
        detail = json.loads(fault.body).get("detail", "")
    except (ValueError, AttributeError):
        detail = fault.body.decode("utf-8", "replace")
    return {"code": str(fault.status), "title": str(detail)}


def _refusal(status: int, code: str, detail: str) -> Response:
    return json_response({"code": code, "detail": detail}, status)
