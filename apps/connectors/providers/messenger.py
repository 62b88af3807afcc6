"""Facebook Messenger (Messenger Platform, Graph API): page webhooks in, /{page-id}/messages out.

Credentials: page_access_token, app_secret, page_id.
Settings: base_url (default https://graph.facebook.com), api_version (default v21.0).

Instagram Direct works through the same platform with a different webhook `object`; its
connector is a subclass in instagram.py. The webhook carries no name, phone or email: only the
Page-scoped id (PSID). A name needs a User Profile API call per person, which Parley skips.
"""

import hashlib
import json
import mimetypes
import posixpath
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx

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
    SendResult,
    StatusUpdate,
    json_body,
    moment,
    network_error,
    read_capped,
)
from apps.connectors.meta import MetaWebhooks
from apps.connectors.session import http
from apps.core import netguard

MB = 1024 * 1024
# Attachment types Meta sends in `message.attachments` whose `payload.url` is a file on Meta's
# CDN. Instagram adds shared posts and reels and story mentions, whose payload also names the
# post (title, ids): that is kept on the message. `fallback` (a shared link), `template` and
# `product` are not files.
PLAIN_FILES = ("image", "video", "audio", "file")
SHARED_FILES = ("reel", "ig_reel", "ig_post", "share", "story_mention")
# A first guess at the file's type from the attachment's; the download's Content-Type decides.
GUESSED_MIME = {
    **dict.fromkeys(("image", "share", "story_mention", "ig_post"), "image/jpeg"),
    **dict.fromkeys(("video", "reel", "ig_reel"), "video/mp4"),
    "audio": "audio/mpeg",
}
QUICK_REPLIES_MAX = 13  # Messenger Platform, "Quick Replies": up to 13 buttons
QUICK_REPLY_TITLE_MAX = 20  # Meta refuses or cuts longer ones; cut here, so it always goes out
QUICK_REPLY_PAYLOAD_MAX = 1000

# Send API error codes (developers.facebook.com/docs/messenger-platform/error-codes), by what
# Parley should do. Throttling: 4 (app), 17 (user), 32 (page), 613 (calls), 80006 (Messenger
# page), 9 (too many actions); 1200 "Temporary send message failure"; 2 "Service unavailable".
RETRY_CODES = {"2", "4", "9", "17", "32", "613", "1200", "80006"}
# Code 10 "This message is sent outside of allowed window": 2018278 (24 h rule), 2018065 (the
# old subscription-messaging permission), 2534022 (Instagram's wording of the same).
WINDOW_SUBCODES = {"2018278", "2018065", "2534022"}
# The person cannot get messages from this Page (blocked it, left, deactivated): 551 and
# 200/1545041 "This person isn't available right now", 10/2018108 "This person isn't receiving
# messages from you right now", 100/2018001 "No matching user found".
STOP_ERRORS = {("200", "1545041"), ("10", "2018108"), ("100", "2018001")}
CREDENTIAL_CODES = {"10", "190", "200"}  # a bad or expired token, a missing permission


def classify(code: str, subcode: str = "", http_status: int | None = None) -> ErrorClass:
    if code in RETRY_CODES:
        return ErrorClass.RETRY
    if code == "10" and subcode in WINDOW_SUBCODES:
        return ErrorClass.NEEDS_TEMPLATE
    if code == "551" or (code, subcode) in STOP_ERRORS:
        return ErrorClass.STOP_RECIPIENT
    if code in CREDENTIAL_CODES:
        return ErrorClass.CREDENTIALS
    if http_status is not None and (http_status >= 500 or http_status == 429):
        return ErrorClass.RETRY
    return ErrorClass.FATAL


def _stable_id(prefix: str, *parts) -> str:
    """An id for events Meta gives none (a postback from an old client, a reaction), the same on
    every redelivery so the pipeline's dedupe holds."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).hexdigest()[:32]
    return f"{prefix}.{digest}"


class MessengerConnector(MetaWebhooks, Connector):
    kind = "messenger"
    webhook_object = "page"
    reply_window_hours = 24
    # A person (not a bot) may answer for 7 days with the HUMAN_AGENT tag.
    human_reply_window_hours = 168
    rate_limit_codes = frozenset({"4", "9", "17", "32", "613", "80006", "429"})  # app, page, user limits
    text_limit = 2000  # Send API: "text must be UTF-8 and has a 2000 character limit"
    text_limit_unit = "characters"
    # Send API attachments, "up to 25MB" for every type.
    size_limits = {"image": 25 * MB, "video": 25 * MB, "audio": 25 * MB, "document": 25 * MB}

    # Requests: the handshake and signature are Meta's (apps/connectors/meta.py) ----------

    # Parsing ------------------------------------------------------------------------------

    def parse(self, channel, raw_body: bytes, headers=None) -> list:
        envelope = json_body(raw_body)
        if not isinstance(envelope, dict) or envelope.get("object") != self.webhook_object:
            raise ParseError(f"not a {self.webhook_object!r} webhook")
        entries = envelope.get("entry")
        if not isinstance(entries, list):
            raise ParseError("entry is not a list")
        events = []
        for entry in entries:
            # `standby` items belong to another app holding the thread (handover protocol).
            for item in (entry.get("messaging") or []) if isinstance(entry, dict) else []:
                events.extend(self._parse_item(item))
        # A status naming a message Parley has not recorded makes the pipeline retry the whole
        # delivery; the customer's messages and the watermarks go first so they are never held
        # back by it.
        return sorted(events, key=lambda event: isinstance(event, StatusUpdate) and not event.watermark)

    def _parse_item(self, item) -> list:
        try:
            sender = str(item["sender"]["id"])
        except (KeyError, TypeError) as error:
            raise ParseError(f"messaging item without sender: {error}") from error
        timestamp = moment(item.get("timestamp"), per_second=1000)
        if isinstance(item.get("message"), dict):
            return self._parse_message(item["message"], sender, timestamp)
        if isinstance(item.get("postback"), dict):
            return [self._parse_postback(item["postback"], sender, item.get("timestamp"), timestamp)]
        if isinstance(item.get("reaction"), dict):
            return [self._parse_reaction(item["reaction"], sender, item.get("timestamp"), timestamp)]
        if isinstance(item.get("message_edit"), dict):
            return [self._parse_edit(item["message_edit"], timestamp)]
        if isinstance(item.get("delivery"), dict):
            return self._parse_delivery(item["delivery"], sender, timestamp)
        if isinstance(item.get("read"), dict):
            return [self._parse_read(item["read"], sender, timestamp)]
        return [self._unsupported(item, sender, timestamp)]

    def _unsupported(self, item: dict, sender: str, timestamp: datetime) -> InboundMessage:
        """Optins, referrals, handovers and whatever Meta adds later: kept whole, never a crash."""
        kind = next((key for key in item if key not in ("sender", "recipient", "timestamp")), "")
        return InboundMessage(
            provider_id=_stable_id("item", sender, item.get("timestamp"), json.dumps(item, sort_keys=True)),
            sender_id=sender,
            timestamp=timestamp,
            kind="unsupported",
            payload={"type": kind, "raw": item},
        )

    def _parse_message(self, message: dict, sender: str, timestamp: datetime) -> list:
        if message.get("is_echo"):
            return []  # our own sends (and the Page inbox's) coming back: they are not the customer's
        if not message.get("mid"):
            raise ParseError("message without mid")
        common = {
            "provider_id": str(message["mid"]),
            "sender_id": sender,
            "timestamp": timestamp,
            "reply_to_provider_id": str((message.get("reply_to") or {}).get("mid") or ""),
        }
        text = message.get("text") or ""
        if message.get("is_deleted"):
            # Instagram: the customer unsent it. Shown as an edit to nothing, the original kept.
            deleted = {"deleted": True}
            return [InboundEdit(provider_id=common["provider_id"], text="", timestamp=timestamp, payload=deleted)]
        if message.get("is_unsupported"):
            return [InboundMessage(kind="unsupported", payload={"type": "unsupported", "raw": message}, **common)]
        quick_reply = message.get("quick_reply")
        if isinstance(quick_reply, dict):
            payload = {"reply_id": str(quick_reply.get("payload", "")), "title": text, "type": "quick_reply"}
            return [InboundMessage(kind="interactive", text=text, payload=payload, **common)]
        attachments = [a for a in message.get("attachments") or [] if isinstance(a, dict)]
        if attachments:
            return [self._parse_attachments(attachments, text, common, message)]
        return [InboundMessage(kind="text", text=text, **common)]

    def _parse_attachments(self, attachments: list, text: str, common: dict, message: dict) -> InboundMessage:
        location = next((a for a in attachments if a.get("type") == "location"), None)
        if location is not None:
            return self._parse_location(location, common)
        downloadable = [a for a in attachments if a.get("type") in PLAIN_FILES + SHARED_FILES and _url(a)]
        if not downloadable:
            unsupported = {"type": "attachment", "raw": message}
            return InboundMessage(kind="unsupported", text=text, payload=unsupported, **common)
        files = [self._media(attachment) for attachment in downloadable]
        shared = [{"type": a["type"], **a["payload"]} for a in downloadable if a["type"] in SHARED_FILES]
        return InboundMessage(
            kind="media",
            text=text or files[0]["caption"],
            media=files[0],
            extra_media=tuple(files[1:]),
            payload={"shared": shared} if shared else {},
            **common,
        )

    def _media(self, attachment: dict) -> dict:
        """The CDN URL is the media id: Meta gives no other handle, and the URL needs no token."""
        url, kind = _url(attachment), attachment.get("type", "")
        name = posixpath.basename(urlsplit(url).path)
        guessed = mimetypes.guess_type(name)[0] if "." in name else None
        mime = guessed or GUESSED_MIME.get(kind)
        payload = attachment.get("payload") or {}
        return {
            "id": url,
            "type": kind,
            "mime_type": mime or "application/octet-stream",
            "filename": name if guessed else "",
            "caption": str(payload.get("title") or ""),
        }

    def _parse_location(self, attachment: dict, common: dict) -> InboundMessage:
        coordinates = (attachment.get("payload") or {}).get("coordinates") or {}
        title = attachment.get("title") or ""
        payload = {
            "latitude": coordinates.get("lat"),
            "longitude": coordinates.get("long"),
            "name": title,
            "url": attachment.get("url") or "",
        }
        return InboundMessage(kind="location", text=title, payload=payload, **common)

    def _parse_postback(self, postback: dict, sender: str, raw_time, timestamp: datetime) -> InboundMessage:
        title, value = str(postback.get("title") or ""), str(postback.get("payload") or "")
        # Older clients send postbacks without `mid`.
        provider_id = str(postback.get("mid") or _stable_id("postback", sender, raw_time, value))
        payload = {"reply_id": value, "title": title, "type": "postback"}
        if postback.get("referral"):
            payload["referral"] = postback["referral"]
        return InboundMessage(
            provider_id=provider_id,
            sender_id=sender,
            timestamp=timestamp,
            kind="interactive",
            text=title,
            payload=payload,
        )

    def _parse_reaction(self, reaction: dict, sender: str, raw_time, timestamp: datetime) -> InboundMessage:
        emoji, action = str(reaction.get("emoji") or ""), str(reaction.get("action") or "react")
        payload = {
            "emoji": emoji,
            "message_id": str(reaction.get("mid") or ""),
            "action": action,
            "reaction": str(reaction.get("reaction") or ""),
        }
        return InboundMessage(
            provider_id=_stable_id("reaction", sender, raw_time, payload["message_id"], action, emoji),
            sender_id=sender,
            timestamp=timestamp,
            kind="reaction",
            text=emoji,
            payload=payload,
        )

    def _parse_edit(self, edit: dict, timestamp: datetime) -> InboundEdit:
        if not edit.get("mid"):
            raise ParseError("message_edit without mid")
        return InboundEdit(
            provider_id=str(edit["mid"]),
            text=str(edit.get("text") or ""),
            timestamp=timestamp,
            payload={"num_edit": edit.get("num_edit")},
        )

    def _parse_delivery(self, delivery: dict, sender: str, timestamp: datetime) -> list:
        updates = [
            StatusUpdate(provider_id=str(mid), state="delivered", timestamp=timestamp, recipient_id=sender)
            for mid in delivery.get("mids") or []
        ]
        if delivery.get("watermark"):
            watermark = moment(delivery["watermark"], per_second=1000)
            updates.append(
                StatusUpdate(
                    provider_id="", state="delivered", timestamp=timestamp, recipient_id=sender, watermark=watermark
                )
            )
        return updates

    def _parse_read(self, read: dict, sender: str, timestamp: datetime) -> StatusUpdate:
        # Messenger says "read up to this moment"; Instagram's messaging_seen names the last
        # message seen instead, so the event's own time bounds everything sent before it.
        watermark = moment(read["watermark"], per_second=1000) if read.get("watermark") else timestamp
        return StatusUpdate(
            provider_id="", state="read", timestamp=timestamp, recipient_id=sender, watermark=watermark
        )

    # Sending ------------------------------------------------------------------------------

    def _url(self, channel, path: str) -> str:
        base = channel.settings.get("base_url", "https://graph.facebook.com").rstrip("/")
        version = channel.settings.get("api_version", "v21.0")
        return f"{base}/{version}/{path.lstrip('/')}"

    def _headers(self, channel) -> dict:
        # Meta takes the token as `access_token` or as a bearer; a header keeps it out of URLs
        # that proxies and error reports log.
        return {"Authorization": f"Bearer {channel.credentials.get('page_access_token', '')}"}

    def send(self, channel, message: OutboundMessage) -> SendResult:
        envelope = {"recipient": {"id": message.recipient_id}, **self.messaging_type(message)}
        if message.reply_to_provider_id:
            envelope["reply_to"] = {"mid": message.reply_to_provider_id}
        if message.kind == "media":
            return self._send_media(channel, message, envelope)
        return self._send_json(channel, {**envelope, "message": self.message_for(message)})

    def messaging_type(self, message: OutboundMessage) -> dict:
        """RESPONSE inside 24 h of the customer's last message; after that only a person may
        answer, for 7 days, under the HUMAN_AGENT tag (Messenger Platform policy)."""
        last = message.context.get("last_inbound_at")
        age = datetime.now(tz=UTC) - last if last else None
        if age is not None and age < timedelta(hours=self.reply_window_hours):
            return {"messaging_type": "RESPONSE"}
        if (
            age is not None
            and message.context.get("sender_kind") == "agent"
            and age < timedelta(hours=self.human_reply_window_hours)
        ):
            return {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
        raise ProviderError(
            ErrorClass.NEEDS_TEMPLATE,
            "window_closed",
            f"The customer last wrote more than {self.reply_window_hours} hours ago; only a person may "
            f"answer, within {self.human_reply_window_hours // 24} days, until they write again.",
        )

    def message_for(self, message: OutboundMessage) -> dict:
        if message.kind == "text":
            return {"text": self._checked_text(message.text)}
        if message.kind == "interactive":
            return self._quick_replies(message)
        raise ProviderError(ErrorClass.FATAL, "unsupported_kind", f"{self.kind} cannot send {message.kind}")

    def _checked_text(self, text: str) -> str:
        if not text.strip():
            raise ProviderError(ErrorClass.FATAL, "empty_message", "A message needs text.")
        length = len(text.encode()) if self.text_limit_unit == "bytes" else len(text)
        if length > self.text_limit:
            raise ProviderError(
                ErrorClass.FATAL, "too_long", f"{self.kind} accepts at most {self.text_limit} {self.text_limit_unit}."
            )
        return text

    def _quick_replies(self, message: OutboundMessage) -> dict:
        """Options become quick replies: the customer's tap comes back as a message whose
        `quick_reply.payload` is the option's id."""
        options = message.payload.get("options") or []
        replies = [
            {
                "content_type": "text",
                "title": str(option["title"])[:QUICK_REPLY_TITLE_MAX],
                "payload": str(option["id"])[:QUICK_REPLY_PAYLOAD_MAX],
            }
            for option in options[:QUICK_REPLIES_MAX]
        ]
        text = message.text or message.payload.get("button") or "…"
        return {"text": self._checked_text(text), "quick_replies": replies}

    def _send_media(self, channel, message: OutboundMessage, envelope: dict) -> SendResult:
        """Messenger attachments carry no caption: the text goes first as its own message, so
        the file lands under it as in WhatsApp's caption."""
        if message.text.strip():
            self._send_json(channel, {**envelope, "message": {"text": self._checked_text(message.text)}})
            envelope = {key: value for key, value in envelope.items() if key != "reply_to"}
        media = message.media or {}
        family = (media.get("mime_type") or "").split("/")[0]
        attachment = {"type": family if family in ("image", "video", "audio") else "file"}
        if media.get("content") is not None:
            attachment["payload"] = {"is_reusable": True}
            return self._send_upload(channel, envelope, attachment, media)
        if media.get("provider_media_id"):
            attachment["payload"] = {"attachment_id": media["provider_media_id"]}
        else:
            attachment["payload"] = {"url": media.get("url", ""), "is_reusable": True}
        return self._send_json(channel, {**envelope, "message": {"attachment": attachment}})

    def _send_upload(self, channel, envelope: dict, attachment: dict, media: dict) -> SendResult:
        """Meta's upload-and-send: the file as multipart `filedata`, the rest as JSON fields."""
        fields = {key: json.dumps(value) if isinstance(value, dict) else value for key, value in envelope.items()}
        fields["message"] = json.dumps({"attachment": attachment})
        filedata = (
            media.get("filename") or "file",
            media["content"],
            media.get("mime_type") or "application/octet-stream",
        )
        return self._sent(self._post(channel, data=fields, files={"filedata": filedata}))

    def _send_json(self, channel, body: dict) -> SendResult:
        return self._sent(self._post(channel, json=body))

    def _sent(self, data: dict) -> SendResult:
        if not data.get("message_id"):
            raise ProviderError(ErrorClass.RETRY, "bad_response", f"unexpected answer: {data!r:.200}")
        return SendResult(provider_id=str(data["message_id"]))

    def _post(self, channel, **kwargs) -> dict:
        path = f"{channel.credentials.get('page_id', '')}/messages"
        try:
            response = http().post(
                self._url(channel, path), headers=self._headers(channel), timeout=HTTP_TIMEOUT, **kwargs
            )
        except httpx.HTTPError as error:
            raise network_error(error) from error
        return self._answer(response)

    def _answer(self, response: httpx.Response) -> dict:
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.is_success and isinstance(data, dict):
            return data
        error = data.get("error") if isinstance(data, dict) else None
        error = error if isinstance(error, dict) else {}
        code = str(error.get("code", response.status_code))
        subcode = str(error.get("error_subcode") or "")
        detail = error.get("error_user_msg") or error.get("message") or response.reason_phrase
        retry_after = (
            float(response.headers["Retry-After"]) if response.headers.get("Retry-After", "").isdigit() else None
        )
        raise ProviderError(
            classify(code, subcode, response.status_code),
            f"{code}/{subcode}" if subcode else code,
            str(detail),
            retry_after=retry_after,
        )

    # Media --------------------------------------------------------------------------------

    def fetch_media(self, channel, media: dict, max_bytes: int) -> MediaFile:
        """The attachment URL is a signed CDN link: fetched as is, without the Page token (it
        would leak to the CDN for nothing). Links expire, so the pipeline fetches at once."""
        try:
            with netguard.stream("GET", media["id"], timeout=HTTP_TIMEOUT, follow_redirects=True) as stream:
                if not stream.is_success:
                    raise ProviderError(
                        classify("", "", stream.status_code), str(stream.status_code), "attachment download failed"
                    )
                content = read_capped(stream, max_bytes)
                served = (stream.headers.get("Content-Type") or "").split(";")[0].strip()
        except netguard.OutboundBlocked as error:
            raise ProviderError(ErrorClass.FATAL, "private_url", str(error)) from error
        except httpx.HTTPError as error:
            raise network_error(error) from error
        mime = served if served and served != "application/octet-stream" else media.get("mime_type")
        return MediaFile(
            content=content, mime_type=mime or "application/octet-stream", filename=media.get("filename") or ""
        )


def _url(attachment: dict) -> str:
    payload = attachment.get("payload")
    return str(payload.get("url") or "") if isinstance(payload, dict) else ""
