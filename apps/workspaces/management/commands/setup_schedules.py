from django.core.management.base import BaseCommand
from django_celery_beat.models import IntervalSchedule, PeriodicTask

# Periodic work Parley needs, kept in code (not clicked into the admin) so every deployment
# has the same schedule. Later apps add their tasks here.
SCHEDULES = [
    {"name": "Mark absent agents offline", "task": "workspaces.sweep_absent_agents", "every": 60},
    {"name": "Purge conversations past their retention", "task": "workspaces.retention_purge", "every": 3600},
    {
        "name": "Requeue outbound messages whose task was lost",
        "task": "conversations.requeue_stale_messages",
        "every": 60,
    },
    {"name": "Reopen snoozed conversations whose time has come", "task": "conversations.wake_snoozed", "every": 60},
    {"name": "Apply stored webhooks whose wake-up was lost", "task": "conversations.drain_inbound", "every": 60},
    {"name": "Send webhook deliveries that are due", "task": "connectors.retry_due_webhooks", "every": 60},
    {"name": "Fetch new mail from IMAP mailboxes", "task": "connectors.poll_channels", "every": 60},
    {"name": "Resume workflow runs whose timer is due", "task": "workflows.timeouts", "every": 60},
    {"name": "Start scheduled workflows", "task": "workflows.schedules", "every": 60},
    {"name": "Assign queued conversations to free agents", "task": "workflows.dispatch_queues", "every": 60},
    {"name": "Start scheduled broadcasts that are due", "task": "broadcasts.start_due", "every": 60},
    {"name": "Give running broadcasts without a sender a new one", "task": "broadcasts.resume", "every": 60},
    {"name": "Fold new conversation events into the analytics", "task": "analytics.fold", "every": 10},
    {"name": "Write the scheduled analytics exports that are due", "task": "analytics.export_due", "every": 60},
]


class Command(BaseCommand):
    help = "Create or update the periodic tasks Celery beat runs."

    def handle(self, *args, **options):
        for entry in SCHEDULES:
            interval, _ = IntervalSchedule.objects.get_or_create(every=entry["every"], period=IntervalSchedule.SECONDS)
            PeriodicTask.objects.update_or_create(
                name=entry["name"],
                defaults={"task": entry["task"], "interval": interval, "enabled": True},
            )
        self.stdout.write(f"{len(SCHEDULES)} periodic task(s) scheduled.")
