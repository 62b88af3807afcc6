"""The one way realtime events leave Parley.

Services call `publish_on_commit`, never `publish` inside a transaction: a browser must not
hear of a row that is then rolled back. An event is appended to the workspace's Redis stream,
whose id orders it; each web process reads the streams of the workspaces it has sockets for and
hands every event to them (apps.core.hub), and a socket that reconnects asks for everything after
the last id it saw (`events_since`). What is not worth keeping (typing hints, one person's
notifications) goes to the sockets through the Channels layer's groups instead.
"""

import asyncio
import json
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial

import redis
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from apps.core.redis import get_redis, key

STREAM_MAXLEN = 10_000  # about a busy hour of one workspace's events


class _LayerThread:
    """One event loop per process, in a thread, for sends to the Channels layer from sync code.

    `async_to_sync` would start a fresh loop per call, and channels_redis keeps its connection
    pool per loop, so every event would open a new Redis connection; here the pool lives as long
    as the process (a worker sends a web chat visitor each reply, a web process each typing hint)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loop = None
        self._pid = None

    def _ensure(self):
        import os

        with self._lock:
            if self._loop is None or self._pid != os.getpid():  # a forked worker needs its own
                self._loop = asyncio.new_event_loop()
                self._pid = os.getpid()
                threading.Thread(target=self._loop.run_forever, name="channels-layer", daemon=True).start()
            return self._loop

    def group_send(self, group: str, message: dict) -> None:
        try:
            self._send(group, message)
        except redis.ConnectionError:
            # Redis restarted since the pool's connections were opened: the first command on each
            # finds it closed (and drops it); once more on a fresh connection.
            self._send(group, message)

    def _send(self, group: str, message: dict) -> None:
        future = asyncio.run_coroutine_threadsafe(get_channel_layer().group_send(group, message), self._ensure())
        future.result(timeout=10)


_layer = _LayerThread()


def layer_send(group: str, message: dict) -> None:
    """Sends to a Channels group from sync code (services, tasks, connectors)."""
    _layer.group_send(group, message)


def workspace_group(workspace_id: int) -> str:
    return f"workspace.{workspace_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def stream_key(workspace_id: int) -> str:
    return key("events", workspace_id)


# Inside `batched()` (the inbound drainer applies a whole batch of deliveries in one transaction)
# events are held and leave together when the block ends: one Redis round trip appends them all to
# their streams instead of one each.
_held: ContextVar[list | None] = ContextVar("realtime_held", default=None)


@contextmanager
def batched():
    held: list[tuple[int, dict]] = []
    token = _held.set(held)
    try:
        yield
    finally:
        _held.reset(token)
        if held:
            _publish_many(held)


def _publish_many(held: list[tuple[int, dict]]) -> None:
    pipeline = get_redis().pipeline()  # MULTI: a stream reader wakes once, to the whole batch
    for workspace_id, envelope in held:
        pipeline.xadd(
            stream_key(workspace_id), {"event": json.dumps(envelope)}, maxlen=STREAM_MAXLEN, approximate=True
        )
    pipeline.execute()


def publish(workspace_id: int, event: dict, *, origin: str | None = None) -> str | None:
    """Appends the event to the workspace's stream, which the web processes read for their
    sockets; returns its id (None while held by `batched()`: it is appended when the batch ends)."""
    envelope = {
        **event,
        "workspace_id": workspace_id,
        "origin": origin,
        "at": timezone.now().isoformat(),
    }
    held = _held.get()
    if held is not None:
        held.append((workspace_id, envelope))
        return None
    event_id = (
        get_redis()
        .xadd(stream_key(workspace_id), {"event": json.dumps(envelope)}, maxlen=STREAM_MAXLEN, approximate=True)
        .decode()
    )
    return event_id


def publish_on_commit(workspace_id: int, event: dict, *, origin: str | None = None) -> None:
    # Robust: with Redis unreachable the event is lost to live sockets (they are dropped too, and
    # reload on reconnect), but the hooks after it (a workflow's advance, a media download) run.
    transaction.on_commit(partial(publish, workspace_id, event, origin=origin), robust=True)


def _envelope(workspace_id: int, event: dict, origin: str | None) -> dict:
    return {**event, "workspace_id": workspace_id, "origin": origin, "at": timezone.now().isoformat(), "id": None}


def publish_ephemeral(workspace_id: int, event: dict, *, origin: str | None = None) -> None:
    """To the sockets connected now, not kept in the stream (typing hints: stale in seconds)."""
    _layer.group_send(
        workspace_group(workspace_id), {"type": "realtime.event", "event": _envelope(workspace_id, event, origin)}
    )


def notify_user_on_commit(user_id: int, event: dict, *, workspace_id: int | None = None) -> None:
    """To one person's sockets, whichever workspace they are looking at. Not in the stream: what
    it announces is kept in the database (notifications) and loaded with the page."""

    def send():
        envelope = _envelope(workspace_id, event, None)
        _layer.group_send(user_group(user_id), {"type": "realtime.event", "event": envelope})

    transaction.on_commit(send, robust=True)


def last_event_id(workspace_id: int) -> str:
    newest = get_redis().xrevrange(stream_key(workspace_id), count=1)
    return newest[0][0].decode() if newest else "0-0"


def events_since(workspace_id: int, last_id: str, *, limit: int = 1000) -> list[dict]:
    """Events after `last_id`, oldest first; at most `limit` (then the client reloads)."""
    entries = get_redis().xrange(stream_key(workspace_id), min=f"({last_id}", count=limit)
    events = []
    for entry_id, fields in entries:
        event = json.loads(fields[b"event"])
        event["id"] = entry_id.decode()
        events.append(event)
    return events
