"""The simulated WeChat Official Account platform (plaintext mode): access tokens, the
customer-service message API with its 48-hour window and quota, temporary media, and the signed
XML pushes a follower's actions cause.

Registration: `{kind: "wechat", app_id, app_secret, token, webhook_url?, original_id? (gh_…),
name?, token_lifetime? (seconds, 7200), replies_per_window? (5)}`.

API (errors are HTTP 200 with `{"errcode", "errmsg"}`, as WeChat answers them):

- `GET /cgi-bin/token?grant_type=client_credential&appid=&secret=` → `{access_token, expires_in}`;
  unknown appid 40013, wrong secret 40125.
- Every other call takes `?access_token=`: missing 41001, unknown 40001, expired 42001.
- `POST /cgi-bin/message/custom/send` `{touser, msgtype, <msgtype>: {...}}` → `{errcode: 0}`;
  a pending fault first; then 47001 (not a JSON object / missing fields), 40008 (unknown
  msgtype), 40007 (unknown media_id), 40003 (an OpenID that never wrote), 43004 (unfollowed),
  45015 (48 h since the customer's last action), 45047 (quota used since then).
- `POST /cgi-bin/media/upload?type=image|voice|video|thumb` (multipart field `media`) →
  `{type, media_id, created_at}`; other types 40004, no file 41005.
- `GET /cgi-bin/media/get?media_id=` → the bytes (a video: `{video_url}`); unknown 40007.

Customer actions (`POST /_simulator/inbound` with `kind: "wechat"`, `channel` = app id, `user` =
OpenID) by `type`: `text` (`text`), `choice` (`choice: {id, title}`: a tap on a msgmenu option),
`image`, `voice` (`recognition?`), `video`, `location` (`latitude, longitude, label?, scale?`),
`link` (`title, description?, url`), `subscribe`, `unsubscribe`, `click` (`key`: a custom-menu
button). Extra control verbs: `POST /_simulator/window {kind, channel, user, hours_ago}` and
`POST /_simulator/tokens/expire {kind, channel}`.

Pushes go to `webhook_url` with `signature, timestamp, nonce, openid` in the query and an XML
body, wait 5 s for an answer and are tried 3 more times, each attempt signed afresh; an answer
other than `success` or nothing (WeChat then shows the customer an error) is recorded.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
import time
from email import policy as email_policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import urlencode

from .chat import ChatProvider
from .core import (
    ControlError,
    DeliveryPolicy,
    Request,
    Response,
    assert_loopback,
    http_call,
    json_response,
    route,
)
from .samples import sample_for

ERRMSGS = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40004: "invalid media type",
    40007: "invalid media_id",
    40008: "invalid message type",
    40013: "invalid appid",
    40125: "invalid appsecret",
    41001: "access_token missing",
    41005: "media data missing",
    42001: "access_token expired",
    43004: "require subscribe",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    47001: "data format error",
}
MESSAGE_TYPES = ("text", "image", "voice", "video", "music", "news", "mpnews", "msgmenu", "wxcard", "miniprogrampage")
MEDIA_MESSAGE_TYPES = ("image", "voice", "video")
UPLOAD_TYPES = ("image", "voice", "video", "thumb")
PUSH_TIMEOUT = 5.0  # WeChat drops the connection after 5 s…
PUSH_ATTEMPTS = 4  # …and tries three more times
# Starts from the clock so that a restarted simulator never repeats a MsgId Parley has stored.
_msg_ids = itertools.count(int(time.time() * 1000) * 1000)


class WeChatError(Exception):
    def __init__(self, code: int, hint: str = ""):
        super().__init__(code)
        self.code = code
        self.hint = hint

    def response(self) -> Response:
        hint = f" hint: [{self.hint}]" if self.hint else ""
        errmsg = f"{ERRMSGS.get(self.code, 'error')}{hint} rid: {secrets.token_hex(4)}-{secrets.token_hex(4)}"
        return json_response({"errcode": self.code, "errmsg": errmsg})


def signature(token: str, timestamp: str, nonce: str) -> str:
    return hashlib.sha1("".join(sorted((token, timestamp, nonce))).encode()).hexdigest()  # noqa: S324 (WeChat's scheme)


class WeChat(ChatProvider):
    kind = "wechat"
    key_field = "app_id"
    required_fields = ("app_secret", "token")
    window_hours = 48

    def _clear(self) -> None:
        super()._clear()
        self.tokens: dict[str, tuple[str, float]] = {}  # access token -> (app id, expires at)
        self.sent_since_inbound: dict[tuple[str, str], int] = {}
        self.unsubscribed: set[tuple[str, str]] = set()
        self.policy = DeliveryPolicy(attempts=PUSH_ATTEMPTS, backoff=0.2, timeout=PUSH_TIMEOUT)

    def register_channel(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("webhook_url"):
            assert_loopback(str(body["webhook_url"]))
        body = {
            "token_lifetime": 7200,
            "replies_per_window": 5,
            "original_id": f"gh_{hashlib.sha256(str(body.get('app_id')).encode()).hexdigest()[:12]}",
            **body,
        }
        return super().register_channel(body)

    def describe(self, channel: dict[str, Any]) -> str:
        return channel.get("name") or channel["original_id"]

    # API ---------------------------------------------------------------------------------------

    def api_routes(self):
        return [
            *super().api_routes(),
            route("GET", r"/cgi-bin/token", _answering(self._token)),
            route("POST", r"/cgi-bin/message/custom/send", _answering(self._custom_send)),
            route("POST", r"/cgi-bin/media/upload", _answering(self._media_upload)),
            route("GET", r"/cgi-bin/media/get", _answering(self._media_get)),
        ]

    def _token(self, request: Request) -> Response:
        query = request.query
        if query.get("grant_type") != "client_credential":
            raise WeChatError(40002)
        channel = self.channel(query.get("appid", ""))
        if channel is None:
            raise WeChatError(40013)
        if query.get("secret") != channel["app_secret"]:
            raise WeChatError(40125)
        token, lifetime = secrets.token_urlsafe(48), int(channel["token_lifetime"])
        with self.lock:
            self.tokens[token] = (channel["id"], time.time() + lifetime)
        return json_response({"access_token": token, "expires_in": lifetime})

    def _caller(self, request: Request) -> dict[str, Any]:
        token = request.query.get("access_token", "")
        if not token:
            raise WeChatError(41001)
        with self.lock:
            app_id, expires_at = self.tokens.get(token, ("", 0.0))
        if not app_id or self.channel(app_id) is None:
            raise WeChatError(40001)
        if time.time() >= expires_at:
            raise WeChatError(42001)
        return self.channel(app_id)

    def _custom_send(self, request: Request) -> Response:
        channel = self._caller(request)
        fault = self.take_fault(channel["id"])
        if fault is not None:
            return fault
        user = ""
        try:
            body = _json_object(request)
            user = str(body.get("touser") or "")
            preview = self._preview(body)
            self._check_may_send(channel, user)
        except WeChatError as error:
            answer = error.response()
            errors = [{"code": error.code, "title": ERRMSGS.get(error.code, "")}]
            self.record_out(channel["id"], user, request, 200, state="failed", errors=errors)
            return answer
        with self.lock:
            self.sent_since_inbound[(channel["id"], user)] = self.sent_since_inbound.get((channel["id"], user), 0) + 1
        self.record_out(channel["id"], user, request, 200, id=f"sim-{self.simulator.next_seq()}", **preview)
        return json_response({"errcode": 0, "errmsg": "ok"})

    def _preview(self, body: dict[str, Any]) -> dict[str, Any]:
        """What the customer sees, for the outbox and the page; WeChatError if WeChat refuses."""
        msgtype = body.get("msgtype")
        if not body.get("touser") or not isinstance(body.get(msgtype), dict):
            raise WeChatError(47001, "touser and the msgtype's object are required")
        if msgtype not in MESSAGE_TYPES:
            raise WeChatError(40008)
        content = body[msgtype]
        if msgtype == "text":
            return {"type": "text", "text": _required(content, "content")}
        if msgtype in MEDIA_MESSAGE_TYPES:
            return {"type": msgtype, "text": str(content.get("description", "")), "media": self._media_ref(content)}
        if msgtype == "msgmenu":
            return _menu_preview(content)
        return {"type": msgtype, "text": str(content.get("title", ""))}

    def _media_ref(self, content: dict[str, Any]) -> dict[str, Any]:
        media_id = _required(content, "media_id")
        with self.lock:
            found = self.media.get(media_id)
        if found is None:
            raise WeChatError(40007)
        return {"id": media_id, "url": self.media_url(media_id), "mime_type": found[1], "filename": found[2]}

    def _check_may_send(self, channel: dict[str, Any], user: str) -> None:
        pair = (channel["id"], user)
        with self.lock:
            known, unfollowed = pair in self.last_inbound, pair in self.unsubscribed
            sent = self.sent_since_inbound.get(pair, 0)
        if not known:
            raise WeChatError(40003)
        if unfollowed:
            raise WeChatError(43004)
        if not self.window_open(*pair):
            raise WeChatError(45015)
        if sent >= int(channel["replies_per_window"]):
            raise WeChatError(45047)

    def _media_upload(self, request: Request) -> Response:
        self._caller(request)
        media_type = request.query.get("type", "")
        if media_type not in UPLOAD_TYPES:
            raise WeChatError(40004)
        data, filename, content_type = _multipart(request).get("media") or (b"", None, None)
        if not data:
            raise WeChatError(41005)
        media_id = self.store_media(data, content_type or "application/octet-stream", filename or "media")
        return json_response({"type": media_type, "media_id": media_id, "created_at": int(time.time())})

    def _media_get(self, request: Request) -> Response:
        self._caller(request)
        media_id = request.query.get("media_id", "")
        with self.lock:
            found = self.media.get(media_id)
        if found is None:
            raise WeChatError(40007)
        data, mime_type, filename = found
        if mime_type.startswith("video/"):  # WeChat hands out a download link for videos
            return json_response({"video_url": self.media_url(media_id)})
        return Response(200, data, mime_type, {"Content-Disposition": f'attachment; filename="{filename}"'})

    # Customers ---------------------------------------------------------------------------------

    def customer_event(self, channel: dict[str, Any], user: str, body: dict[str, Any]) -> dict[str, Any]:
        kind = str(body.get("type") or "text")
        build = getattr(self, f"_customer_{kind}", None)
        if build is None:
            raise ControlError(f"unknown wechat event type {kind!r}")
        record = build(body)
        head = [
            ("ToUserName", channel["original_id"]),
            ("FromUserName", user),
            ("CreateTime", int(time.time())),
        ]
        event = record.pop("event", None)
        if event is None:
            record["id"] = str(next(_msg_ids))
            record["wire"] = [*head, *record["wire"], ("MsgId", int(record["id"]))]
        else:
            record["id"] = f"{user}:{head[2][1]}:{event}"
            record["wire"] = [*head, ("MsgType", "event"), ("Event", event), *record["wire"]]
        self._note_customer(channel["id"], user, event)
        return record

    def _note_customer(self, key: str, user: str, event: str | None) -> None:
        """Any action but leaving opens a new window with a fresh quota."""
        with self.lock:
            if event == "unsubscribe":
                self.unsubscribed.add((key, user))
                return
            self.unsubscribed.discard((key, user))
            self.sent_since_inbound[(key, user)] = 0

    def _customer_text(self, body: dict[str, Any]) -> dict[str, Any]:
        text = str(body.get("text") or "")
        return {"type": "text", "text": text, "wire": [("MsgType", "text"), ("Content", text)]}

    def _customer_choice(self, body: dict[str, Any]) -> dict[str, Any]:
        choice = body.get("choice") or {}
        if not choice.get("id"):
            raise ControlError("choice needs {id, title}: the msgmenu option tapped")
        title = str(choice.get("title") or choice["id"])
        wire = [("MsgType", "text"), ("Content", title), ("bizmsgmenuid", str(choice["id"]))]
        return {"type": "text", "text": title, "wire": wire}

    def _customer_image(self, body: dict[str, Any]) -> dict[str, Any]:
        media_id, _, mime_type, filename = self.sample_media("image")
        url = self.media_url(media_id)
        wire = [("MsgType", "image"), ("PicUrl", url), ("MediaId", media_id)]
        media = {"id": media_id, "url": url, "mime_type": mime_type, "filename": filename}
        return {"type": "image", "media": media, "wire": wire}

    def _customer_voice(self, body: dict[str, Any]) -> dict[str, Any]:
        media_id = self.store_media(sample_for("audio").data, "audio/amr", "voice.amr")
        wire = [("MsgType", "voice"), ("MediaId", media_id), ("Format", "amr")]
        if body.get("recognition"):
            wire.append(("Recognition", str(body["recognition"])))
        media = {"id": media_id, "url": self.media_url(media_id), "mime_type": "audio/amr", "filename": "voice.amr"}
        return {"type": "voice", "text": str(body.get("recognition") or ""), "media": media, "wire": wire}

    def _customer_video(self, body: dict[str, Any]) -> dict[str, Any]:
        media_id, _, mime_type, filename = self.sample_media("video")
        thumb_id, *_ = self.sample_media("image")
        wire = [("MsgType", "video"), ("MediaId", media_id), ("ThumbMediaId", thumb_id)]
        media = {"id": media_id, "url": self.media_url(media_id), "mime_type": mime_type, "filename": filename}
        return {"type": "video", "media": media, "wire": wire}

    def _customer_location(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            latitude, longitude = float(body["latitude"]), float(body["longitude"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ControlError("location needs numeric latitude and longitude") from exc
        label = str(body.get("label") or "")
        wire = [
            ("MsgType", "location"),
            ("Location_X", latitude),  # WeChat's X is the latitude
            ("Location_Y", longitude),
            ("Scale", int(body.get("scale") or 15)),
            ("Label", label),
        ]
        return {"type": "location", "text": label or f"{latitude}, {longitude}", "wire": wire}

    def _customer_link(self, body: dict[str, Any]) -> dict[str, Any]:
        title, url = str(body.get("title") or ""), str(body.get("url") or "")
        wire = [
            ("MsgType", "link"),
            ("Title", title),
            ("Description", str(body.get("description") or "")),
            ("Url", url),
        ]
        return {"type": "link", "text": f"{title}\n{url}".strip(), "wire": wire}

    def _customer_subscribe(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"type": "event", "text": "followed the account", "event": "subscribe", "wire": [("EventKey", "")]}

    def _customer_unsubscribe(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"type": "event", "text": "unfollowed the account", "event": "unsubscribe", "wire": [("EventKey", "")]}

    def _customer_click(self, body: dict[str, Any]) -> dict[str, Any]:
        event_key = str(body.get("key") or "")
        if not event_key:
            raise ControlError("click needs key: the custom-menu button's EventKey")
        return {"type": "event", "text": f"clicked {event_key}", "event": "CLICK", "wire": [("EventKey", event_key)]}

    # Pushes ------------------------------------------------------------------------------------

    def webhook(self, channel: dict[str, Any], record: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
        raw = _xml(record["wire"]).encode()
        url = self._signed_url(channel, {"openid": record["wire"][1][1]})
        return url, raw, {"Content-Type": "text/xml", "User-Agent": "Mozilla/4.0"}

    def sign(self, channel: dict[str, Any], raw: bytes, mode: str) -> tuple[str, dict[str, str]]:
        """`good`, `bad` (signed with another token), `stale` (signed ten minutes ago) or `none`."""
        if mode not in ("good", "bad", "stale", "none"):
            raise ControlError("signature must be good, bad, stale or none")
        found = re.search(rb"<FromUserName><!\[CDATA\[(.*?)\]\]>", raw)
        extra = {"openid": found.group(1).decode("utf-8", "replace")} if found else {}
        if mode == "none":
            return _with_query(channel.get("webhook_url") or "", extra), {"Content-Type": "text/xml"}
        url = self._signed_url(
            channel, extra, token_suffix="-wrong" if mode == "bad" else "", age=600 * (mode == "stale")
        )
        return url, {"Content-Type": "text/xml"}

    def handshake(self, channel: dict[str, Any]) -> dict[str, Any]:
        echostr = secrets.token_hex(8)
        status, body = http_call("GET", self._signed_url(channel, {"echostr": echostr}), timeout=PUSH_TIMEOUT)
        return {
            "status": status,
            "ok": status == 200 and body == echostr.encode(),
            "body": body.decode("utf-8", "replace"),
        }

    def _signed_url(self, channel: dict[str, Any], extra: dict[str, str], token_suffix: str = "", age: int = 0) -> str:
        timestamp, nonce = str(int(time.time()) - age), str(secrets.randbelow(10**10))
        query = {
            "signature": signature(channel["token"] + token_suffix, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            **extra,
        }
        return _with_query(channel.get("webhook_url") or "", query)

    def _deliver(self, channel: dict[str, Any], record: dict[str, Any]) -> None:
        """Like WeChat: a fresh request (newly signed) for each attempt, the answer kept."""
        generation, statuses, answer = self.generation, [], b""
        for attempt in range(self.policy.attempts if channel.get("webhook_url") else 0):
            if attempt:
                time.sleep(self.policy.backoff)
            if self.generation != generation:
                break
            url, raw, headers = self.webhook(channel, record)
            status, answer = http_call("POST", url, body=raw, headers=headers, timeout=self.policy.timeout)
            statuses.append(status)
            if status is not None and 200 <= status < 300:
                break
        self._note_delivery(channel, record, statuses, answer.decode("utf-8", "replace").strip())

    def _note_delivery(self, channel: dict[str, Any], record: dict[str, Any], statuses: list, answer: str) -> None:
        shown_an_error = answer not in ("", "success")  # WeChat: "该公众号暂时无法提供服务"
        with self.lock:
            record["parley_status"] = statuses[-1] if statuses else None
            record["attempts"] = len(statuses)
            if shown_an_error:
                record["parley_answer"] = answer[:2000]
            self.webhooks.append(
                {
                    "seq": self.simulator.next_seq(),
                    "time": time.time(),
                    "what": f"push {record.get('type', '')}",
                    "channel": channel["id"],
                    "url": channel.get("webhook_url", ""),
                    "body": _xml(record["wire"]),
                    "parley_statuses": statuses,
                    "answer": answer[:2000] if shown_an_error else "",
                }
            )

    # Control -----------------------------------------------------------------------------------

    def control_verbs(self):
        return {
            **super().control_verbs(),
            ("POST", "tokens/expire"): self._expire_tokens,
        }

    def _expire_tokens(self, request: Request) -> Response:
        channel = self.require_channel(request.json_object())
        with self.lock:
            mine = [token for token, (app_id, _) in self.tokens.items() if app_id == channel["id"]]
            for token in mine:
                self.tokens[token] = (channel["id"], 0.0)
        return json_response({"expired": len(mine)})


def _answering(handler):
    """Route handler that turns a WeChatError into WeChat's error answer."""

    def answer(request: Request, **groups: str) -> Response:
        try:
            return handler(request, **groups)
        except WeChatError as error:
            return error.response()

    return answer


def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = request.json_body
    except ControlError as exc:
        raise WeChatError(47001, "body is not JSON") from exc
    if not isinstance(body, dict) or not body:
        raise WeChatError(47001, "body must be a JSON object")
    return body


def _required(content: dict[str, Any], name: str) -> str:
    value = content.get(name)
    if not isinstance(value, str) or not value:
        raise WeChatError(47001, f"{name} is required")
    return value


def _menu_preview(content: dict[str, Any]) -> dict[str, Any]:
    items = content.get("list")
    if not isinstance(items, list) or not items or len(items) > 10:
        raise WeChatError(47001, "msgmenu.list needs 1 to 10 items")
    if not all(isinstance(item, dict) and item.get("id") and item.get("content") for item in items):
        raise WeChatError(47001, "every msgmenu item needs id and content")
    text = "\n".join(filter(None, (str(content.get("head_content") or ""), str(content.get("tail_content") or ""))))
    replies = [{"id": str(item["id"]), "title": str(item["content"])} for item in items]
    return {"type": "msgmenu", "text": text, "replies": replies}


def _multipart(request: Request) -> dict[str, tuple[bytes, str | None, str | None]]:
    """Form fields of a multipart/form-data body: name -> (bytes, filename, content type)."""
    content_type = request.header("Content-Type") or ""
    if not content_type.startswith("multipart/form-data"):
        raise WeChatError(41005, "upload the file as multipart/form-data field media")
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=email_policy.HTTP).parsebytes(head + request.body)
    form = {}
    for part in message.iter_parts() if message.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        if name:
            filename = part.get_filename()
            form[str(name)] = (part.get_payload(decode=True) or b"", filename, part.get_content_type())
    return form


def _xml(wire: list[tuple[str, Any]]) -> str:
    """A push as WeChat writes it: strings in CDATA, numbers bare."""
    fields = "".join(
        f"<{tag}>{value if isinstance(value, int | float) else _cdata(value)}</{tag}>" for tag, value in wire
    )
    return f"<xml>{fields}</xml>"


def _cdata(text: str) -> str:
    return "<![CDATA[" + str(text).replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _with_query(url: str, query: dict[str, str]) -> str:
    if not url:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode(query)}"
