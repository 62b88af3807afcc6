"""Telegram Bot API: updates pushed to our webhook (set by `activate` with setWebhook), replies
through /bot<token>/<method>. https://core.telegram.org/bots/api

Credentials: bot_token. Settings: base_url (default https://api.telegram.org).

Ids: Telegram numbers messages per chat, so a message's provider id is `<chat.id>:<message_id>`;
a button press is `cb:<callback_query.id>`. The contact's id on this channel is the chat id: a
person in a private chat, the whole group in a group chat.
"""

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime

import httpx
from django.http import HttpResponse, JsonResponse

from apps.connectors.base import (
    HTTP_TIMEOUT,
    Connector,
    ErrorClass,
    InboundEdit,
    InboundMessage,
    MediaFile,
    OutboundMessage,
    ParseError,
    ProviderError,
    ReachabilityUpdate,
    SendResult,
    json_body,
    moment,
    read_capped,
)
from apps.connectors.session import http
from apps.core import netguard

MB = 1024 * 1024
DEFAULT_BASE_URL = "https://api.telegram.org"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name, not a secret)
# setWebhook's secret_token: "1-256 characters. Only A-Z, a-z, 0-9, _ and - are allowed."
VALID_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
TEXT_LIMIT = 4096  # sendMessage: "1-4096 characters after entities parsing"
CAPTION_LIMIT = 1024  # captions of photos, documents, videos…: "0-1024 characters"
CALLBACK_DATA_LIMIT = 64  # InlineKeyboardButton.callback_data: "1-64 bytes"
# Bots may download files of up to 20 MB with getFile, while they may upload up to 50 MB
# (10 MB for photos). `size_limits` are the upload limits, what an operator may attach;
# `fetch_media` applies the smaller download limit itself.
DOWNLOAD_LIMIT = 20 * MB

# What a customer's message may carry, in the order Telegram documents them. An animation also
# sets `document` "for backward compatibility", so it is looked at first.
MEDIA_FIELDS = ("animation", "photo", "video", "video_note", "voice", "audio", "document", "sticker")
# Telegram gives a MIME type for documents, videos, audio and voice notes only; photos are
# always re-encoded as JPEG, video notes are MPEG-4, voice notes OGG/Opus.
DEFAULT_MIME = {
    "animation": "video/mp4",
    "photo": "image/jpeg",
    "video": "video/mp4",
    "video_note": "video/mp4",
    "voice": "audio/ogg",
    "audio": "audio/mpeg",
    "document": "application/octet-stream",
    "sticker": "image/webp",
}
# For private chats, my_chat_member comes only when the user blocks ("kicked") or unblocks
# ("member") the bot; in groups, when the bot is removed or added.
MEMBER_STATUSES = {"kicked": False, "left": False, "member": True, "administrator": True}
OUR_MESSAGE_ID = re.compile(r"-?\d+:(\d+)")


def webhook_secret(channel) -> str:
    """The secret Telegram echoes in every update's header: the channel's verify token when it is
    a valid secret_token already (the default one is), else a digest of it, which always is."""
    token = channel.verify_token or ""
    if VALID_SECRET.fullmatch(token):
        return token
    return hashlib.sha256(token.encode()).hexdigest()


def callback_data_for(option_id: str) -> str:
    """What a button carries back: the option id itself when it fits Telegram's 64 bytes, else
    `h:` and a digest of it, which `parse` maps back through the options of the menu it was
    pressed on (Parley keeps them on the outbound message)."""
    if 0 < len(option_id.encode()) <= CALLBACK_DATA_LIMIT:
        return option_id
    return "h:" + hashlib.sha256(option_id.encode()).hexdigest()[:32]


def _full_name(user: dict) -> str:
    return " ".join(part for part in (user.get("first_name", ""), user.get("last_name", "")) if part)


def _international(phone: str) -> str:
    """Telegram sends contact numbers with or without the leading '+'; they are international."""
    digits = phone.strip()
    return digits if not digits or digits.startswith("+") else f"+{digits}"


def classify(code: int, description: str) -> ErrorClass:
    """Telegram's error_code and description, by what Parley should do about them."""
    if code == 429 or code >= 500:
        return ErrorClass.RETRY
    if code in (401, 404):  # a revoked or mistyped token: nothing works until it is fixed
        return ErrorClass.CREDENTIALS
    if code == 403:  # "bot was blocked by the user", "user is deactivated", kicked from a group
        return ErrorClass.STOP_RECIPIENT
    if "chat not found" in description.lower():
        return ErrorClass.STOP_RECIPIENT
    return ErrorClass.FATAL


class TelegramConnector(Connector):
    """Rates: about 30 messages a second per bot and one a second per chat (Telegram's FAQ); over
    them the Bot API answers 429 with `parameters.retry_after`, which the sender honours. Telegram
    has no customer-service window: a bot may write to anyone who started it and did not block
    it."""

    kind = "telegram"
    reply_window_hours = None
    size_limits = {"image": 10 * MB, "video": 50 * MB, "audio": 50 * MB, "document": 50 * MB}

    # Requests -----------------------------------------------------------------------------

    def verify(self, channel, raw_body: bytes, headers, query=None) -> bool:
        """Telegram does not sign updates; it echoes the secret_token given to setWebhook."""
        given = (headers.get(SECRET_HEADER) or "").encode("utf-8", "replace")
        return bool(given) and hmac.compare_digest(given, webhook_secret(channel).encode())

    def acknowledge(self, channel=None, raw_body: bytes = b"") -> HttpResponse:
        """A button press is answered in the webhook's own response (Telegram's "making requests
        when getting updates"), so the customer's button stops spinning without waiting for the
        worker; anything else gets an empty 200."""
        try:
            update = json.loads(raw_body)
            query_id = update["callback_query"]["id"]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
            return HttpResponse(status=200)
        return JsonResponse({"method": "answerCallbackQuery", "callback_query_id": str(query_id)})

    def activate(self, channel) -> None:
        """setWebhook: where updates go, the secret they carry, and only the kinds Parley reads."""
        body = {
            "url": channel.webhook_url,
            "secret_token": webhook_secret(channel),
            "allowed_updates": ALLOWED_UPDATES,
        }
        try:
            self._call(channel, "setWebhook", json=body)
        except ProviderError as error:
            if error.error_class in (ErrorClass.CREDENTIALS, ErrorClass.RETRY):
                raise
            raise ProviderError(ErrorClass.FATAL, error.code, error.detail) from error

    # Parsing ------------------------------------------------------------------------------

    def parse(self, channel, raw_body: bytes, headers=None) -> list:
        update = json_body(raw_body)
        if not isinstance(update, dict) or "update_id" not in update:
            raise ParseError("not a Telegram Update (no update_id)")
        if isinstance(update.get("message"), dict):
            return [self._parse_message(channel, update["message"])]
        if isinstance(update.get("edited_message"), dict):
            return self._parse_edit(update["edited_message"])
        if isinstance(update.get("callback_query"), dict):
            return [self._parse_callback(channel, update["callback_query"])]
        if isinstance(update.get("my_chat_member"), dict):
            return self._parse_member(update["my_chat_member"])
        return self._parse_other(update)

    def _sender(self, message: dict) -> dict:
        """Who the conversation is with: the chat (a person, or a whole group)."""
        try:
            chat, message_id = message["chat"], message["message_id"]
            chat_id = chat["id"]
        except (KeyError, TypeError) as error:
            raise ParseError(f"message without {error}") from error
        user = message.get("from") if isinstance(message.get("from"), dict) else {}
        private = chat.get("type", "private") == "private"
        payload = {
            "chat_type": chat.get("type", ""),
            "username": (user if private else chat).get("username", ""),
            "language_code": user.get("language_code", ""),
        }
        if not private:  # the group is the contact; say who in it wrote
            payload["from"] = {"id": user.get("id"), "name": _full_name(user), "username": user.get("username", "")}
        return {
            "provider_id": f"{chat_id}:{message_id}",
            "sender_id": str(chat_id),
            "sender_name": _full_name(user) if private else chat.get("title", ""),
            "timestamp": moment(message.get("date")),
            "payload": payload,
        }

    def _parse_message(self, channel, message: dict) -> InboundMessage:
        common = self._sender(message)
        payload = common.pop("payload")
        reply = message.get("reply_to_message")
        if isinstance(reply, dict) and "message_id" in reply:
            common["reply_to_provider_id"] = f"{message['chat']['id']}:{reply['message_id']}"
        if isinstance(message.get("text"), str):
            return InboundMessage(kind="text", text=message["text"], payload=payload, **common)
        field = next((name for name in MEDIA_FIELDS if message.get(name)), None)
        if field:
            media = self._media(field, message[field], message.get("caption", ""))
            text = message.get("caption", "") or (message[field].get("emoji", "") if field == "sticker" else "")
            return InboundMessage(kind="media", text=text, media=media, payload=payload, **common)
        if isinstance(message.get("contact"), dict):
            return self._contact(message, payload, common)
        if isinstance(message.get("location"), dict):
            return self._location(message, payload, common)
        # polls, dice, games, stories, service messages (a member joined)…: kept whole.
        return InboundMessage(kind="unsupported", payload={**payload, "type": "message", "raw": message}, **common)

    def _media(self, field: str, body, caption: str) -> dict:
        if field == "photo":  # every size Telegram made, smallest first: take the largest
            sizes = [size for size in body if isinstance(size, dict)] if isinstance(body, list) else []
            body = max(sizes, key=lambda size: size.get("width", 0) * size.get("height", 0), default={})
        if not isinstance(body, dict) or not body.get("file_id"):
            raise ParseError(f"{field} without a file_id")
        mime = body.get("mime_type") or DEFAULT_MIME[field]
        if field == "sticker" and body.get("is_animated"):
            mime = "application/x-tgsticker"
        elif field == "sticker" and body.get("is_video"):
            mime = "video/webm"
        return {
            "id": body["file_id"],
            "type": field,
            "mime_type": mime,
            "filename": body.get("file_name", ""),
            "caption": caption,
            "size": body.get("file_size", 0),
        }

    def _contact(self, message: dict, payload: dict, common: dict) -> InboundMessage:
        contact = message["contact"]
        phone = _international(str(contact.get("phone_number", "")))
        name = _full_name(contact)
        user = message.get("from") if isinstance(message.get("from"), dict) else {}
        # Their own number (the "share my phone number" button): the contact gets that phone, so
        # the same person writing on WhatsApp is recognised. In a group it is one member's number.
        own = bool(contact.get("user_id")) and contact.get("user_id") == user.get("id")
        if own and payload.get("chat_type", "private") == "private":
            common["sender_phone"] = phone
        shared = {
            "name": {"formatted_name": name, **{k: contact[k] for k in ("first_name", "last_name") if k in contact}}
        }
        shared["phones"] = [{"phone": phone, "type": "MOBILE"}] if phone else []
        payload = {**payload, "contacts": [shared], "own_number": own, "user_id": contact.get("user_id")}
        if contact.get("vcard"):
            payload["vcard"] = contact["vcard"]
        return InboundMessage(kind="contacts", text=" ".join(p for p in (name, phone) if p), payload=payload, **common)

    def _location(self, message: dict, payload: dict, common: dict) -> InboundMessage:
        location = message["location"]
        venue = message.get("venue") if isinstance(message.get("venue"), dict) else {}
        place = {
            "latitude": location.get("latitude"),
            "longitude": location.get("longitude"),
            **({"name": venue["title"]} if venue.get("title") else {}),
            **({"address": venue["address"]} if venue.get("address") else {}),
        }
        text = place.get("name", "") or place.get("address", "")
        return InboundMessage(kind="location", text=text, payload={**payload, **place}, **common)

    def _parse_edit(self, message: dict) -> list:
        text = message.get("text", message.get("caption"))
        if not isinstance(text, str):
            return []  # a live location moving, or media swapped without a caption: no new text
        common = self._sender(message)
        when = moment(message.get("edit_date") or message.get("date"))
        return [InboundEdit(provider_id=common["provider_id"], text=text, timestamp=when)]

    def _parse_callback(self, channel, query: dict) -> InboundMessage:
        """A press on an inline keyboard. The keyboard's message comes with it (its buttons in
        `reply_markup`), unless it is too old to be shown, when only the chat is left."""
        menu = query.get("message") if isinstance(query.get("message"), dict) else {}
        user = query.get("from") if isinstance(query.get("from"), dict) else {}
        if "id" not in query or "id" not in user:
            raise ParseError("callback_query without id or from")
        chat = menu.get("chat") if isinstance(menu.get("chat"), dict) else {"id": user["id"], "type": "private"}
        data = str(query.get("data", ""))
        menu_id = f"{chat['id']}:{menu['message_id']}" if "message_id" in menu else ""
        option = self._option(channel, menu_id, data)
        title = _button_text(menu, data) or option.get("title", "") or data
        private = chat.get("type", "private") == "private"
        payload = {
            "reply_id": option.get("id", data),
            "title": title,
            "type": "callback_query",
            "chat_type": chat.get("type", ""),
            "username": user.get("username", ""),
            "language_code": user.get("language_code", ""),
        }
        return InboundMessage(
            provider_id=f"cb:{query['id']}",
            sender_id=str(chat["id"]),
            sender_name=_full_name(user) if private else chat.get("title", ""),
            timestamp=datetime.now(tz=UTC),  # a callback_query carries no date of its own
            kind="interactive",
            text=title,
            payload=payload,
            reply_to_provider_id=menu_id,
        )

    def _option(self, channel, menu_id: str, data: str) -> dict:
        """The option of our menu whose button carried `data`: the same id, or an id too long
        for a button, sent as its digest (`callback_data_for`)."""
        if not menu_id or channel is None or "\x00" in menu_id:
            return {}  # PostgreSQL refuses a NUL even in a query: no message of ours has one
        from apps.conversations.models import Message

        menu = Message.objects.filter(channel=channel, provider_id=menu_id).only("payload").first()
        options = (menu.payload.get("options") or []) if menu else []
        matches = [o for o in options if isinstance(o, dict) and callback_data_for(str(o.get("id", ""))) == data]
        return matches[0] if matches else {}

    def _parse_member(self, update: dict) -> list:
        member = update.get("new_chat_member") if isinstance(update.get("new_chat_member"), dict) else {}
        status = member.get("status", "")
        chat = update.get("chat") if isinstance(update.get("chat"), dict) else {}
        if status not in MEMBER_STATUSES or "id" not in chat:
            return []  # promoted, restricted…: still reachable, nothing to record
        user = update.get("from") if isinstance(update.get("from"), dict) else {}
        private = chat.get("type", "private") == "private"
        return [
            ReachabilityUpdate(
                sender_id=str(chat["id"]),
                reachable=MEMBER_STATUSES[status],
                timestamp=moment(update.get("date")),
                sender_name=_full_name(user) if private else chat.get("title", ""),
                reason=f"bot {status}",
            )
        ]

    def _parse_other(self, update: dict) -> list:
        """Updates Parley did not ask for (allowed_updates) may still come, sent before the
        webhook was set: kept as unsupported when they name a person, else dropped."""
        kind = next((key for key in update if key != "update_id"), "")
        body = update.get(kind) if isinstance(update.get(kind), dict) else {}
        chat = body.get("chat") if isinstance(body.get("chat"), dict) else body.get("from") or body.get("user")
        if not isinstance(chat, dict) or "id" not in chat:
            return []
        return [
            InboundMessage(
                provider_id=f"update:{update['update_id']}",
                sender_id=str(chat["id"]),
                sender_name=_full_name(chat) or chat.get("title", ""),
                timestamp=moment(body.get("date")),
                kind="unsupported",
                payload={"type": kind, "raw": update},
            )
        ]

    # Sending ------------------------------------------------------------------------------

    def send(self, channel, message: OutboundMessage) -> SendResult:
        """Text longer than Telegram's 4,096 characters goes as several messages, and a caption
        over 1,024 as a message after the file; the provider id is the last one's."""
        common = {"chat_id": message.recipient_id, **_reply_parameters(message.reply_to_provider_id)}
        if message.kind in ("text", "interactive"):
            return self._send_text(channel, common, message.text, self._keyboard(message))
        if message.kind == "media":
            return self._send_media(channel, common, message)
        if message.kind == "location":
            place = {key: message.payload.get(key) for key in ("latitude", "longitude")}
            return self._sent(self._call(channel, "sendLocation", json={**common, **place}))
        raise ProviderError(ErrorClass.FATAL, "unsupported_kind", f"Telegram cannot send {message.kind}")

    def _keyboard(self, message: OutboundMessage) -> dict | None:
        """One button per row, so long titles stay readable on a phone."""
        if message.kind != "interactive":
            return None
        options = message.payload.get("options") or []
        rows = [[{"text": o["title"], "callback_data": callback_data_for(str(o["id"]))}] for o in options]
        return {"inline_keyboard": rows}

    def _send_text(self, channel, common: dict, text: str, keyboard: dict | None) -> SendResult:
        parts = _chunks(text or "…", TEXT_LIMIT)
        result = None
        for number, part in enumerate(parts, start=1):
            body = {**common, "text": part}
            if number == len(parts) and keyboard:
                body["reply_markup"] = keyboard
            result = self._sent(self._call(channel, "sendMessage", json=body))
            common = {"chat_id": common["chat_id"]}  # only the first part answers a message
        return result

    def _send_media(self, channel, common: dict, message: OutboundMessage) -> SendResult:
        media = message.media or {}
        method, field = _media_method(media.get("mime_type", ""), len(media.get("content") or b""))
        caption = message.text if len(message.text) <= CAPTION_LIMIT else ""
        params = {**common, **({"caption": caption} if caption else {})}
        if media.get("content") is not None:
            # multipart/form-data: objects such as reply_parameters go as JSON strings.
            form = {key: value if isinstance(value, str) else json.dumps(value) for key, value in params.items()}
            upload = (media.get("filename") or "file", media["content"], media.get("mime_type") or None)
            data = self._call(channel, method, data=form, files={field: upload})
        else:
            reference = media.get("provider_media_id") or media.get("url", "")
            data = self._call(channel, method, json={**params, field: reference})
        result = self._sent(data)
        if message.text and not caption:
            result = self._send_text(channel, {"chat_id": common["chat_id"]}, message.text, None)
        return result

    def _sent(self, data) -> SendResult:
        try:
            sent = data["result"]
            return SendResult(provider_id=f"{sent['chat']['id']}:{sent['message_id']}")
        except (KeyError, TypeError) as error:
            raise ProviderError(ErrorClass.RETRY, "bad_response", f"unexpected answer: {data!r:.200}") from error

    def _base(self, channel) -> str:
        return (channel.settings or {}).get("base_url", DEFAULT_BASE_URL).rstrip("/")

    def _token(self, channel) -> str:
        return (channel.credentials or {}).get("bot_token", "")

    def _call(self, channel, method: str, **kwargs) -> dict:
        url = f"{self._base(channel)}/bot{self._token(channel)}/{method}"
        try:
            response = http().post(url, timeout=HTTP_TIMEOUT, **kwargs)
        except httpx.HTTPError as error:
            detail = _without_token(str(error) or type(error).__name__, self._token(channel))
            raise ProviderError(ErrorClass.RETRY, "network", detail) from error
        return self._answer(response)

    def _answer(self, response: httpx.Response) -> dict:
        """Every answer is `{"ok": true, "result": …}` or `{"ok": false, "error_code",
        "description", "parameters"?: {"retry_after"}}`."""
        try:
            data = response.json()
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        if response.is_success and data.get("ok"):
            return data
        code = data.get("error_code") if isinstance(data.get("error_code"), int) else response.status_code
        description = str(data.get("description") or response.reason_phrase or "no answer")
        if response.is_success and not data:  # a 200 that is not the Bot API (a proxy's page)
            raise ProviderError(ErrorClass.RETRY, "bad_response", f"unexpected answer: {response.text[:200]!r}")
        retry_after = (data.get("parameters") or {}).get("retry_after")
        if "file is too big" in description:  # getFile over the 20 MB a bot may download
            raise ProviderError(ErrorClass.FATAL, "too_large", description)
        raise ProviderError(
            classify(code, description),
            str(code),
            description,
            retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
        )

    # Media --------------------------------------------------------------------------------

    def fetch_media(self, channel, media: dict, max_bytes: int) -> MediaFile:
        """getFile gives a file_path, valid for an hour; the file is at /file/bot<token>/<path>.
        Bots may download no more than 20 MB, whatever the workspace allows."""
        limit = min(max_bytes, DOWNLOAD_LIMIT)
        info = self._call(channel, "getFile", json={"file_id": media["id"]}).get("result") or {}
        if int(info.get("file_size") or 0) > limit:
            raise ProviderError(ErrorClass.FATAL, "too_large", _too_large(int(info["file_size"]), limit))
        url = f"{self._base(channel)}/file/bot{self._token(channel)}/{info.get('file_path', '')}"
        try:
            content, served_as = _download(url, limit)
        except netguard.OutboundBlocked as error:
            raise ProviderError(ErrorClass.FATAL, "private_url", str(error)) from error
        except httpx.HTTPError as error:
            detail = _without_token(str(error) or type(error).__name__, self._token(channel))
            raise ProviderError(ErrorClass.RETRY, "network", detail) from error
        # A photo has no MIME type in the update (we guess JPEG); what the file server says wins.
        mime = served_as or media.get("mime_type") or "application/octet-stream"
        return MediaFile(content=content, mime_type=mime, filename=media.get("filename") or "")


def _download(url: str, limit: int) -> tuple[bytes, str]:
    """The file's bytes, and its Content-Type unless that says nothing (octet-stream)."""
    with netguard.stream("GET", url, timeout=HTTP_TIMEOUT) as stream:
        if not stream.is_success:
            code = stream.status_code
            error_class = ErrorClass.RETRY if code >= 500 else ErrorClass.FATAL
            raise ProviderError(error_class, str(code), "media download failed")
        content = read_capped(stream, limit, lambda size: _too_large(size, limit))
        served_as = stream.headers.get("Content-Type", "").split(";")[0].strip()
    return content, "" if served_as in ("", "application/octet-stream") else served_as


def _too_large(size: int, limit: int) -> str:
    cap = " (Telegram lets bots download at most 20 MB)" if limit == DOWNLOAD_LIMIT else ""
    return f"The file is {size / MB:.1f} MB, over {limit / MB:.0f} MB{cap}"


def _button_text(menu: dict, data: str) -> str:
    rows = ((menu.get("reply_markup") or {}).get("inline_keyboard")) or []
    for row in rows:
        for button in row if isinstance(row, list) else []:
            if isinstance(button, dict) and button.get("callback_data") == data:
                return str(button.get("text", ""))
    return ""


def _reply_parameters(provider_id: str) -> dict:
    """Our provider id `<chat>:<message_id>` → Telegram's reply_parameters. A choice (`cb:…`)
    is no message to quote. The reply goes out even if that message was deleted meanwhile."""
    ours = OUR_MESSAGE_ID.fullmatch(provider_id or "")
    if ours is None:
        return {}
    return {"reply_parameters": {"message_id": int(ours.group(1)), "allow_sending_without_reply": True}}


def _media_method(mime_type: str, size: int) -> tuple[str, str]:
    """The send method and its file field. Photos are re-encoded by Telegram (and limited to
    10 MB), so only the formats it shows inline go as photos; voice notes must be OGG/Opus."""
    mime = (mime_type or "").split(";")[0].lower()
    if mime in ("image/jpeg", "image/png", "image/webp") and size <= 10 * MB:
        return "sendPhoto", "photo"
    if mime == "video/mp4":
        return "sendVideo", "video"
    if mime == "audio/ogg":
        return "sendVoice", "voice"
    if mime in ("audio/mpeg", "audio/mp3", "audio/mp4", "audio/m4a", "audio/x-m4a"):
        return "sendAudio", "audio"
    return "sendDocument", "document"


def _chunks(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at a line break or space where there is one."""
    parts = []
    while len(text) > limit:
        cut = max(text.rfind("\n", 0, limit), text.rfind(" ", 0, limit))
        cut = cut if cut > limit // 2 else limit
        parts.append(text[:cut])
        text = text[cut:].lstrip("\n ")
    return [*parts, text] if text or not parts else parts


def _without_token(detail: str, token: str) -> str:
    """The token is part of every Bot API URL; keep it out of what operators see."""
    return detail.replace(token, "<token>") if token else detail
