"""WeChat Official Account (公众号) in plaintext mode: signed XML pushes in, the customer-service
message API out.

Credentials: app_id, app_secret, token (the Token of the account's server configuration; the
channel's verify token when empty).
Settings: base_url (default https://api.weixin.qq.com).

WeChat signs the URL, not the body: every request carries `signature` = SHA-1 of the sorted
[token, timestamp, nonce] joined, with `timestamp` and `nonce` beside it in the query. Whoever
saw one signed URL could attach any body to it, so a pair is accepted once and only while fresh.

Replies are customer-service messages (`/cgi-bin/message/custom/send`), not passive replies in
the push's answer: the push is acknowledged with `success` at once and an operator answers later.
WeChat allows them for 48 hours after the customer's last message, a few per message (see
`replies_per_window`); the API returns no message id, so Parley makes one.
"""

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import uuid
from datetime import UTC, datetime
from xml.etree import ElementTree

import httpx
import redis
from django.http import HttpResponse

from apps.connectors.base import (
    HTTP_TIMEOUT,
    Connector,
    ErrorClass,
    InboundMessage,
    MediaFile,
    OutboundMessage,
    ParseError,
    ProviderError,
    ReachabilityUpdate,
    SendResult,
    network_error,
    read_capped,
)
from apps.connectors.replay import WebhookRefused, first_delivery, forget_delivery, replayed
from apps.connectors.session import http
from apps.core.redis import get_redis, key

logger = logging.getLogger(__name__)

MB = 1024 * 1024
DEFAULT_BASE_URL = "https://api.weixin.qq.com"
MAX_CLOCK_SKEW = 300  # seconds a signed timestamp may be away from now
REPLAY_SCHEME = "wechat"  # the (nonce, timestamp) pairs seen, apps/connectors/replay.py
TOKEN_EARLY_REFRESH = 300  # refresh the ~2 h access token this long before WeChat expires it
TOKEN_LOCK_SECONDS = 10  # longer than one token request may take (HTTP_TIMEOUT)
TOKEN_WAIT_SECONDS = 5.0  # how long a worker waits for another one's refresh

# Expat expands internal entities (the "billion laughs"); WeChat never sends a DTD, so a body
# that declares one is refused before it reaches the parser.
DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)

# errcodes meaning "this access token is no good": drop it, fetch another, try once more.
TOKEN_ERRORS = frozenset({"40001", "40014", "42001"})
ERROR_CLASSES = {
    "45015": ErrorClass.NEEDS_TEMPLATE,  # response out of time limit: the 48 h window has passed
    "45047": ErrorClass.FATAL,  # out of response count limit: the window's quota is used up
    "43004": ErrorClass.STOP_RECIPIENT,  # require subscribe: the customer unfollowed
    "40003": ErrorClass.STOP_RECIPIENT,  # invalid openid: not a follower of this account
    "-1": ErrorClass.RETRY,  # system busy
    "45009": ErrorClass.RETRY,  # api freq out of limit (daily call quota)
    **dict.fromkeys(TOKEN_ERRORS, ErrorClass.CREDENTIALS),  # still refused after a fresh token
    "40013": ErrorClass.CREDENTIALS,  # invalid appid
    "40125": ErrorClass.CREDENTIALS,  # invalid appsecret
    "40164": ErrorClass.CREDENTIALS,  # this server's IP is not on the account's whitelist
}
OPERATOR_DETAILS = {
    "45015": "The customer last wrote more than 48 hours ago, so WeChat refuses customer-service "
    "messages until they write again.",
    "45047": "WeChat's customer-service quota for this customer is used up: only {quota} messages may "
    "follow each customer message within 48 hours. Wait for the customer to write again.",
    "43004": "The customer no longer follows this Official Account.",
    "40003": "WeChat does not know this customer (OpenID) on this Official Account.",
    "40001": "WeChat refused a freshly fetched access token: check the channel's app id and secret.",
    "40013": "WeChat refused the channel's app id: check the credentials.",
    "40125": "WeChat refused the channel's app secret: check the credentials.",
    "40164": "WeChat refuses API calls from this server's IP address: add it to the Official Account's IP whitelist.",
}
OPERATOR_DETAILS["40014"] = OPERATOR_DETAILS["42001"] = OPERATOR_DETAILS["40001"]

# What WeChat accepts as temporary material for each customer-service message type (its
# "新增临时素材" page: images PNG/JPEG/GIF, voice AMR/MP3, video MP4). Anything else has no
# message type at all: WeChat's customer-service API has no generic file.
MEDIA_TYPES = {
    "image/jpeg": "image",
    "image/jpg": "image",
    "image/png": "image",
    "image/gif": "image",
    "audio/amr": "voice",
    "audio/mpeg": "voice",
    "audio/mp3": "voice",
    "video/mp4": "video",
}
VOICE_FORMATS = {"amr": "audio/amr", "speex": "audio/speex", "mp3": "audio/mpeg"}
# Pushes that are not something a person said: opening a menu link, and the periodic location
# report of a customer who allowed it (it would flood the inbox); and reports on our own mass
# and template sends, which Parley does not make.
IGNORED_EVENTS = frozenset({"view", "location", "templatesendjobfinish", "masssendjobfinish"})
# Compare-and-delete: forget a token only if no other worker has replaced it meanwhile.
_DELETE_IF_EQUAL = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def wechat_signature(token: str, timestamp: str, nonce: str) -> str:
    return hashlib.sha1("".join(sorted((token, timestamp, nonce))).encode()).hexdigest()  # noqa: S324 (WeChat's scheme)


def _when(value: str) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError) as error:
        raise ParseError(f"CreateTime is not a timestamp: {value!r}") from error


class WeChatConnector(Connector):
    kind = "wechat"
    reply_window_hours = 48
    rate_limit_codes = frozenset({"45009", "429"})  # api freq out of limit
    # "用户发送消息: 5条, 48小时" in the sendCustomMessage reference (developers.weixin.qq.com,
    # rules in force since June 2023; before that about 20 were allowed).
    replies_per_window = 5
    # Our menus go out as WeChat's msgmenu; a customer who types "2" instead also answers it.
    numbered_menus = True
    # WeChat's temporary-material limits; other files never reach WeChat (their name is sent),
    # so "document" is only what Parley keeps.
    size_limits = {"image": 10 * MB, "audio": 2 * MB, "video": 10 * MB, "document": 20 * MB}
    max_webhook_bytes = 256 * 1024  # a push is one small XML document

    # Requests -----------------------------------------------------------------------------

    def handshake(self, channel, request) -> HttpResponse:
        if not self._signed(channel, request.GET):
            return HttpResponse("signature mismatch", status=403, content_type="text/plain")
        try:
            _fresh_once(channel, request.GET)
        except WebhookRefused as refused:
            return HttpResponse(refused.detail, status=403, content_type="text/plain")
        return HttpResponse(request.GET.get("echostr", ""), content_type="text/plain")

    def verify(self, channel, raw_body: bytes, headers, query=None) -> bool:
        """Signed by the account's token, fresh, and the first use of its (nonce, timestamp);
        raises WebhookRefused for a stale or replayed one."""
        if query is None or not self._signed(channel, query):
            return False
        _fresh_once(channel, query)
        return True

    def forget(self, channel, raw_body: bytes, headers, query=None) -> None:
        if query is not None:
            forget_delivery(channel, REPLAY_SCHEME, _signed_moment(query))

    def acknowledge(self, channel=None, raw_body: bytes = b"") -> HttpResponse:
        # Anything else makes WeChat tell the customer the account "cannot serve them right now".
        return HttpResponse("success", content_type="text/plain")

    def activate(self, channel) -> None:
        """Checks the app id and secret when the channel is saved (they may have just changed):
        a wrong one is shown to the supervisor now rather than on the first reply."""
        try:
            get_redis().delete(_token_key(channel))
        except redis.RedisError as error:
            raise ProviderError(ErrorClass.RETRY, "redis", f"the token cache is unavailable: {error}") from error
        access_token(channel, self._fetch_token)

    def _signed(self, channel, params) -> bool:
        signature, timestamp, nonce = (params.get(name, "") for name in ("signature", "timestamp", "nonce"))
        token = channel.credentials.get("token") or channel.verify_token
        if not (token and signature and timestamp and nonce):
            return False
        return hmac.compare_digest(signature.lower(), wechat_signature(token, timestamp, nonce))

    # Parsing ------------------------------------------------------------------------------

    def parse(self, channel, raw_body: bytes, headers=None) -> list:
        fields = _xml_fields(raw_body)
        if fields["MsgType"] == "event":
            event = _event(fields)
        else:
            builder = MESSAGE_BUILDERS.get(fields["MsgType"], _unsupported)
            event = builder(fields, _common(fields))
        return [event] if event is not None else []

    # Sending ------------------------------------------------------------------------------

    def send(self, channel, message: OutboundMessage) -> SendResult:
        if message.kind == "text":
            self._post_message(channel, message.recipient_id, "text", {"content": message.text})
        elif message.kind == "media":
            self._send_media(channel, message)
        elif message.kind == "interactive":
            self._post_message(channel, message.recipient_id, "msgmenu", _msgmenu(message))
        else:
            raise ProviderError(ErrorClass.FATAL, "unsupported_kind", f"WeChat cannot send {message.kind} messages.")
        # The customer-service API answers only {"errcode": 0}: there is no id to keep.
        return SendResult(provider_id=f"wx-{uuid.uuid4().hex}")

    def _send_media(self, channel, message: OutboundMessage) -> None:
        media = message.media or {}
        msgtype = MEDIA_TYPES.get((media.get("mime_type") or "").split(";")[0].lower())
        if msgtype is None or (media.get("content") is None and not media.get("provider_media_id")):
            # No file message type, and WeChat cannot fetch a link: the customer gets its name.
            lines = (message.text, f"📎 {media.get('filename') or 'file'} {media.get('url', '')}".strip())
            self._post_message(channel, message.recipient_id, "text", {"content": "\n".join(filter(None, lines))})
            return
        media_id = media.get("provider_media_id") or self._upload(channel, msgtype, media)
        body = {"media_id": media_id}
        if msgtype == "video":
            body.update(title=media.get("filename", ""), description=message.text)
        self._post_message(channel, message.recipient_id, msgtype, body)
        if message.text and msgtype != "video":
            self._send_caption(channel, message, msgtype)

    def _send_caption(self, channel, message: OutboundMessage, msgtype: str) -> None:
        """Images and voice have no caption in WeChat: it follows as a text. Were it retried
        after a failure, the picture would go twice, so the operator is told instead."""
        try:
            self._post_message(channel, message.recipient_id, "text", {"content": message.text})
        except ProviderError as error:
            detail = f"The {msgtype} was delivered but its caption was not: {error.detail}"
            raise ProviderError(ErrorClass.FATAL, "caption_not_sent", detail) from error

    def _upload(self, channel, msgtype: str, media: dict) -> str:
        files = {"media": (media.get("filename") or "file", media["content"], media.get("mime_type"))}
        data = self._json(self._call(channel, "POST", "/cgi-bin/media/upload", params={"type": msgtype}, files=files))
        if not data.get("media_id"):
            raise ProviderError(ErrorClass.RETRY, "bad_response", f"upload answered {data!r:.200}")
        return data["media_id"]

    def _post_message(self, channel, openid: str, msgtype: str, content: dict) -> None:
        body = {"touser": openid, "msgtype": msgtype, msgtype: content}
        # Sent as UTF-8, not \u escapes: some WeChat APIs show escaped Chinese literally.
        raw = json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        self._json(self._call(channel, "POST", "/cgi-bin/message/custom/send", content=raw, headers=headers))

    # Media --------------------------------------------------------------------------------

    def fetch_media(self, channel, media: dict, max_bytes: int) -> MediaFile:
        """GET /cgi-bin/media/get answers the file itself, JSON with an errcode, or (for video)
        JSON with a `video_url` to download."""
        response = self._call(channel, "GET", "/cgi-bin/media/get", params={"media_id": media["id"]})
        data = _json_or_none(response)
        if data is not None and data.get("video_url"):
            return _download(data["video_url"], media, max_bytes)
        if data is not None or not response.is_success:
            self._json(response)  # raises the classified error
        if len(response.content) > max_bytes:
            raise ProviderError(ErrorClass.FATAL, "too_large", f"{len(response.content)} bytes")
        return _media_file(response, response.content, media)

    # WeChat API ---------------------------------------------------------------------------

    def _call(self, channel, method: str, path: str, *, params=None, **kwargs) -> httpx.Response:
        """One API call with the shared access token; a token WeChat calls invalid or expired
        (another server refreshed it, or it lapsed early) is dropped and the call made once more."""
        token = access_token(channel, self._fetch_token)
        response = _request(channel, method, path, {**(params or {}), "access_token": token}, **kwargs)
        if str((_json_or_none(response) or {}).get("errcode", "")) in TOKEN_ERRORS:
            access_token_forget(channel, token)
            token = access_token(channel, self._fetch_token)
            response = _request(channel, method, path, {**(params or {}), "access_token": token}, **kwargs)
        return response

    def _fetch_token(self, channel) -> tuple[str, int]:
        credentials = channel.credentials
        params = {
            "grant_type": "client_credential",
            "appid": credentials.get("app_id", ""),
            "secret": credentials.get("app_secret", ""),
        }
        data = self._json(_request(channel, "GET", "/cgi-bin/token", params))
        if not data.get("access_token"):
            raise ProviderError(ErrorClass.RETRY, "bad_response", f"token answered {data!r:.200}")
        return data["access_token"], int(data.get("expires_in") or 7200)

    def _json(self, response: httpx.Response) -> dict:
        """The answer's JSON, or the ProviderError its errcode (or HTTP status) stands for."""
        if response.status_code >= 500:
            raise ProviderError(ErrorClass.RETRY, str(response.status_code), "WeChat is unavailable; will retry.")
        data = _json_or_none(response)
        if data is None:
            raise ProviderError(ErrorClass.FATAL, str(response.status_code), f"unexpected answer {response.text:.200}")
        code = str(data.get("errcode", 0))
        if code == "0":
            return data
        errmsg = str(data.get("errmsg", ""))
        detail = OPERATOR_DETAILS.get(code, "").format(quota=self.replies_per_window)
        detail = f"{detail} (WeChat: {errmsg})" if detail else errmsg or f"WeChat error {code}"
        raise ProviderError(ERROR_CLASSES.get(code, ErrorClass.FATAL), code, detail)


# Signatures and replays --------------------------------------------------------------------


def _recent(timestamp: str) -> bool:
    try:
        return abs(time.time() - int(timestamp)) <= MAX_CLOCK_SKEW
    except ValueError:
        return False


def _signed_moment(params) -> str:
    return f"{params.get('nonce', '')}:{params.get('timestamp', '')}"


def _fresh_once(channel, params) -> None:
    """Refuses (WebhookRefused) a signed URL whose timestamp is stale, or whose (nonce,
    timestamp) was used already: a copied URL cannot carry a second body.

    A retried push is still safe. WeChat re-sends a push it got no answer to within 5 s; if it
    signs the new attempt afresh, it passes here and the pipeline keeps one message by MsgId
    (FromUserName:CreateTime:Event for events). If it re-sent the very same URL, the first copy
    was stored already, so refusing the copy loses nothing; and when the first copy was not kept
    (the database was down), the webhook forgets it (`forget`) so the retry is taken.

    Remembered until the timestamp can no longer pass `_recent` (up to MAX_CLOCK_SKEW ahead of now)."""
    if not _recent(params.get("timestamp", "")):
        raise WebhookRefused(
            "bad_signature", f"The signed timestamp is more than {MAX_CLOCK_SKEW} seconds away from Parley's clock."
        )
    if not first_delivery(channel, REPLAY_SCHEME, _signed_moment(params), seconds=2 * MAX_CLOCK_SKEW):
        raise replayed("This signed URL (timestamp and nonce) was used already; WeChat signs every push afresh.")


# Access tokens -----------------------------------------------------------------------------
# WeChat issues one access token per app id and each new one retires the last (after a short
# overlap), so every worker must share one: it lives in Redis, keyed by app id, and only the
# worker holding the lock fetches a new one while the others wait for it.


def _token_key(channel) -> str:
    return key("wechat", "access-token", channel.credentials.get("app_id", ""))


def access_token(channel, fetch) -> str:
    try:
        return _access_token(channel, fetch, get_redis())
    except redis.RedisError as error:
        raise ProviderError(ErrorClass.RETRY, "redis", f"the token cache is unavailable: {error}") from error


def _access_token(channel, fetch, client) -> str:
    name, lock = _token_key(channel), _token_key(channel) + ":lock"
    deadline = time.monotonic() + TOKEN_WAIT_SECONDS
    while True:
        cached = client.get(name)
        if cached:
            return cached.decode()
        holder = secrets.token_hex(8)
        if client.set(lock, holder, nx=True, ex=TOKEN_LOCK_SECONDS):
            try:
                cached = client.get(name)  # stored by the worker whose lock we just followed?
                return cached.decode() if cached else _refresh(client, name, channel, fetch)
            finally:
                client.eval(_DELETE_IF_EQUAL, 1, lock, holder)
        if time.monotonic() > deadline:
            raise ProviderError(ErrorClass.RETRY, "token_busy", "Another worker is fetching WeChat's access token.")
        time.sleep(0.05)


def _refresh(client, name: str, channel, fetch) -> str:
    token, expires_in = fetch(channel)
    client.set(name, token, ex=max(expires_in - TOKEN_EARLY_REFRESH, expires_in // 2, 1))
    return token


def access_token_forget(channel, token: str) -> None:
    try:
        get_redis().eval(_DELETE_IF_EQUAL, 1, _token_key(channel), token)
    except redis.RedisError:
        logger.warning("could not drop a rejected WeChat token", exc_info=True)


# HTTP --------------------------------------------------------------------------------------


def _request(channel, method: str, path: str, params: dict, **kwargs) -> httpx.Response:
    base = (channel.settings or {}).get("base_url") or DEFAULT_BASE_URL
    try:
        return http().request(method, base.rstrip("/") + path, params=params, timeout=HTTP_TIMEOUT, **kwargs)
    except httpx.HTTPError as error:
        raise network_error(error) from error


def _json_or_none(response: httpx.Response) -> dict | None:
    """WeChat's JSON answer, if this is one: errors of file downloads come back as JSON too,
    not always labelled application/json."""
    content_type = response.headers.get("Content-Type", "")
    if "json" not in content_type and response.content[:1] != b"{":
        return None
    try:
        data = json.loads(response.content)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _download(url: str, media: dict, max_bytes: int) -> MediaFile:
    try:
        with http().stream("GET", url, timeout=HTTP_TIMEOUT) as response:
            if not response.is_success:
                error_class = ErrorClass.RETRY if response.status_code >= 500 else ErrorClass.FATAL
                raise ProviderError(error_class, str(response.status_code), "video download failed")
            content = read_capped(response, max_bytes)
    except httpx.HTTPError as error:
        raise network_error(error) from error
    return _media_file(response, content, media)


def _media_file(response: httpx.Response, content: bytes, media: dict) -> MediaFile:
    mime_type = response.headers.get("Content-Type", "").split(";")[0].strip() or media.get("mime_type", "")
    found = re.search(r'filename="?([^";]+)"?', response.headers.get("Content-Disposition", ""))
    filename = media.get("filename") or (found.group(1) if found else "")
    return MediaFile(content=content, mime_type=mime_type or "application/octet-stream", filename=filename)


# XML pushes --------------------------------------------------------------------------------


def _xml_fields(raw_body: bytes) -> dict:
    if DTD.search(raw_body):
        raise ParseError("refused: the XML declares a DOCTYPE or ENTITY (WeChat never does)")
    try:
        root = ElementTree.fromstring(raw_body)  # noqa: S314 (no DTD gets here: refused above)
    except ElementTree.ParseError as error:
        raise ParseError(f"not XML: {error}") from error
    if root.tag != "xml":
        raise ParseError(f"not a WeChat push: root element <{root.tag}>")
    fields = {child.tag: child.text or "" for child in root}
    fields = {name: value if name == "Content" else value.strip() for name, value in fields.items()}
    missing = [name for name in ("FromUserName", "CreateTime", "MsgType") if not fields.get(name)]
    if missing:
        raise ParseError(f"push without {', '.join(missing)}")
    return fields


def _common(fields: dict) -> dict:
    # Messages carry a MsgId; WeChat tells us to dedupe events by FromUserName + CreateTime.
    fallback = f"{fields['FromUserName']}:{fields['CreateTime']}:{fields.get('Event') or fields['MsgType']}"
    return {
        "provider_id": fields.get("MsgId") or fallback,
        "sender_id": fields["FromUserName"],
        "timestamp": _when(fields["CreateTime"]),
    }


def _text(fields: dict, common: dict) -> InboundMessage:
    content = fields.get("Content", "")
    if fields.get("bizmsgmenuid"):  # a tap on one of our msgmenu options
        payload = {"reply_id": fields["bizmsgmenuid"], "title": content, "type": "msgmenu"}
        return InboundMessage(kind="interactive", text=content, payload=payload, **common)
    return InboundMessage(kind="text", text=content, **common)


def _media(fields: dict, common: dict, family: str, mime_type: str, **payload) -> InboundMessage:
    media = {"id": fields.get("MediaId", ""), "mime_type": mime_type, "filename": "", "type": family}
    if not media["id"]:
        raise ParseError(f"{fields['MsgType']} without MediaId")
    text = fields.get("Recognition", "")  # voice, when the account turned speech recognition on
    return InboundMessage(kind="media", text=text, media=media, payload=payload, **common)


def _image(fields: dict, common: dict) -> InboundMessage:
    return _media(fields, common, "image", "image/jpeg", pic_url=fields.get("PicUrl", ""))


def _voice(fields: dict, common: dict) -> InboundMessage:
    voice_format = fields.get("Format", "").lower()
    mime_type = VOICE_FORMATS.get(voice_format, "audio/amr")
    return _media(fields, common, "audio", mime_type, format=voice_format, recognition=fields.get("Recognition", ""))


def _video(fields: dict, common: dict) -> InboundMessage:
    thumb = fields.get("ThumbMediaId", "")
    return _media(fields, common, "video", "video/mp4", thumb_media_id=thumb, type=fields["MsgType"])


def _location(fields: dict, common: dict) -> InboundMessage:
    try:  # Location_X is the latitude, Location_Y the longitude
        latitude, longitude = float(fields["Location_X"]), float(fields["Location_Y"])
    except (KeyError, ValueError) as error:
        raise ParseError(f"location without coordinates: {error}") from error
    label = fields.get("Label", "")
    payload = {"latitude": latitude, "longitude": longitude, "address": label, "scale": fields.get("Scale", "")}
    return InboundMessage(kind="location", text=label, payload=payload, **common)


def _link(fields: dict, common: dict) -> InboundMessage:
    link = {
        "title": fields.get("Title", ""),
        "description": fields.get("Description", ""),
        "url": fields.get("Url", ""),
    }
    text = "\n".join(filter(None, (link["title"], link["url"])))
    return InboundMessage(kind="text", text=text, payload={"link": link}, **common)


def _unsupported(fields: dict, common: dict) -> InboundMessage:
    kind = fields.get("Event") or fields["MsgType"]
    return InboundMessage(kind="unsupported", payload={"type": kind, "raw": fields}, **common)


MESSAGE_BUILDERS = {
    "text": _text,
    "image": _image,
    "voice": _voice,
    "video": _video,
    "shortvideo": _video,
    "location": _location,
    "link": _link,
}


def _event(fields: dict):
    """Follows and unfollows change whether we may write; a click on the account's own menu
    is a choice; VIEW and LOCATION (IGNORED_EVENTS) are dropped; other events (SCAN, the
    scancode_* and pic_* menus…) are kept as unsupported so nobody's action vanishes."""
    event = fields.get("Event", "").lower()
    sender, timestamp = fields["FromUserName"], _when(fields["CreateTime"])
    if event in ("subscribe", "unsubscribe"):
        return ReachabilityUpdate(sender_id=sender, reachable=event == "subscribe", timestamp=timestamp, reason=event)
    if event in IGNORED_EVENTS:
        return None
    if event == "click":
        key_ = fields.get("EventKey", "")
        payload = {"reply_id": key_, "title": key_, "type": "menu_click"}
        return InboundMessage(kind="interactive", text=key_, payload=payload, **_common(fields))
    return _unsupported(fields, _common(fields))


def _msgmenu(message: OutboundMessage) -> dict:
    """WeChat's own menu message: each option is a link in the chat, and a tap comes back as a
    text whose `bizmsgmenuid` is the option's id."""
    options = message.payload.get("options", [])
    items = [{"id": str(option["id"]), "content": option["title"]} for option in options]
    return {"head_content": message.text, "list": items, "tail_content": ""}
