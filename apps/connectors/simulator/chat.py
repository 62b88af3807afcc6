"""The shared customer side of the simpler providers (Messenger, Instagram, Telegram, WeChat,
email, the custom channel): registered channels, one thread per (channel, customer), the calls
Parley made to the provider's API, faults to inject, and signed webhook delivery with retries.

A provider subclasses `ChatProvider` and supplies its wire format:

- `key_field` (the registration field that names a channel: a page id, a bot token, an app id…)
  and `required_fields`;
- `customer_event(channel, user, body) -> dict`: the neutral record of what the customer did
  (`/_simulator/inbound`), whose `wire` is built by `webhook(channel, record) -> (url, bytes,
  headers)` exactly as the provider would send it;
- `api_routes()`: the provider's API; its handlers call `take_fault`, `record_out` and
  `json_response` / `Response`;
- optionally `read(channel, user)`: what a customer's app sends when they read (Messenger's
  read watermark), `handshake(channel)` and `sign(channel, raw, query)`.

Control verbs every such provider answers (JSON; `kind` picks the provider):

- `POST /_simulator/inbound` `{kind, channel, user, name?, type, text?, choice?: {id, title},
  reply_to?, wait?}`: the customer writes; `{id, status, attempts}` with `wait`, else 202.
- `POST /_simulator/inbound/raw` `{kind, channel, body, signature: good|bad|none, times,
  concurrent, content_type?}`: the same bytes posted `times` times; `{statuses}`.
- `POST /_simulator/read` `{kind, channel, user}`: the customer read the thread; `{status}`.
- `POST /_simulator/verify` `{kind, channel}`: the provider's handshake; `{status, ok, body}`.
- `POST /_simulator/window` `{kind, channel, user, hours_ago}`: the customer last wrote that long
  ago (null: never); `{user, window_open}`.
- `POST /_simulator/faults` `{kind, channel, status, body, count=1, headers?}`: the next
  `count` API calls answer that; 201 `{pending}`.
- `GET /_simulator/thread?kind=&channel=&user=`: `{channel, user, window_open, messages}`,
  shaped like WhatsApp's thread so the customer page draws it the same way.
- `GET /_simulator/outbox?kind=&channel=`: every API call Parley made for that channel.
- `GET /_simulator/webhooks?kind=&channel=`: every webhook sent.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable
from typing import Any, ClassVar

from .core import (
    ControlError,
    DeliveryPolicy,
    Provider,
    Request,
    Response,
    deliver,
    http_call,
    in_background,
    json_response,
    post_repeatedly,
)
from .samples import sample_for

_media_ids = itertools.count(1)


class ChatProvider(Provider):
    kind: ClassVar[str] = ""
    key_field: ClassVar[str] = ""
    required_fields: ClassVar[tuple[str, ...]] = ()
    # The customer-service window the provider enforces, in hours (None: no window).
    window_hours: ClassVar[float | None] = None
    # Whether the page offers a "read" receipt for this provider.
    read_receipts: ClassVar[bool] = False

    def __init__(self, simulator):
        super().__init__(simulator)
        self._channels: dict[str, dict[str, Any]] = {}
        self._clear()

    def _clear(self) -> None:
        self.threads: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.outbox: list[dict[str, Any]] = []
        self.webhooks: list[dict[str, Any]] = []
        self.faults: dict[str, list[dict[str, Any]]] = {}
        self.media: dict[str, tuple[bytes, str, str]] = {}
        self.last_inbound: dict[tuple[str, str], float] = {}
        self.generation = getattr(self, "generation", 0) + 1
        self.policy = DeliveryPolicy()

    # Provider hooks ------------------------------------------------------------------------------

    def customer_event(self, channel: dict[str, Any], user: str, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def webhook(self, channel: dict[str, Any], record: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
        raise NotImplementedError

    def sign(self, channel: dict[str, Any], raw: bytes, mode: str) -> tuple[str, dict[str, str]]:
        """For `inbound/raw`: the URL and headers that carry a good, bad or no signature."""
        raise NotImplementedError

    def read(self, channel: dict[str, Any], user: str) -> tuple[str, bytes, dict[str, str]] | None:
        return None

    def handshake(self, channel: dict[str, Any]) -> dict[str, Any]:
        raise ControlError(f"{self.kind} has no webhook handshake")

    def describe(self, channel: dict[str, Any]) -> str:
        """How the page names the channel."""
        return channel.get("name") or channel[self.key_field]

    # Registration ------------------------------------------------------------------------------

    def register_channel(self, body: dict[str, Any]) -> dict[str, Any]:
        missing = [name for name in (self.key_field, *self.required_fields) if not body.get(name)]
        if missing:
            raise ControlError(f"a {self.kind} channel needs {', '.join(missing)}")
        channel = {key: value for key, value in body.items() if key != "kind"}
        channel["kind"] = self.kind
        channel["id"] = str(body[self.key_field])
        channel.setdefault("name", f"{self.kind} {channel['id']}")
        channel["label"] = self.describe(channel)
        channel["read_receipts"] = self.read_receipts
        with self.lock:
            self._channels[channel["id"]] = channel
        return channel

    def channels(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(c) for c in self._channels.values()]

    def reset(self, *, channels: bool) -> None:
        with self.lock:
            self._clear()
            if channels:
                self._channels = {}

    def channel(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            return self._channels.get(str(key))

    def channel_where(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        with self.lock:
            return next((c for c in self._channels.values() if predicate(c)), None)

    def require_channel(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self.channel(str(body.get("channel") or ""))
        if channel is None:
            raise ControlError(f"no {self.kind} channel {body.get('channel')!r} is registered", 404)
        return channel

    # What Parley called --------------------------------------------------------------------------

    def take_fault(self, key: str) -> Response | None:
        """The next injected answer for this channel's API, if one is pending."""
        with self.lock:
            pending = self.faults.get(key) or []
            if not pending:
                return None
            fault = pending[0]
            fault["count"] -= 1
            if fault["count"] <= 0:
                pending.pop(0)
        body = fault["body"]
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        content_type = "application/json" if not isinstance(body, str) else "text/plain"
        return Response(int(fault["status"]), raw, content_type, dict(fault.get("headers") or {}))

    def record_out(self, key: str, user: str, request: Request | None, status: int, **entry: Any) -> dict[str, Any]:
        """One message Parley sent: into the outbox and, if it was accepted, the thread."""
        record = {
            "seq": self.simulator.next_seq(),
            "channel": key,
            "user": str(user),
            "time": time.time(),
            "http_status": status,
            "direction": "out",
            "state": "sent" if status < 300 else "failed",
            "errors": [],
            "type": "text",
            "text": "",
            "replies": [],
            "media": None,
            **entry,
        }
        if request is not None:
            record.setdefault("path", request.raw_path)
            record.setdefault("body", _loggable(request))
        with self.lock:
            self.outbox.append(record)
            if status < 300 and record.get("id"):
                self.threads.setdefault((key, str(user)), []).append(record)
        return record

    def window_open(self, key: str, user: str) -> bool:
        if self.window_hours is None:
            return True
        with self.lock:
            last = self.last_inbound.get((key, str(user)))
        return last is not None and time.time() - last < self.window_hours * 3600

    def store_media(self, data: bytes, mime_type: str, filename: str) -> str:
        media_id = f"m{next(_media_ids)}{hashlib.sha256(data).hexdigest()[:8]}"
        with self.lock:
            self.media[media_id] = (data, mime_type, filename)
        return media_id

    def media_url(self, media_id: str) -> str:
        return f"{self.simulator.base_url}/_simulator/chat-media?kind={self.kind}&id={media_id}"

    def sample_media(self, kind: str) -> tuple[str, bytes, str, str]:
        sample = sample_for(kind)
        media_id = self.store_media(sample.data, sample.mime_type, sample.filename)
        return media_id, sample.data, sample.mime_type, sample.filename

    # Control verbs -------------------------------------------------------------------------------

    def api_routes(self):
        return []

    def control_verbs(self) -> dict[tuple[str, str], Callable[[Request], Response]]:
        return {
            ("POST", "inbound"): self._inbound,
            ("POST", "inbound/raw"): self._inbound_raw,
            ("POST", "read"): self._read,
            ("POST", "verify"): self._verify,
            ("POST", "faults"): self._add_fault,
            ("GET", "thread"): self._thread,
            ("GET", "outbox"): self._outbox,
            ("GET", "webhooks"): self._webhooks,
            ("GET", "chat-media"): self._media_bytes,
            ("POST", "window"): self._set_window,
        }

    def _inbound(self, request: Request) -> Response:
        body = request.json_object()
        channel = self.require_channel(body)
        user = str(body.get("user") or "").strip()
        if not user:
            raise ControlError("user is required: the customer's id on this provider")
        record = self.customer_event(channel, user, body)
        record.update(
            seq=self.simulator.next_seq(),
            direction="in",
            time=time.time(),
            parley_status=None,
            attempts=0,
            generation=self.generation,
        )
        record.setdefault("replies", [])
        with self.lock:
            self.threads.setdefault((channel["id"], user), []).append(record)
            self.last_inbound[(channel["id"], user)] = time.time()
        if body.get("wait"):
            self._deliver(channel, record)
            answer = {"id": record["id"], "status": record["parley_status"], "attempts": record["attempts"]}
            return json_response(answer)
        response = json_response({"id": record["id"], "delivered": None}, 202)
        response.after.append(lambda: in_background(self._deliver, channel, record))
        return response

    def _deliver(self, channel: dict[str, Any], record: dict[str, Any]) -> None:
        url, raw, headers = self.webhook(channel, record)
        self.post_webhook(channel, url, raw, headers, what=f"message {record.get('type', '')}", record=record)

    def post_webhook(
        self,
        channel: dict[str, Any],
        url: str,
        raw: bytes,
        headers: dict[str, str],
        *,
        what: str,
        record: dict[str, Any] | None = None,
    ):
        generation = self.generation
        delivery = deliver(url, raw, headers, self.policy, cancelled=lambda: self.generation != generation)
        with self.lock:
            if record is not None:
                record["parley_status"] = delivery.status
                record["attempts"] = len(delivery.statuses)
            self.webhooks.append(
                {
                    "seq": self.simulator.next_seq(),
                    "time": time.time(),
                    "what": what,
                    "channel": channel["id"],
                    "url": url,
                    "body": raw.decode("utf-8", "replace")[:20000],
                    "parley_statuses": delivery.statuses,
                }
            )
        return delivery

    def _inbound_raw(self, request: Request) -> Response:
        body = request.json_object()
        channel = self.require_channel(body)
        if "body" not in body:
            raise ControlError("body is required: the payload (JSON, or a string sent verbatim)")
        raw = body["body"].encode() if isinstance(body["body"], str) else json.dumps(body["body"]).encode()
        url, headers = self.sign(channel, raw, str(body.get("signature", "good")))
        if body.get("content_type"):
            headers["Content-Type"] = str(body["content_type"])
        times = int(body.get("times", 1))
        if not 1 <= times <= 50:
            raise ControlError("times must be between 1 and 50")
        statuses = post_repeatedly(
            url, raw, headers, times=times, concurrent=bool(body.get("concurrent")), timeout=self.policy.timeout
        )
        return json_response({"statuses": statuses})

    def _read(self, request: Request) -> Response:
        body = request.json_object()
        channel = self.require_channel(body)
        user = str(body.get("user") or "")
        with self.lock:
            for record in self.threads.get((channel["id"], user), []):
                if record["direction"] == "out" and record["state"] in ("sent", "delivered"):
                    record["state"] = "read"
        wire = self.read(channel, user)
        if wire is None:
            return json_response({"status": None})
        url, raw, headers = wire
        delivery = self.post_webhook(channel, url, raw, headers, what="read")
        return json_response({"status": delivery.status})

    def _set_window(self, request: Request) -> Response:
        """Moves the customer's last message `hours_ago` back (null: they never wrote), so a test
        can step outside the provider's window without waiting."""
        body = request.json_object()
        channel = self.require_channel(body)
        user = str(body.get("user") or "")
        if not user:
            raise ControlError("user is required")
        hours_ago = body.get("hours_ago")
        with self.lock:
            if hours_ago is None:
                self.last_inbound.pop((channel["id"], user), None)
            else:
                self.last_inbound[(channel["id"], user)] = time.time() - float(hours_ago) * 3600
        return json_response({"user": user, "window_open": self.window_open(channel["id"], user)})

    def _verify(self, request: Request) -> Response:
        return json_response(self.handshake(self.require_channel(request.json_object())))

    def _add_fault(self, request: Request) -> Response:
        body = request.json_object()
        channel = self.require_channel(body)
        fault = {
            "status": int(body.get("status") or 400),
            "body": body.get("body", {}),
            "headers": body.get("headers") or {},
            "count": max(1, int(body.get("count") or 1)),
        }
        with self.lock:
            self.faults.setdefault(channel["id"], []).append(fault)
            pending = sum(f["count"] for f in self.faults[channel["id"]])
        return json_response({"fault": fault, "pending": pending}, 201)

    def _thread(self, request: Request) -> Response:
        channel = self.require_channel(request.query)
        user = request.query.get("user", "")
        with self.lock:
            records = [dict(r) for r in self.threads.get((channel["id"], user), [])]
        return json_response(
            {
                "channel": channel,
                "user": user,
                "wa_id": user,
                "window_open": self.window_open(channel["id"], user),
                "messages": [_page_message(r) for r in records],
            }
        )

    def _outbox(self, request: Request) -> Response:
        key = request.query.get("channel")
        with self.lock:
            listed = [dict(r) for r in self.outbox if key in (None, r["channel"])]
        return json_response(listed)

    def _webhooks(self, request: Request) -> Response:
        key = request.query.get("channel")
        with self.lock:
            listed = [dict(w) for w in self.webhooks if key in (None, w["channel"])]
        return json_response(listed)

    def _media_bytes(self, request: Request) -> Response | None:
        if request.query.get("kind") != self.kind:
            return None
        with self.lock:
            found = self.media.get(request.query.get("id", ""))
        if found is None:
            raise ControlError("no such media", 404)
        return Response(200, found[0], found[1])

    def fetch(self, url: str) -> tuple[int | None, bytes]:
        """Downloads a file Parley offers by URL (the custom channel's attachments)."""
        return http_call("GET", url, timeout=self.policy.timeout)


def _page_message(record: dict[str, Any]) -> dict[str, Any]:
    """A thread entry in the shape the customer page draws (the same as WhatsApp's)."""
    media = record.get("media")
    return {
        "seq": record["seq"],
        "direction": record["direction"],
        "wamid": record.get("id", ""),
        "time": record["time"],
        "type": record.get("type", "text"),
        "context": record.get("reply_to") or None,
        "preview": {
            "text": record.get("text", ""),
            "header": record.get("header", ""),
            "media": media,
            "replies": [{"type": "choice", **choice} for choice in record.get("replies") or []],
        },
        "state": record.get("state", ""),
        "errors": record.get("errors") or [],
        "parley_status": record.get("parley_status"),
        "attempts": record.get("attempts", 0),
    }


def _loggable(request: Request) -> Any:
    if not request.body:
        return None
    try:
        return json.loads(request.body)
    except ValueError:
        return request.body[:4000].decode("utf-8", "replace")
