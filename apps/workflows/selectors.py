"""Reads the rest of Parley asks of workflows."""

from django.db.models import Count, Q, QuerySet

from apps.core.memo import remembered
from apps.workflows.models import Run, RunLog, Trigger, Workflow

SURVEY_WAITS = ("rating", "comment")


def conversation_keeps_closed(*, conversation) -> bool:
    """A closed conversation whose customer is answering the satisfaction survey stays closed:
    the rating is not a new request."""
    return Run.objects.filter(
        conversation=conversation, state=Run.State.WAITING, waiting__for__in=SURVEY_WAITS
    ).exists()


_NOT_ANNOTATED = object()


def automation_wanted(*, conversation) -> bool:
    """Whether a customer's message needs the engine: a run is active, or the workspace has a
    workflow a message can start. Most messages of a workspace without bots skip the task. A
    conversation read with its bot annotated (conversations.selectors.with_bot) costs no query for
    the first question; the second is asked once per batch of deliveries (core.memo)."""
    active_bot = getattr(conversation, "active_bot", _NOT_ANNOTATED)
    if active_bot is _NOT_ANNOTATED:
        if Run.objects.filter(conversation=conversation, state__in=Run.ACTIVE).exists():
            return True
    elif active_bot is not None:
        return True
    workspace_id = conversation.workspace_id
    return remembered(
        ("workflows-started-by-messages", workspace_id), lambda: workflows_started_by_messages(workspace_id)
    )


def workflows_started_by_messages(workspace_id: int) -> bool:
    triggers = (Trigger.CONVERSATION_OPENED, Trigger.MESSAGE)
    return Workflow.objects.filter(workspace_id=workspace_id, enabled=True, trigger__in=triggers).exists()


def shortcut_workflows(*, workspace_id: int) -> QuerySet[Workflow]:
    return Workflow.objects.filter(workspace_id=workspace_id, enabled=True, trigger=Trigger.SHORTCUT)


def step_drop_off(*, workflow: Workflow, version: int | None = None) -> list[dict]:
    """Per step of a workflow: how many runs reached it, how many stopped there (the customer
    went silent past the step's timeout, asked for a person, was handed over or stopped), and how
    many wait there now. The admin shows it on the workflow's page; the analytics issue reads it."""
    log = RunLog.objects.filter(workflow=workflow)
    runs = Run.objects.filter(workflow=workflow)
    if version is not None:
        log = log.filter(version=version)
        runs = runs.filter(version__number=version)
    reached = dict(log.exclude(kind="end").values_list("step").annotate(runs=Count("run", distinct=True)).order_by())
    stopped = dict(
        log.filter(kind="end")
        .filter(~Q(outcome=Run.State.DONE) | Q(detail__in=["timed out", "no answer", "no feedback"]))
        .values_list("step")
        .annotate(runs=Count("run", distinct=True))
        .order_by()
    )
    waiting = dict(runs.filter(state__in=Run.ACTIVE).values_list("step").annotate(runs=Count("id")).order_by())
    order = {step["key"]: index for index, step in enumerate(_steps_of(workflow))}
    return [
        {
            "step": step,
            "reached": count,
            "stopped": stopped.get(step, 0),
            "waiting": waiting.get(step, 0),
            "drop_off": round(stopped.get(step, 0) / count, 3) if count else 0.0,
        }
        for step, count in sorted(reached.items(), key=lambda item: order.get(item[0], len(order)))
    ]


def _steps_of(workflow: Workflow) -> list[dict]:
    latest = workflow.versions.order_by("-number").first()
    return (latest.definition.get("steps") or []) if latest else []
