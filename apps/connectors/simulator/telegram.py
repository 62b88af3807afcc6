"""The simulated Telegram Bot API: `/bot<token>/<method>` for what Parley's connector calls,
`/file/bot<token>/<path>` for downloads, and updates POSTed to the webhook Parley set.

Register a bot: `{"kind": "telegram", "bot_token": "123456:ABC-DEF", "username": "nile_bot",
"name": "Nile Basket"}` (optionally `webhook_url` and `secret_token`, for the demo loader). As with
the real Telegram, the webhook normally comes from Parley's `setWebhook`; until one is set, the
customer's updates wait (`getWebhookInfo.pending_update_count`) and go out once it is.

Customer events (`POST /_simulator/inbound`, `user` = the customer's numeric Telegram id):
`text`; `choice` (`choice: {id?, title?}` presses that button of the bot's message `reply_to`,
else of its last message with a keyboard); `photo` (or `image`), `document`, `voice`, `video`,
`audio`, `sticker` (built-in sample files, `caption?`); `contact` (their own number, `phone?`);
`location` (`latitude?, longitude?`); `edit` (their last message's new `text`); `block` and
`unblock` (my_chat_member).

When Parley answers a webhook with a Bot API call in the body (`{"method":
"answerCallbackQuery", ...}`), it is carried out as Telegram does, and listed in the outbox with
`via: "webhook_answer"`. Every API call is in `/_simulator/outbox` with its `method`.

Settings (`POST /_simulator/settings` with `kind: telegram`): `per_chat_per_second` (0: off, the
default; else a faster sender gets 429 with `parameters.retry_after`, as Telegram answers a bot
writing to one chat more than about once a second), `webhook_attempts`, `webhook_backoff`,
`webhook_timeout`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass
from email import policy as email_policy
from email.parser import BytesParser
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from .chat import ChatProvider
from .core import (
    ControlError,
    Delivery,
    Request,
    Response,
    assert_loopback,
    http_call,
    in_background,
    json_response,
    route,
)
from .samples import sample_for

VALID_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
DOWNLOAD_LIMIT = 20 * 1024 * 1024
# method → (the field carrying the file, what the page calls it)
MEDIA_METHODS = {
    "sendphoto": ("photo", "image"),
    "senddocument": ("document", "document"),
    "sendvideo": ("video", "video"),
    "sendaudio": ("audio", "audio"),
    "sendvoice": ("voice", "audio"),
}
# customer event type → (the Message field, the built-in sample, its MIME type, its file name)
CUSTOMER_MEDIA = {
    "photo": ("photo", "image", "", ""),
    "document": ("document", "document", "", ""),
    "voice": ("voice", "audio", "audio/ogg", ""),
    "video": ("video", "video", "", ""),
    "audio": ("audio", "audio", "audio/mpeg", "song.mp3"),
    "sticker": ("sticker", "sticker", "", ""),
}
_file_numbers = itertools.count(1)


class ApiError(Exception):
    """A Bot API refusal: `{"ok": false, "error_code", "description", "parameters"?}`."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def response(self) -> Response:
        body = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return json_response(body, self.code)


@dataclass
class Upload:
    data: bytes
    filename: str
    content_type: str


class Telegram(ChatProvider):
    kind = "telegram"
    key_field = "bot_token"

    def _clear(self) -> None:
        super()._clear()
        self.update_ids: dict[str, itertools.count] = {}
        self.message_ids: dict[tuple[str, str], itertools.count] = {}
        self.customers: dict[tuple[str, str], dict[str, Any]] = {}  # who started each bot
        self.blocked: set[tuple[str, str]] = set()
        self.pending: dict[str, list[dict[str, Any]]] = {}  # updates waiting for a webhook
        self.callbacks: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}  # file_id → {media_id, file_path, size…}
        self.last_sent: dict[tuple[str, str], float] = {}
        self.per_chat_per_second = 0.0

    # Registration ------------------------------------------------------------------------------

    def register_channel(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("webhook_url"):
            assert_loopback(str(body["webhook_url"]))
        if body.get("secret_token") and not VALID_SECRET.fullmatch(str(body["secret_token"])):
            raise ControlError("secret_token: 1-256 characters of A-Z, a-z, 0-9, _ and -")
        token = str(body.get("bot_token") or "")
        bot_id = token.partition(":")[0]
        body = {
            **body,
            "bot_id": int(bot_id) if bot_id.isdigit() else int(hashlib.sha256(token.encode()).hexdigest()[:10], 16),
        }
        body.setdefault("username", f"bot{body['bot_id']}_bot")
        return super().register_channel(body)

    def describe(self, channel: dict[str, Any]) -> str:
        return f"@{channel.get('username', '')}"

    def _bot_user(self, channel: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": channel["bot_id"],
            "is_bot": True,
            "first_name": channel.get("name", ""),
            "username": channel.get("username", ""),
        }

    # The customer ------------------------------------------------------------------------------

    def customer_event(self, channel: dict[str, Any], user: str, body: dict[str, Any]) -> dict[str, Any]:
        if not user.isdigit() or str(int(user)) != user:
            raise ControlError("user must be the customer's Telegram id: digits, no leading zero")
        kind = str(body.get("type") or "text")
        kind = "photo" if kind == "image" else kind
        person = self._customer(channel, user, body)
        if kind in ("edit", "choice", "block", "unblock"):
            update_kind, obj, record = getattr(self, f"_{kind}")(channel, user, person, body)
        elif kind in CUSTOMER_MEDIA or kind in ("text", "contact", "location"):
            update_kind, obj, record = "message", *self._new_message(channel, user, person, kind, body)
        else:
            raise ControlError(f"unknown type {kind!r} for telegram")
        with self.lock:
            update_id = next(self.update_ids.setdefault(channel["id"], itertools.count(700000001)))
        return {"update_kind": update_kind, "wire": {"update_id": update_id, update_kind: obj}, **record}

    def _customer(self, channel: dict[str, Any], user: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            known = self.customers.get((channel["id"], user))
            if known is None or body.get("name") or body.get("username"):
                first, _, last = str(body.get("name") or (known or {}).get("first_name") or f"User {user}").partition(
                    " "
                )
                known = {
                    "id": int(user),
                    "is_bot": False,
                    "first_name": first,
                    **({"last_name": last} if last else {}),
                    **({"username": body["username"]} if body.get("username") else {}),
                    "language_code": str(body.get("language_code") or "en"),
                }
                self.customers[(channel["id"], user)] = known
        return known

    def _chat(self, person: dict[str, Any]) -> dict[str, Any]:
        keys = ("id", "first_name", "last_name", "username")
        return {**{k: person[k] for k in keys if k in person}, "type": "private"}

    def _next_message_id(self, channel: dict[str, Any], user: str) -> int:
        # Message ids are counted per chat, the customer's and the bot's messages alike.
        with self.lock:
            return next(self.message_ids.setdefault((channel["id"], user), itertools.count(1)))

    def _new_message(self, channel, user, person, kind, body) -> tuple[dict[str, Any], dict[str, Any]]:
        message = {
            "message_id": self._next_message_id(channel, user),
            "from": person,
            "chat": self._chat(person),
            "date": int(time.time()),
        }
        record: dict[str, Any] = {"type": kind, "text": ""}
        if kind == "text":
            message["text"] = record["text"] = str(body.get("text") or "")
        elif kind == "contact":
            phone = str(body.get("phone") or "+201001234567")
            message["contact"] = {
                "phone_number": phone,
                "first_name": person["first_name"],
                **({"last_name": person["last_name"]} if "last_name" in person else {}),
                "user_id": person["id"],
            }
            record["text"] = f"📇 {phone}"
        elif kind == "location":
            place = {
                "latitude": float(body.get("latitude", 30.0444)),
                "longitude": float(body.get("longitude", 31.2357)),
            }
            message["location"] = place
            record.update(type="location", text=f"📍 {place['latitude']}, {place['longitude']}")
        else:
            message.update(self._customer_media(kind, body))
            record.update(
                text=message.get("caption", ""),
                media={"type": CUSTOMER_MEDIA[kind][1], "url": self.media_url(self._media_id_of(message, kind))},
            )
        reply_to = self._find_record(channel, user, body.get("reply_to"))
        if reply_to is not None and reply_to.get("message"):
            message["reply_to_message"] = reply_to["message"]
            record["reply_to"] = reply_to["id"]
        record.update(id=f"{user}:{message['message_id']}", message=message)
        return message, record

    def _customer_media(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        field, sample_kind, mime, filename = CUSTOMER_MEDIA[kind]
        sample = sample_for(sample_kind)
        mime, filename = mime or sample.mime_type, filename or sample.filename
        file = self._new_file(sample.data, mime, filename, folder=f"{field}s")
        ref = {"file_id": file["file_id"], "file_unique_id": file["file_unique_id"], "file_size": len(sample.data)}
        if kind == "photo":
            small = self._new_file(sample.data, mime, filename, folder="photos")
            value: Any = [
                {"file_id": small["file_id"], "file_unique_id": small["file_unique_id"], "width": 48, "height": 32},
                {**ref, "width": 96, "height": 64},
            ]
        elif kind == "sticker":
            value = {**ref, "type": "regular", "width": 512, "height": 512, "is_animated": False, "is_video": False}
            value["emoji"] = "👍"
        elif kind == "voice":
            value = {**ref, "duration": 3, "mime_type": mime}
        else:
            value = {**ref, "file_name": filename, "mime_type": mime}
            if kind in ("video", "audio"):
                value["duration"] = 5
        caption = str(body.get("caption") or body.get("text") or "")
        return {field: value, **({"caption": caption} if caption and kind != "sticker" else {})}

    def _media_id_of(self, message: dict[str, Any], kind: str) -> str:
        value = message[CUSTOMER_MEDIA[kind][0]]
        file_id = value[-1]["file_id"] if isinstance(value, list) else value["file_id"]
        return self.files[file_id]["media_id"]

    def _choice(self, channel, user, person, body) -> tuple[str, dict[str, Any], dict[str, Any]]:
        menu = self._find_record(channel, user, body.get("reply_to"), keyboard=True)
        if menu is None:
            raise ControlError("the bot has sent this customer no message with buttons")
        wanted = body.get("choice") or {}
        buttons = [b for row in menu["message"]["reply_markup"]["inline_keyboard"] for b in row]
        button = next((b for b in buttons if b.get("callback_data") == wanted.get("id")), None) or next(
            (b for b in buttons if b.get("text") == wanted.get("title")), None
        )
        if button is None:
            raise ControlError(f"no button {wanted!r} on message {menu['id']}")
        query_id = str(secrets.randbelow(10**18) + 10**18)
        query = {
            "id": query_id,
            "from": person,
            "message": menu["message"],
            "chat_instance": str(int(hashlib.sha256(f"{channel['id']}:{user}".encode()).hexdigest()[:15], 16)),
            "data": button["callback_data"],
        }
        record = {"id": f"cb:{query_id}", "type": "choice", "text": button["text"], "reply_to": menu["id"]}
        record.update(user=user, answered=False)
        with self.lock:
            self.callbacks[query_id] = record
        return "callback_query", query, record

    def _edit(self, channel, user, person, body) -> tuple[str, dict[str, Any], dict[str, Any]]:
        original = self._find_record(channel, user, body.get("reply_to"), direction="in")
        if original is None:
            raise ControlError("this customer has sent no message to edit")
        text = str(body.get("text") or "")
        field = "caption" if "caption" in original["message"] or original["type"] in CUSTOMER_MEDIA else "text"
        edited = {**original["message"], field: text, "edit_date": int(time.time())}
        with self.lock:
            original["message"], original["text"] = edited, text
        return (
            "edited_message",
            edited,
            {"id": f"edit:{original['id']}:{time.time_ns()}", "type": "edit", "text": text},
        )

    def _block(self, channel, user, person, body) -> tuple[str, dict[str, Any], dict[str, Any]]:
        return self._membership(channel, user, person, blocked=True)

    def _unblock(self, channel, user, person, body) -> tuple[str, dict[str, Any], dict[str, Any]]:
        return self._membership(channel, user, person, blocked=False)

    def _membership(self, channel, user, person, *, blocked: bool) -> tuple[str, dict[str, Any], dict[str, Any]]:
        with self.lock:
            (self.blocked.add if blocked else self.blocked.discard)((channel["id"], user))
        old, new = ("member", "kicked") if blocked else ("kicked", "member")
        update = {
            "chat": self._chat(person),
            "from": person,
            "date": int(time.time()),
            "old_chat_member": {"user": self._bot_user(channel), "status": old},
            "new_chat_member": {
                "user": self._bot_user(channel),
                "status": new,
                **({"until_date": 0} if blocked else {}),
            },
        }
        label = "🚫 blocked the bot" if blocked else "✅ unblocked the bot"
        return "my_chat_member", update, {"id": f"member:{user}:{time.time_ns()}", "type": "event", "text": label}

    def _find_record(self, channel, user, reference, *, keyboard=False, direction=None) -> dict[str, Any] | None:
        """A message of the thread by our id (`<chat>:<message_id>`) or bare message_id, else the
        last one that fits (with a keyboard, or from that side)."""
        with self.lock:
            records = [r for r in self.threads.get((channel["id"], user), []) if r.get("message")]
        if keyboard:
            records = [r for r in records if (r["message"].get("reply_markup") or {}).get("inline_keyboard")]
        if direction:
            records = [r for r in records if r["direction"] == direction]
        if reference:
            wanted = str(reference) if ":" in str(reference) else f"{user}:{reference}"
            return next((r for r in records if r["id"] == wanted), None)
        return records[-1] if records and (keyboard or direction) else None

    # Webhooks ----------------------------------------------------------------------------------

    def _secret_headers(self, channel: dict[str, Any], mode: str = "good") -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        secret = channel.get("secret_token") or ""
        if mode == "good" and secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        elif mode == "bad":
            headers["X-Telegram-Bot-Api-Secret-Token"] = f"{secret}-not-the-secret"
        elif mode not in ("good", "none"):
            raise ControlError("signature must be good, bad or none")
        return headers

    def webhook(self, channel: dict[str, Any], record: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
        raw = json.dumps(record["wire"], ensure_ascii=False, separators=(",", ":")).encode()
        return channel.get("webhook_url", ""), raw, self._secret_headers(channel)

    def sign(self, channel: dict[str, Any], raw: bytes, mode: str) -> tuple[str, dict[str, str]]:
        if not channel.get("webhook_url"):
            raise ControlError("no webhook is set for this bot: Parley has not called setWebhook", 409)
        return channel["webhook_url"], self._secret_headers(channel, mode)

    def _deliver(self, channel: dict[str, Any], record: dict[str, Any]) -> None:
        """Only update kinds the bot asked for (allowed_updates) go out; without a webhook they
        wait for one, as Telegram keeps them (for getUpdates) until a webhook is set."""
        with self.lock:
            allowed = channel.get("allowed_updates") or []
            if allowed and record["update_kind"] not in allowed:
                record["filtered"] = True
                return
            if not channel.get("webhook_url"):
                self.pending.setdefault(channel["id"], []).append(record)
                return
        super()._deliver(channel, record)

    def _deliver_in_order(self, channel: dict[str, Any], records: list[dict[str, Any]]) -> None:
        for record in records:
            self._deliver(channel, record)

    def post_webhook(self, channel, url, raw, headers, *, what, record=None) -> Delivery:
        """Like every provider's delivery, but Parley's answer is read: Telegram carries out a
        Bot API call made in the response to a webhook."""
        generation, delivery, answer = self.generation, Delivery(url), b""
        pause = self.policy.backoff
        for attempt in range(max(self.policy.attempts, 1)):
            if attempt:
                time.sleep(pause)
                pause *= 2
            if self.generation != generation:
                break
            status, body = http_call("POST", url, body=raw, headers=headers, timeout=self.policy.timeout)
            delivery.statuses.append(status)
            if delivery.ok:
                answer = body
                break
        with self.lock:
            if record is not None:
                record["parley_status"], record["attempts"] = delivery.status, len(delivery.statuses)
            self.webhooks.append(
                {
                    "seq": self.simulator.next_seq(),
                    "time": time.time(),
                    "what": what,
                    "channel": channel["id"],
                    "url": url,
                    "body": raw.decode("utf-8", "replace")[:20000],
                    "parley_statuses": delivery.statuses,
                    "answer": answer.decode("utf-8", "replace")[:2000],
                }
            )
        if delivery.ok:
            self._carry_out_answer(channel, answer)
        return delivery

    def _carry_out_answer(self, channel: dict[str, Any], body: bytes) -> None:
        try:
            params = json.loads(body) if body.strip() else None
        except ValueError:
            return  # "OK" or any other plain answer: nothing to do
        if isinstance(params, dict) and isinstance(params.get("method"), str):
            self._call(channel, params["method"], dict(params), None, via="webhook_answer")

    # Bot API -----------------------------------------------------------------------------------

    def api_routes(self):
        pattern = r"/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)"
        return [
            *super().api_routes(),
            route("GET", pattern, self._api),
            route("POST", pattern, self._api),
            route("GET", r"/file/bot(?P<token>[^/]+)/(?P<path>.+)", self._download),
        ]

    def _api(self, request: Request, token: str, method: str) -> Response:
        channel = self.channel(token)
        if channel is None:
            return ApiError(401, "Unauthorized").response()
        fault = self.take_fault(channel["id"])
        if fault is not None:
            self.record_out(channel["id"], "", request, fault.status, method=method, type=method, body=None)
            return fault
        try:
            params = _params(request)
        except ApiError as error:
            return error.response()
        return self._call(channel, method, params, request)

    def _call(self, channel, method, params, request, *, via: str = "api") -> Response:
        handler = self._methods().get(method.lower())
        if handler is None:
            return ApiError(404, "Not Found").response()
        user = str(params.get("chat_id") or "")
        logged = {key: _loggable(value) for key, value in params.items()}
        try:
            result, entry = handler(channel, params)
        except ApiError as error:
            errors = [{"code": error.code, "description": error.description}]
            self.record_out(
                channel["id"],
                user,
                request,
                error.code,
                method=method,
                via=via,
                type=method,
                body=logged,
                errors=errors,
            )
            return error.response()
        entry = {"type": method, **(entry or {})}
        extra = entry.pop("extra", {})
        self.record_out(
            channel["id"], entry.pop("user", user), request, 200, method=method, via=via, body=logged, **entry
        )
        return json_response({"ok": True, "result": result, **extra})

    def _methods(self):
        return {
            "getme": lambda channel, params: (
                {**self._bot_user(channel), "can_join_groups": True, "supports_inline_queries": False},
                None,
            ),
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._webhook_info,
            "sendmessage": self._send_message,
            **{name: partial(self._send_media, method=name) for name in MEDIA_METHODS},
            "sendlocation": self._send_location,
            "answercallbackquery": self._answer_callback,
            "getfile": self._get_file,
        }

    def _set_webhook(self, channel, params) -> tuple[Any, dict[str, Any]]:
        url, secret = str(params.get("url") or ""), str(params.get("secret_token") or "")
        if secret and not VALID_SECRET.fullmatch(secret):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        if url:
            try:
                assert_loopback(url)
            except ControlError as error:
                raise ApiError(400, "Bad Request: bad webhook: the simulator delivers to loopback only") from error
        with self.lock:
            channel.update(webhook_url=url, secret_token=secret)
            if "allowed_updates" in params:  # "If not specified, the previous setting will be used."
                channel["allowed_updates"] = _structured(params["allowed_updates"]) or []
            waiting = self.pending.pop(channel["id"], []) if url else []
        if waiting and not _flag(params.get("drop_pending_updates")):
            in_background(self._deliver_in_order, channel, waiting)
        described = "Webhook was set" if url else "Webhook was deleted"
        return True, {"type": "setWebhook", "extra": {"description": described}}

    def _delete_webhook(self, channel, params) -> tuple[Any, dict[str, Any]]:
        with self.lock:
            channel.update(webhook_url="", secret_token="")
            if _flag(params.get("drop_pending_updates")):
                self.pending.pop(channel["id"], None)
        return True, {"extra": {"description": "Webhook was deleted"}}

    def _webhook_info(self, channel, params) -> tuple[Any, None]:
        with self.lock:
            info = {
                "url": channel.get("webhook_url", ""),
                "has_custom_certificate": False,
                "pending_update_count": len(self.pending.get(channel["id"], [])),
                "max_connections": 40,
            }
            if channel.get("allowed_updates"):
                info["allowed_updates"] = list(channel["allowed_updates"])
        return info, None

    def _recipient(self, channel, params) -> tuple[str, dict[str, Any]]:
        """The chat a send goes to, with Telegram's refusals: unknown, blocked, too fast."""
        chat_id = str(params.get("chat_id") or "")
        if not chat_id:
            raise ApiError(400, "Bad Request: chat_id is empty")
        key = (channel["id"], chat_id)
        with self.lock:
            person = self.customers.get(key)
            if person is None:
                raise ApiError(400, "Bad Request: chat not found")
            if key in self.blocked:
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            now, last = time.time(), self.last_sent.get(key, 0.0)
            if self.per_chat_per_second and now - last < 1 / self.per_chat_per_second:
                wait = max(1, round(1 / self.per_chat_per_second - (now - last) + 0.5))
                raise ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
            self.last_sent[key] = now
        return chat_id, person

    def _sent_message(self, channel, params, fields: dict[str, Any]) -> dict[str, Any]:
        chat_id, person = self._recipient(channel, params)
        message = {
            "message_id": self._next_message_id(channel, chat_id),
            "from": self._bot_user(channel),
            "chat": self._chat(person),
            "date": int(time.time()),
            **fields,
        }
        reply = _structured(params.get("reply_parameters")) or {}
        if isinstance(reply, dict) and reply.get("message_id"):
            quoted = self._find_record(channel, chat_id, f"{chat_id}:{reply['message_id']}")
            if quoted is None and not reply.get("allow_sending_without_reply"):
                raise ApiError(400, "Bad Request: message to be replied not found")
            if quoted is not None:
                message["reply_to_message"] = quoted["message"]
        return message

    def _entry(self, message: dict[str, Any], **fields: Any) -> dict[str, Any]:
        chat_id = message["chat"]["id"]
        quoted = message.get("reply_to_message")
        return {
            "id": f"{chat_id}:{message['message_id']}",
            "user": str(chat_id),
            "message": message,
            "reply_to": f"{chat_id}:{quoted['message_id']}" if quoted else "",
            **fields,
        }

    def _send_message(self, channel, params) -> tuple[Any, dict[str, Any]]:
        text = str(params.get("text") or "")
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > TEXT_LIMIT:
            raise ApiError(400, "Bad Request: message is too long")
        markup = _structured(params.get("reply_markup"))
        replies = _inline_buttons(markup)
        message = self._sent_message(channel, params, {"text": text, **({"reply_markup": markup} if replies else {})})
        entry = self._entry(message, type="interactive" if replies else "text", text=text, replies=replies)
        return message, entry

    def _send_media(self, channel, params, method: str) -> tuple[Any, dict[str, Any]]:
        if not params.get(MEDIA_METHODS[method][0]):
            raise ApiError(400, f"Bad Request: there is no {MEDIA_METHODS[method][0]} in the request")
        field, family = MEDIA_METHODS[method]
        caption = str(params.get("caption") or "")
        if len(caption) > CAPTION_LIMIT:
            raise ApiError(400, "Bad Request: message caption is too long")
        file, url = self._file_for(params[field], field)
        value: Any = {"file_id": file["file_id"], "file_unique_id": file["file_unique_id"], "file_size": file["size"]}
        if field == "photo":
            value = [{**value, "width": 96, "height": 64}]
        elif field in ("document", "video", "audio"):
            value.update(file_name=file["filename"], mime_type=file["mime_type"])
        message = self._sent_message(channel, params, {field: value, **({"caption": caption} if caption else {})})
        entry = self._entry(message, type=family, text=caption, media={"type": family, "url": url})
        return message, entry

    def _file_for(self, given: Any, field: str) -> tuple[dict[str, Any], str]:
        """An upload, a URL Telegram fetches itself, or the file_id of a file it already has."""
        if isinstance(given, Upload):
            if len(given.data) > (10 if field == "photo" else 50) * 1024 * 1024:
                raise ApiError(413, "Request Entity Too Large")
            file = self._new_file(given.data, given.content_type, given.filename, folder=f"{field}s")
            return file, self.media_url(file["media_id"])
        given = str(given or "")
        if given.startswith(("http://", "https://")):
            name = given.rsplit("/", 1)[-1] or "file"
            return {
                "file_id": _new_file_id(),
                "file_unique_id": _new_file_id()[:16],
                "size": 0,
                "filename": name,
                "mime_type": "",
            }, given
        with self.lock:
            file = self.files.get(given)
        if file is None:
            raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        return file, self.media_url(file["media_id"])

    def _send_location(self, channel, params) -> tuple[Any, dict[str, Any]]:
        try:
            place = {"latitude": float(params["latitude"]), "longitude": float(params["longitude"])}
        except (KeyError, TypeError, ValueError) as error:
            raise ApiError(400, "Bad Request: latitude and longitude are required numbers") from error
        message = self._sent_message(channel, params, {"location": place})
        text = f"📍 {place['latitude']}, {place['longitude']}"
        return message, self._entry(message, type="location", text=text, payload=place)

    def _answer_callback(self, channel, params) -> tuple[Any, dict[str, Any]]:
        query_id = str(params.get("callback_query_id") or "")
        with self.lock:
            record = self.callbacks.get(query_id)
            if record is None:
                raise ApiError(
                    400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
                )
            record["answered"] = True
        return True, {
            "type": "answer",
            "text": str(params.get("text") or ""),
            "user": record["user"],
            "answered": query_id,
        }

    def _get_file(self, channel, params) -> tuple[Any, None]:
        with self.lock:
            file = self.files.get(str(params.get("file_id") or ""))
        if file is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if file["size"] > DOWNLOAD_LIMIT:
            raise ApiError(400, "Bad Request: file is too big")
        keys = ("file_id", "file_unique_id", "file_path")
        return {**{k: file[k] for k in keys}, "file_size": file["size"]}, None

    def _download(self, request: Request, token: str, path: str) -> Response:
        with self.lock:
            file = next((f for f in self.files.values() if f["file_path"] == path), None)
            found = self.media.get(file["media_id"]) if file else None
        if self.channel(token) is None or found is None:
            return ApiError(404, "Not Found").response()
        return Response(200, found[0], found[1])

    def _new_file(self, data: bytes, mime_type: str, filename: str, *, folder: str) -> dict[str, Any]:
        media_id = self.store_media(data, mime_type, filename)
        extension = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
        file = {
            "file_id": _new_file_id(),
            "file_unique_id": _new_file_id()[:16],
            "file_path": f"{folder}/file_{next(_file_numbers)}.{extension}",
            "media_id": media_id,
            "size": len(data),
            "mime_type": mime_type,
            "filename": filename,
        }
        with self.lock:
            self.files[file["file_id"]] = file
        return file

    # Control verbs -----------------------------------------------------------------------------

    def control_verbs(self):
        return {
            **super().control_verbs(),
            ("POST", "settings"): self._settings,
            ("GET", "settings"): self._settings,
        }

    def _settings(self, request: Request) -> Response:
        body = request.json_object() if request.method == "POST" else {}
        known = {"per_chat_per_second", "webhook_attempts", "webhook_backoff", "webhook_timeout"}
        unknown = set(body) - known - {"kind"}
        if unknown:
            raise ControlError(f"unknown settings {sorted(unknown)}; known: {sorted(known)}")
        try:
            values = {key: float(body[key]) for key in known if key in body}
        except (TypeError, ValueError) as error:
            raise ControlError(f"settings must be numbers: {error}") from error
        with self.lock:
            self.per_chat_per_second = values.get("per_chat_per_second", self.per_chat_per_second)
            self.policy.attempts = int(values.get("webhook_attempts", self.policy.attempts))
            self.policy.backoff = values.get("webhook_backoff", self.policy.backoff)
            self.policy.timeout = values.get("webhook_timeout", self.policy.timeout)
            current = {
                "per_chat_per_second": self.per_chat_per_second,
                "webhook_attempts": self.policy.attempts,
                "webhook_backoff": self.policy.backoff,
                "webhook_timeout": self.policy.timeout,
            }
        return json_response(current)


# Request parameters --------------------------------------------------------------------------------


def _params(request: Request) -> dict[str, Any]:
    """Telegram takes parameters four ways: query string, form-urlencoded, JSON and multipart."""
    params: dict[str, Any] = dict(request.query)
    content_type = (request.header("Content-Type") or "").split(";")[0].strip().lower()
    if not request.body.strip():
        return params
    if content_type == "application/json":
        try:
            body = json.loads(request.body)
        except ValueError as error:
            raise ApiError(400, f"Bad Request: can't parse JSON: {error}") from error
        if not isinstance(body, dict):
            raise ApiError(400, "Bad Request: parameters must be a JSON object")
        return {**params, **body}
    if content_type == "application/x-www-form-urlencoded":
        return {**params, **dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))}
    if content_type == "multipart/form-data":
        return {**params, **_multipart(request)}
    raise ApiError(400, f"Bad Request: unsupported Content-Type {content_type!r}")


def _multipart(request: Request) -> dict[str, Any]:
    head = f"Content-Type: {request.header('Content-Type')}\r\n\r\n".encode()
    message = BytesParser(policy=email_policy.HTTP).parsebytes(head + request.body)
    if not message.is_multipart():
        raise ApiError(400, "Bad Request: can't parse multipart/form-data")
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename:
            form[str(name)] = Upload(data, filename, part.get_content_type())
        else:
            form[str(name)] = data.decode("utf-8", "replace")
    return form


def _structured(value: Any) -> Any:
    """Objects (reply_markup, reply_parameters, allowed_updates) arrive as JSON strings in a form."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError as error:
            raise ApiError(400, f"Bad Request: can't parse {value[:40]!r}") from error
    return value


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _inline_buttons(markup: Any) -> list[dict[str, str]]:
    """The keyboard's buttons as the page's replies, checked as Telegram checks callback_data."""
    if not isinstance(markup, dict) or not markup.get("inline_keyboard"):
        return []
    replies = []
    for row in markup["inline_keyboard"]:
        for button in row if isinstance(row, list) else []:
            data = str(button.get("callback_data", "")) if isinstance(button, dict) else ""
            if not button.get("text"):
                raise ApiError(400, "Bad Request: text buttons are unallowed in the inline keyboard")
            if not 1 <= len(data.encode()) <= 64:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
            replies.append({"id": data, "title": str(button["text"])})
    return replies


def _loggable(value: Any) -> Any:
    if isinstance(value, Upload):
        return {"filename": value.filename, "content_type": value.content_type, "bytes": len(value.data)}
    return _structured(value) if isinstance(value, str) else value


def _new_file_id() -> str:
    return "AgAC" + secrets.token_urlsafe(24)
