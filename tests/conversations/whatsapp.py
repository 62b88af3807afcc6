"""Builders for WhatsApp Cloud API webhook payloads, shaped as Meta documents them."""

import hashlib
import hmac
import json
import time

from apps.connectors.models import Channel

APP_SECRET = "test-app-secret"


def make_whatsapp_channel(workspace, **settings) -> Channel:
    return Channel.objects.create(
        workspace=workspace,
        kind="whatsapp",
        name="Support number",
        credentials={
            "access_token": "test-token",
            "app_secret": APP_SECRET,
            "phone_number_id": "1000001",
            "waba_id": "WABA1",
        },
        settings={"base_url": "http://127.0.0.1:9", **settings},
    )


def envelope(*values) -> dict:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA1", "changes": [{"field": "messages", "value": value} for value in values]}],
    }


def messages_value(*messages, wa_id="201001234567", name="Amira") -> dict:
    return {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "+20 100 000 0001", "phone_number_id": "1000001"},
        "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
        "messages": list(messages),
    }


def text(body: str, *, wamid: str, wa_id="201001234567", **extra) -> dict:
    return {
        "from": wa_id,
        "id": wamid,
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": body},
        **extra,
    }


def statuses_value(*statuses) -> dict:
    return {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "+20 100 000 0001", "phone_number_id": "1000001"},
        "statuses": list(statuses),
    }


def status(wamid: str, state: str, *, ts: int | None = None, errors=None) -> dict:
    item = {"id": wamid, "status": state, "timestamp": str(ts or int(time.time())), "recipient_id": "201001234567"}
    if errors:
        item["errors"] = errors
    return item


def signed(body: dict | bytes, secret: str = APP_SECRET) -> tuple[bytes, str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw, "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def post_webhook(client, channel, body, *, secret: str = APP_SECRET):
    raw, signature = signed(body, secret)
    return client.post(
        f"/webhooks/{channel.uuid}/", raw, content_type="application/json", headers={"X-Hub-Signature-256": signature}
    )
