"""Builders for Messenger Platform webhooks (Facebook Messenger and Instagram Direct), shaped as
Meta's webhook reference documents them: `{"object": "page" | "instagram", "entry": [{"id",
"time", "messaging": [{"sender": {"id"}, "recipient": {"id"}, "timestamp", <event>}]}]}`, with
times in epoch milliseconds."""

import hashlib
import hmac
import json
import time

from apps.connectors.models import Channel

APP_SECRET = "test-app-secret"
PAGE_ID = "1000002"
PSID = "24000000000000001"
OBJECTS = {"messenger": "page", "instagram": "instagram"}


def make_meta_channel(workspace, kind="messenger", **settings) -> Channel:
    return Channel.objects.create(
        workspace=workspace,
        kind=kind,
        name=f"Shop on {kind}",
        credentials={"page_access_token": f"{kind}-page-token", "app_secret": APP_SECRET, "page_id": PAGE_ID},
        settings={"base_url": "http://127.0.0.1:9", **settings},
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def envelope(kind: str, *items) -> dict:
    return {"object": OBJECTS[kind], "entry": [{"id": PAGE_ID, "time": now_ms(), "messaging": list(items)}]}


def item(*, psid=PSID, ts=None, **event) -> dict:
    return {"sender": {"id": psid}, "recipient": {"id": PAGE_ID}, "timestamp": ts or now_ms(), **event}


def text(body: str, *, mid: str, **extra) -> dict:
    return item(message={"mid": mid, "text": body, **extra})


def quick_reply(title: str, payload: str, *, mid: str) -> dict:
    return item(message={"mid": mid, "text": title, "quick_reply": {"payload": payload}})


def attachments(*files, mid: str, text: str | None = None) -> dict:
    """`files` are (type, url) pairs, or whole attachment objects."""
    listed = [{"type": f[0], "payload": {"url": f[1]}} if isinstance(f, tuple) else f for f in files]
    return item(message={"mid": mid, "attachments": listed, **({"text": text} if text else {})})


def postback(title: str, payload: str, *, mid: str | None = None, ts=None) -> dict:
    body = {"title": title, "payload": payload, **({"mid": mid} if mid else {})}
    return item(ts=ts, postback=body)


def reaction(mid: str, emoji="❤️", action="react") -> dict:
    return item(reaction={"reaction": "love", "emoji": emoji, "action": action, "mid": mid})


def delivery(*mids, watermark: int) -> dict:
    return item(delivery={"mids": list(mids), "watermark": watermark})


def read(*, watermark: int) -> dict:
    return item(read={"watermark": watermark})


def echo(body: str, *, mid: str) -> dict:
    """A message the Page sent, coming back: sender and recipient are swapped."""
    return {
        "sender": {"id": PAGE_ID},
        "recipient": {"id": PSID},
        "timestamp": now_ms(),
        "message": {"is_echo": True, "app_id": 1517776481860111, "mid": mid, "text": body},
    }


def signed(body: dict | bytes, secret: str = APP_SECRET) -> tuple[bytes, str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw, "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def post_webhook(client, channel, body, *, secret: str = APP_SECRET):
    raw, signature = signed(body, secret)
    return client.post(
        f"/webhooks/{channel.uuid}/", raw, content_type="application/json", headers={"X-Hub-Signature-256": signature}
    )
