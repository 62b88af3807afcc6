from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from apps.workspaces import selectors, services


@shared_task(name="workspaces.sweep_absent_agents")
def sweep_absent_agents() -> int:
    """Marks offline the agents whose every tab has been closed for longer than the grace
    period, so routing stops giving them conversations. Run every minute by beat."""
    older_than = timezone.now() - timedelta(seconds=settings.AGENT_PRESENCE_GRACE_SECONDS)
    stale_ids = list(selectors.agent_statuses_stale(older_than=older_than).values_list("id", flat=True))
    return sum(
        services.agent_mark_offline_if_stale(agent_status_id=agent_id, older_than=older_than) for agent_id in stale_ids
    )
