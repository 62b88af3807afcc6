"""The one websocket of the product, /ws/. It authenticates by the session, joins the groups of
the chosen workspace and of the user, relays events, and answers catch-up requests. It holds
no business rules: one handler per message type."""

import json
import re
from collections import OrderedDict
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.core import realtime
from apps.workspaces.selectors import workspace_context_for_user
from apps.workspaces.services import agent_heartbeat

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
EVENT_ID = re.compile(r"^\d+-\d+$")


class RealtimeConsumer(AsyncJsonWebsocketConsumer):
    joined: tuple[str, ...] = ()
    workspace_id: int | None = None
    membership = None

    async def connect(self):
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        slug = query.get("workspace", [None])[-1]
        context = await database_sync_to_async(workspace_context_for_user)(user, slug)
        if context is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.workspace_id = context.workspace.id
        self.membership = context.membership
        self.joined = (realtime.workspace_group(self.workspace_id), realtime.user_group(user.id))
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        last_id = await sync_to_async(realtime.last_event_id)(self.workspace_id)
        await self.send_json(
            {
                "type": "hello",
                "socket_id": self.channel_name,
                "workspace": {"id": self.workspace_id, "slug": context.workspace.slug},
                "role": context.role,
                "last_event_id": last_id,
            }
        )

    async def disconnect(self, code):
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        handlers = {"ping": self.on_ping, "resync": self.on_resync, "typing": self.on_typing}
        handler = handlers.get(content.get("type")) if isinstance(content, dict) else None
        if handler is None:
            await self.send_json({"type": "error", "code": "unknown_message"})
            return
        await handler(content)

    async def on_ping(self, content):
        # Pages ping every 30 s; an open tab is what keeps an agent from being swept offline.
        await database_sync_to_async(agent_heartbeat)(membership=self.membership)
        await self.send_json({"type": "pong"})

    async def on_resync(self, content):
        since = str(content.get("since", ""))
        if not EVENT_ID.match(since):
            await self.send_json({"type": "error", "code": "invalid_since"})
            return
        events = await sync_to_async(realtime.events_since)(self.workspace_id, since)
        await self.send_json({"type": "resync", "events": events})

    async def on_typing(self, content):
        """An operator is typing a reply: their colleagues on the same conversation see a hint."""
        conversation_id = content.get("conversation_id")
        if not isinstance(conversation_id, int):
            await self.send_json({"type": "error", "code": "invalid_conversation"})
            return
        await database_sync_to_async(_typing)(
            workspace_id=self.workspace_id,
            conversation_id=conversation_id,
            user=self.scope["user"],
            origin=self.channel_name,
        )

    async def realtime_event(self, message):
        event = message["event"]
        if event.get("origin") == self.channel_name:
            return  # the author's own action: its page already shows it
        await self.send(text_data=_encoded(event))

    async def realtime_events(self, message):
        """Several events at once (realtime.batched: a batch of inbound deliveries), in order, in
        one frame `{"type": "events", "events": [...]}`: with 50 operators online a batch of 50
        messages was 7,500 frames a second through the web processes, now 50."""
        events = [event for event in message["events"] if event.get("origin") != self.channel_name]
        if len(events) == 1:
            await self.send(text_data=_encoded(events[0]))
        elif events:
            await self.send(text_data=_encoded_batch(events))


# Every socket of a workspace gets each of its events: the JSON is made once per web process, not
# once per socket (50 operators online: 50 encodings of every message). Kept for the newest events.
_ENCODED: OrderedDict[tuple, str] = OrderedDict()
_ENCODED_KEPT = 2000


def _encoded(event: dict) -> str:
    if event.get("id") is None:  # not in the stream (typing, a person's notification): one socket's
        return json.dumps(event)
    return _kept((event.get("workspace_id"), event["id"]), event)


def _encoded_batch(events: list[dict]) -> str:
    frame = {"type": "events", "events": events}
    ids = tuple(event.get("id") for event in events)
    if None in ids:
        return json.dumps(frame)
    return _kept(("batch", events[0].get("workspace_id"), *ids), frame)


def _kept(key: tuple, value: dict) -> str:
    text = _ENCODED.get(key)
    if text is None:
        text = _ENCODED[key] = json.dumps(value)
        if len(_ENCODED) > _ENCODED_KEPT:
            _ENCODED.popitem(last=False)
    return text


def _typing(*, workspace_id: int, conversation_id: int, user, origin: str) -> None:
    from apps.conversations.selectors import conversation_get
    from apps.conversations.services import typing_announce

    conversation = conversation_get(workspace_id=workspace_id, pk=conversation_id)
    if conversation is not None:  # another workspace's conversation is simply not there
        typing_announce(conversation=conversation, user=user, origin=origin)
