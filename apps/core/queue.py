"""What waits in Celery's queue, as long-running tasks need to know it.

The inbound drainers run for seconds at a time, one Celery process each. With a worker's few
processes all draining, a task that waits behind them (an operator's reply to send, a media file
to fetch) would wait for a drainer's whole slice. So between two batches a drainer looks at the
head of the queue, and if a task of another kind waits there, it hands its process over: it queues
its own continuation behind that task and returns (`short_task_waiting`)."""

import json

from django.conf import settings

from apps.core.redis import get_redis, key

# Tasks that run for a slice of time and hand over to a fresh copy of themselves: one of these
# waiting is no reason for another to step aside (the drainers would only take turns).
LONG_TASKS = frozenset({"conversations.drain_inbound_events", "broadcasts.send"})
LOOK_AHEAD = 20  # the queue's next tasks looked at


def short_task_waiting(queue: str | None = None) -> bool:
    """True if one of the next tasks in `queue` (the default queue) is not a long one. Celery's
    Redis transport pushes tasks on the left of a list (named with our key prefix: settings'
    `global_keyprefix`) and takes them from the right, each a JSON envelope naming its task in
    `headers.task`; anything unreadable counts as waiting."""
    queue = queue or settings.CELERY_TASK_DEFAULT_QUEUE
    for raw in get_redis().lrange(key(queue), -LOOK_AHEAD, -1):
        try:
            name = json.loads(raw)["headers"]["task"]
        except (ValueError, KeyError, TypeError):
            return True
        if name not in LONG_TASKS:
            return True
    return False
