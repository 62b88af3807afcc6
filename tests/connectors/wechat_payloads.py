"""Builders for WeChat Official Account pushes (plaintext mode), shaped as WeChat's "receiving
standard messages" and "receiving event pushes" pages show them: an `<xml>` root, strings in
CDATA, CreateTime / MsgId / coordinates bare."""

import hashlib
import secrets
import time
import uuid
from urllib.parse import urlencode

from apps.connectors.models import Channel

TOKEN = "parley-wechat-token"
APP_SECRET = "wechat-app-secret"
OPENID = "oLVPpjqs9BhvzwPj5A-vTYAX3GLc"
ORIGINAL_ID = "gh_8f3a91c0ab12"


def make_wechat_channel(workspace, **settings) -> Channel:
    return Channel.objects.create(
        workspace=workspace,
        kind="wechat",
        name="Tea house account",
        # A new app id per channel: the access token is cached in Redis by app id.
        credentials={"app_id": f"wx{uuid.uuid4().hex[:16]}", "app_secret": APP_SECRET, "token": TOKEN},
        settings={"base_url": "http://127.0.0.1:9", **settings},
    )


def signed_query(token: str = TOKEN, *, age: int = 0, nonce: str | None = None, **extra) -> dict:
    """The query WeChat adds to a push: SHA-1 of the sorted token, timestamp and nonce."""
    timestamp, nonce = str(int(time.time()) - age), nonce or str(secrets.randbelow(10**10))
    signature = hashlib.sha1("".join(sorted((token, timestamp, nonce))).encode()).hexdigest()  # noqa: S324
    return {"signature": signature, "timestamp": timestamp, "nonce": nonce, "openid": OPENID, **extra}


def push_url(channel, query: dict) -> str:
    return f"/webhooks/{channel.uuid}/?{urlencode(query)}"


def xml(*fields: tuple[str, object]) -> bytes:
    def value(item):
        return item if isinstance(item, int | float) else f"<![CDATA[{item}]]>"

    return ("<xml>" + "".join(f"<{tag}>{value(item)}</{tag}>" for tag, item in fields) + "</xml>").encode()


def _head(msg_type: str, openid: str, create_time: int | None) -> list:
    return [
        ("ToUserName", ORIGINAL_ID),
        ("FromUserName", openid),
        ("CreateTime", create_time or int(time.time())),
        ("MsgType", msg_type),
    ]


def message(msg_type: str, *fields, msg_id: int, openid: str = OPENID, create_time: int | None = None) -> bytes:
    return xml(*_head(msg_type, openid, create_time), *fields, ("MsgId", msg_id))


def text(content: str, *, msg_id: int, **extra) -> bytes:
    return message("text", ("Content", content), msg_id=msg_id, **extra)


def menu_tap(option_id: str, title: str, *, msg_id: int) -> bytes:
    """A tap on an option of a msgmenu customer-service message."""
    return message("text", ("Content", title), ("bizmsgmenuid", option_id), msg_id=msg_id)


def image(*, msg_id: int, media_id: str = "MEDIA_IMG_1") -> bytes:
    return message("image", ("PicUrl", "http://mmbiz.qpic.cn/mmbiz_jpg/x/0"), ("MediaId", media_id), msg_id=msg_id)


def voice(*, msg_id: int, recognition: str | None = None) -> bytes:
    fields = [("MediaId", "MEDIA_VOICE_1"), ("Format", "amr")]
    if recognition is not None:
        fields.append(("Recognition", recognition))
    return message("voice", *fields, msg_id=msg_id)


def video(msg_type: str = "video", *, msg_id: int) -> bytes:
    return message(msg_type, ("MediaId", "MEDIA_VIDEO_1"), ("ThumbMediaId", "MEDIA_THUMB_1"), msg_id=msg_id)


def location(*, msg_id: int) -> bytes:
    fields = [("Location_X", 23.134521), ("Location_Y", 113.358803), ("Scale", 20), ("Label", "Tianhe, Guangzhou")]
    return message("location", *fields, msg_id=msg_id)


def link(*, msg_id: int) -> bytes:
    fields = [("Title", "Oolong guide"), ("Description", "How to brew"), ("Url", "https://tea.example/oolong")]
    return message("link", *fields, msg_id=msg_id)


def event(name: str, *, create_time: int | None = None, event_key: str | None = None, openid: str = OPENID) -> bytes:
    fields = [*_head("event", openid, create_time), ("Event", name)]
    if event_key is not None:
        fields.append(("EventKey", event_key))
    return xml(*fields)
