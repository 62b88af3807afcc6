import logging

from celery import shared_task
from django.utils import timezone

from apps.connectors import services
from apps.connectors.base import ErrorClass, ProviderError

logger = logging.getLogger(__name__)


@shared_task(name="connectors.deliver_webhook")
def deliver_webhook(delivery_id: int) -> None:
    delay = services.webhook_deliver(delivery_id=delivery_id)
    if delay is not None:
        deliver_webhook.apply_async((delivery_id,), countdown=delay)


@shared_task(name="connectors.retry_due_webhooks")
def retry_due_webhooks() -> int:
    return services.webhooks_retry_due(now=timezone.now())


@shared_task(name="connectors.poll_channels")
def poll_channels() -> int:
    """Every minute: one task per mailbox, so a slow server holds up only its own channel."""
    channel_ids = services.channels_to_poll()
    for channel_id in channel_ids:
        poll_channel.delay(channel_id)
    return len(channel_ids)


@shared_task(name="connectors.poll_channel", bind=True, max_retries=3)
def poll_channel(self, channel_id: int) -> int:
    try:
        return services.channel_poll(channel_id=channel_id)
    except ProviderError as error:
        if error.error_class == ErrorClass.RETRY:
            raise self.retry(countdown=30 * 2**self.request.retries) from error
        # A wrong password will not fix itself: say so in the log once a minute, not in a loop.
        logger.warning("polling channel %s failed: %s", channel_id, error)
        return 0
