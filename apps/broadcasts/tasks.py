"""Broadcasts' background work. Each task takes ids and calls one service; each is safe to run
twice (a broadcast is claimed with a conditional UPDATE before anything is sent)."""

from celery import shared_task
from django.utils import timezone

from apps.broadcasts import (
    campaigns,  # noqa: F401 (its tasks, run_campaign and back_in_stock_settle, register here)
    services,
)


@shared_task(name="broadcasts.send")
def send_broadcast(broadcast_id: int) -> None:
    """Sends a running broadcast for a slice of time, then hands over to a fresh task."""
    services.broadcast_send(broadcast_id=broadcast_id)


@shared_task(name="broadcasts.start_due")
def start_due() -> int:
    """Beat, every minute, and an ETA task at a near broadcast's time: starts the scheduled
    broadcasts that are due."""
    return services.broadcasts_start_due(now=timezone.now())


@shared_task(name="broadcasts.resume")
def resume() -> int:
    """Beat, every minute: a running broadcast without a live sender (its worker died, or its
    deferred recipients are due) gets one."""
    return services.broadcasts_resume(now=timezone.now())


@shared_task(name="broadcasts.publish_progress")
def publish_progress(broadcast_id: int) -> None:
    """The trailing `broadcast.progress` event a second after a throttled one (results.py)."""
    from apps.broadcasts.results import broadcast_progress_flush

    broadcast_progress_flush(broadcast_id=broadcast_id)
