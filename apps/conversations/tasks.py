from datetime import timedelta

from celery import shared_task
from django.db import DatabaseError
from django.utils import timezone
from redis import RedisError

from apps.conversations import services
from apps.conversations.services import SendLater, StatusForUnknownMessage
from apps.core.queue import short_task_waiting


@shared_task(name="conversations.process_inbound_event", bind=True, max_retries=5)
def process_inbound_event(self, event_id: int) -> None:
    try:
        services.inbound_event_process(event_id=event_id)
    except StatusForUnknownMessage as error:
        # The status raced ahead of the send that caused it being recorded; try again shortly.
        raise self.retry(countdown=2, exc=error) from error


@shared_task(name="conversations.drain_inbound_events", bind=True, max_retries=None)
def drain_inbound_events(self, slot: int) -> int:
    try:
        return services.inbound_events_drain(slot=slot, step_aside=short_task_waiting)
    except (DatabaseError, RedisError) as error:
        # PostgreSQL or Redis went away under the drainer (a restart, a failover). Failing would
        # leave its slot taken for two minutes, and webhooks stored meanwhile waiting as long:
        # the drainer keeps its slot and tries again shortly, until the server is back.
        raise self.retry(countdown=min(30, 2**self.request.retries), exc=error) from error
    except Exception:
        # Anything else is a bug, raised for the log; the slot is given back first (held, no
        # inbound would be applied until its two-minute expiry) and another drainer woken. The
        # batch it was on stays claimed, so the next one goes on with the rest.
        services.inbound_drain_release(slot=slot)
        raise


@shared_task(name="conversations.drain_inbound")
def drain_inbound() -> bool:
    """Beat's safety net: wakes a drainer if deliveries wait and no wake-up reached one."""
    from apps.conversations.models import InboundEvent

    if InboundEvent.objects.filter(state=InboundEvent.State.PENDING).exists():
        return services.inbound_drain_kick()
    return False


@shared_task(name="conversations.deliver_message", bind=True, max_retries=None)
def deliver_message(self, message_id: int) -> None:
    try:
        services.message_deliver(message_id=message_id)
    except SendLater as later:
        deliver_message.apply_async((message_id,), countdown=later.delay)


@shared_task(name="conversations.fetch_inbound_media")
def fetch_inbound_media(attachment_id: int) -> None:
    services.attachment_fetch(attachment_id=attachment_id)


@shared_task(name="conversations.requeue_stale_messages")
def requeue_stale_messages() -> int:
    return services.messages_requeue_stale(older_than=timezone.now() - timedelta(minutes=2))


@shared_task(name="conversations.wake_snoozed")
def wake_snoozed() -> int:
    return services.conversations_wake_snoozed(now=timezone.now())
