"""The one websocket of the product, /ws/. It authenticates by the session, joins the groups of
the chosen workspace and of the user, relays events, and answers catch-up requests. It holds
no business rules: one handler per message type."""

import json
import re
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.core import realtime
from apps.core.hub import hub
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
        for group in self.joined:  # for what is not kept in the stream: typing hints, notifications
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        last_id = await hub().join(self.workspace_id, self)
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
        if self.workspace_id is not None:
            hub().leave(self.workspace_id, self)
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
        """What the Channels layer brings: events not kept in the stream (the stream's own reach
        the socket through apps.core.hub)."""
        event = message["event"]
        if event.get("origin") == self.channel_name:
            return  # the author's own action: its page already shows it
        await self.send(text_data=json.dumps(event))


def _typing(*, workspace_id: int, conversation_id: int, user, origin: str) -> None:
    from apps.conversations.selectors import conversation_get
    from apps.conversations.services import typing_announce

    conversation = conversation_get(workspace_id=workspace_id, pk=conversation_id)
    if conversation is not None:  # another workspace's conversation is simply not there
        typing_announce(conversation=conversation, user=user, origin=origin)
