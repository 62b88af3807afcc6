"""How a web process feeds its sockets a workspace's events: it reads the workspace's Redis stream
(the one `realtime.publish` appends to) once, and hands what it read to every socket of that
workspace connected here.

The Channels layer used to carry each event to each socket: one Redis message per socket per
event, popped one round trip at a time by the process's single receive loop. With 25 operators on
a process that loop served about 90 events a second, and a busy day's customer messages reached
operators tens of seconds late. Here a process makes one `XREAD` per batch of events whatever the
number of its sockets, encodes each batch once, and a socket misses nothing: the reader goes on
from the id it read last, across Redis restarts too (stream ids grow with the clock)."""

import asyncio
import json
import logging
from weakref import WeakKeyDictionary

import redis
import redis.asyncio
from django.conf import settings

from apps.core.realtime import stream_key

logger = logging.getLogger(__name__)

BLOCK_MS = 5_000  # an idle stream's read returns this often (and the reader sees it is still wanted)
BATCH_SECONDS = 0.05  # after a batch, the events of the next 50 ms go out together: 20 frames a second at most
READ_COUNT = 1_000  # per read; more waiting is read at once after
RETRY_SECONDS = 0.5  # Redis away: the reader tries again this often, from the id it read last
READY_TIMEOUT = 10


class _Reader:
    """One workspace's stream, read for the sockets of it in this process."""

    def __init__(self, workspace_id: int):
        self.workspace_id = workspace_id
        self.sockets: set = set()
        self.position: str | None = None  # the id read last; every socket has had all before it
        self.ready = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"stream-reader-{workspace_id}")

    async def _run(self) -> None:
        client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL, socket_timeout=BLOCK_MS / 1000 + 10, socket_connect_timeout=2
        )
        stream = stream_key(self.workspace_id)
        try:
            while self.position is None:
                try:
                    newest = await client.xrevrange(stream, count=1)
                except (redis.ConnectionError, redis.TimeoutError):
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                self.position = newest[0][0].decode() if newest else "0-0"
            self.ready.set()
            while True:  # until the last socket leaves (Hub.leave cancels it)
                try:
                    read = await client.xread({stream: self.position}, count=READ_COUNT, block=BLOCK_MS)
                    if read:
                        await self._hand_out(read[0][1])
                except (redis.ConnectionError, redis.TimeoutError):
                    await asyncio.sleep(RETRY_SECONDS)
                except Exception:  # a reader that stopped would leave its sockets deaf
                    logger.exception("reading the events of workspace %s", self.workspace_id)
                    await asyncio.sleep(RETRY_SECONDS)
                else:
                    if read and len(read[0][1]) < READ_COUNT:
                        await asyncio.sleep(BATCH_SECONDS)
        finally:
            await client.aclose()

    async def _hand_out(self, entries: list) -> None:
        """One frame per socket, encoded once for all but the sockets whose own actions are in it
        (an author's page already shows what it did: those events are left out of its frame)."""
        self.position = entries[-1][0].decode()  # before any await: a socket joining now starts here
        events = []
        for entry_id, fields in entries:
            event = json.loads(fields[b"event"])
            event["id"] = entry_id.decode()
            events.append(event)
        common = None
        origins = {event.get("origin") for event in events} - {None}
        for socket in list(self.sockets):
            if socket.channel_name in origins:
                frame = _frame([event for event in events if event.get("origin") != socket.channel_name])
            else:
                common = common or _frame(events)
                frame = common
            if frame is None:
                continue
            try:
                await socket.send(text_data=frame)
            except Exception:  # a socket closing as it is written to: its disconnect removes it
                logger.debug("stream event to a closing socket", exc_info=True)


def _frame(events: list[dict]) -> str | None:
    if not events:
        return None
    if len(events) == 1:
        return json.dumps(events[0])
    return json.dumps({"type": "events", "events": events})


class Hub:
    """The readers of one event loop (a web process runs one), by workspace."""

    def __init__(self):
        self.readers: dict[int, _Reader] = {}

    async def join(self, workspace_id: int, socket) -> str:
        """Feeds `socket` every event of the workspace after the id returned."""
        reader = self.readers.get(workspace_id)
        if reader is None or reader.task.done():
            reader = self.readers[workspace_id] = _Reader(workspace_id)
        if not reader.ready.is_set():
            try:
                await asyncio.wait_for(reader.ready.wait(), READY_TIMEOUT)
            except TimeoutError:
                if not reader.sockets and self.readers.get(workspace_id) is reader:
                    self._stop(workspace_id)
                raise
        # No await from here: the socket gets every event after the id it is told.
        reader.sockets.add(socket)
        return reader.position

    def leave(self, workspace_id: int, socket) -> None:
        reader = self.readers.get(workspace_id)
        if reader is not None and socket in reader.sockets:
            reader.sockets.discard(socket)
            if not reader.sockets:
                self._stop(workspace_id)

    def _stop(self, workspace_id: int) -> None:
        self.readers.pop(workspace_id).task.cancel()


_hubs: WeakKeyDictionary = WeakKeyDictionary()


def hub() -> Hub:
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub()
    return found
