"""The workflow engine's background work. Every task takes ids and calls one service; each is
safe to run twice (the services claim their work under the conversation's lock)."""

from celery import shared_task
from django.utils import timezone

from apps.workflows import routing, services


@shared_task(name="workflows.advance")
def advance(conversation_id: int, opened_message_id: int | None = None) -> None:
    """A customer wrote: the conversation's run takes the new messages, or a trigger starts one."""
    services.conversation_advance(conversation_id=conversation_id, opened_message_id=opened_message_id)


@shared_task(name="workflows.event")
def event(conversation_id: int, trigger: str, details: dict | None = None) -> None:
    """Something happened to a conversation (closed, tagged, an order changed): start what it triggers."""
    services.conversation_event(conversation_id=conversation_id, trigger=trigger, details=details or {})


@shared_task(name="workflows.resume")
def resume(run_id: int) -> None:
    """A waiting run's timer fired (a wait step, a question's timeout), or its HTTP call is due."""
    services.run_resume(run_id=run_id)


@shared_task(name="workflows.timeouts")
def timeouts() -> int:
    """Beat's safety net for timers whose task was lost: resumes every run past its time."""
    return services.runs_resume_due(now=timezone.now())


@shared_task(name="workflows.schedules")
def schedules() -> int:
    """Beat, every minute: starts the scheduled workflows that are due."""
    return services.schedules_run(now=timezone.now())


@shared_task(name="workflows.dispatch_queue")
def dispatch_queue(team_id: int) -> int:
    """Someone may be free in this team: assign its longest-waiting conversations."""
    return routing.queue_dispatch(team_id=team_id)


@shared_task(name="workflows.dispatch_queues")
def dispatch_queues() -> int:
    """Beat, every minute: every team with a queue, in case a shift began or a wake-up was lost."""
    return routing.queues_dispatch_all()
