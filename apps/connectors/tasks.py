from celery import shared_task
from django.utils import timezone

from apps.connectors import services


@shared_task(name="connectors.deliver_webhook")
def deliver_webhook(delivery_id: int) -> None:
    delay = services.webhook_deliver(delivery_id=delivery_id)
    if delay is not None:
        deliver_webhook.apply_async((delivery_id,), countdown=delay)


@shared_task(name="connectors.retry_due_webhooks")
def retry_due_webhooks() -> int:
    return services.webhooks_retry_due(now=timezone.now())
