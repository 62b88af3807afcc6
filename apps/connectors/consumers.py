"""The web chat widget's socket: /ws/widget/<channel uuid>/, opened from the shop's own site.

No session here: the visitor is known by a signed token (apps/connectors/services.py). The
socket accepts only pages from the channel's allowed origins. The protocol, one JSON object a
frame, `type` first:

    → join {token?, customer_id?, customer_hash?}   ← joined {token, visitor, history, config}
    → prechat {name, email, phone}                   ← prechat_ok | error {code, detail, fields}
    → message {id, text, upload?}                    ← ack {id} | error {code, detail, id}
    → receipt {state: delivered|read, ids}
    → ping                                           ← pong
                                                     ← message {…} (an operator's reply)
Handlers parse and call one service each; the rules live in the services."""

from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.connectors import selectors, services
from apps.connectors.providers.webchat import visitor_group
from apps.core.exceptions import DomainError

CLOSE_NOT_FOUND = 4404
CLOSE_FORBIDDEN_ORIGIN = 4403


def origin_allowed(channel, headers: dict) -> bool:
    allowed = [origin.rstrip("/").lower() for origin in channel.settings.get("allowed_origins", [])]
    if not allowed or "*" in allowed:
        return True
    origin = headers.get(b"origin", b"").decode("latin-1").rstrip("/").lower()
    return bool(origin) and origin in allowed and bool(urlsplit(origin).scheme)


def widget_config(channel) -> dict:
    settings = channel.settings
    return {
        "title": settings.get("title") or channel.name,
        "greeting": settings.get("greeting", ""),
        "color": settings.get("color", "#3451d1"),
        "prechat": settings.get("prechat", {"enabled": False}),
    }


class WidgetConsumer(AsyncJsonWebsocketConsumer):
    channel_obj = None
    visitor: services.Visitor | None = None
    group: str | None = None

    async def connect(self):
        uuid = self.scope["url_route"]["kwargs"]["channel_uuid"]
        self.channel_obj = await database_sync_to_async(selectors.webchat_channel_get)(channel_uuid=uuid)
        if self.channel_obj is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        if not origin_allowed(self.channel_obj, dict(self.scope.get("headers", []))):
            await self.close(code=CLOSE_FORBIDDEN_ORIGIN)
            return
        await self.accept()

    async def disconnect(self, code):
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        handlers = {
            "join": self.on_join,
            "prechat": self.on_prechat,
            "message": self.on_message,
            "receipt": self.on_receipt,
            "ping": self.on_ping,
        }
        kind = content.get("type") if isinstance(content, dict) else None
        handler = handlers.get(kind)
        if handler is None:
            await self.send_json({"type": "error", "code": "unknown_message", "detail": "Unknown message type."})
            return
        if kind not in ("join", "ping") and self.visitor is None:
            await self.send_json({"type": "error", "code": "not_joined", "detail": "Send join first."})
            return
        try:
            await handler(content)
        except DomainError as error:
            await self.send_json(
                {"type": "error", "code": error.code, "detail": error.detail, "fields": error.fields or {}}
                | ({"id": content.get("id")} if kind == "message" else {})
            )

    async def decode_json(self, text_data):
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None  # answered as an unknown message, never a crash

    async def on_join(self, content):
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        self.visitor = await database_sync_to_async(services.webchat_visitor_join)(
            channel=self.channel_obj,
            token=str(content.get("token") or ""),
            customer_id=str(content.get("customer_id") or ""),
            customer_hash=str(content.get("customer_hash") or ""),
        )
        self.group = visitor_group(self.channel_obj.id, self.visitor.id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        history = await database_sync_to_async(selectors.webchat_history)(
            channel=self.channel_obj, visitor_id=self.visitor.id
        )
        await self.send_json(
            {
                "type": "joined",
                "token": services.visitor_token(self.channel_obj, self.visitor),
                "verified": self.visitor.verified,
                "history": history,
                "config": widget_config(self.channel_obj),
            }
        )

    async def on_prechat(self, content):
        await database_sync_to_async(services.webchat_prechat_submit)(
            channel=self.channel_obj,
            visitor=self.visitor,
            name=str(content.get("name") or ""),
            email=str(content.get("email") or ""),
            phone=str(content.get("phone") or ""),
        )
        await self.send_json({"type": "prechat_ok"})

    async def on_message(self, content):
        await database_sync_to_async(services.webchat_message_receive)(
            channel=self.channel_obj,
            visitor=self.visitor,
            client_id=str(content.get("id") or ""),
            text=str(content.get("text") or ""),
            upload=str(content.get("upload") or ""),
        )
        await self.send_json({"type": "ack", "id": content["id"]})

    async def on_receipt(self, content):
        ids = content.get("ids")
        await database_sync_to_async(services.webchat_receipts_receive)(
            channel=self.channel_obj,
            visitor=self.visitor,
            state=str(content.get("state") or ""),
            ids=ids if isinstance(ids, list) else [],
        )

    async def on_ping(self, content):
        await self.send_json({"type": "pong"})

    async def visitor_message(self, event):
        await self.send_json({"type": "message", "message": event["message"]})
