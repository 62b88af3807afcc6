"""Analytics' background work, both run by beat: folding new events (every 10 s) and writing
the scheduled exports that are due (every minute). Each is safe to run twice at once: the
folder holds an advisory lock, an export claims its workspace with a conditional update."""

from celery import shared_task
from django.utils import timezone

from apps.analytics import services


@shared_task(name="analytics.fold")
def fold() -> int:
    """Folds what arrived since the last run; a backlog larger than one batch is worked through
    before returning, so the rollups stay within seconds of the log."""
    return services.events_fold_all()


@shared_task(name="analytics.export_due")
def export_due() -> int:
    from apps.analytics.export import exports_run_due

    return exports_run_due(now=timezone.now())
