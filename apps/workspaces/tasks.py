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


@shared_task(name="workspaces.retention_purge")
def retention_purge() -> int:
    """Purges the content of conversations closed longer ago than each workspace's retention
    period (apps/contacts/privacy.retention_purge). Run every hour by beat; a workspace without a
    period is not read."""
    from apps.contacts.privacy import retention_purge as purge  # contacts builds on workspaces
    from apps.workspaces.models import PrivacySettings

    workspace_ids = PrivacySettings.objects.filter(retention_days__isnull=False).values_list("workspace_id", flat=True)
    return sum(purge(workspace_id=workspace_id)["conversations"] for workspace_id in list(workspace_ids))
