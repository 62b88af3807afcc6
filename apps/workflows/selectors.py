"""Reads the rest of Parley asks of workflows."""

from django.db.models import Count, Q, QuerySet

from apps.workflows.models import Run, RunLog, Trigger, Workflow

SURVEY_WAITS = ("rating", "comment")


def conversation_keeps_closed(*, conversation) -> bool:
    """A closed conversation whose customer is answering the satisfaction survey stays closed:
    the rating is not a new request."""
    return Run.objects.filter(
        conversation=conversation, state=Run.State.WAITING, waiting__for__in=SURVEY_WAITS
    ).exists()


def automation_wanted(*, conversation) -> bool:
    """Whether a customer's message needs the engine: a run is active, or the workspace has a
    workflow a message can start. Most messages of a workspace without bots skip the task."""
    if Run.objects.filter(conversation=conversation, state__in=Run.ACTIVE).exists():
        return True
    return Workflow.objects.filter(
        workspace_id=conversation.workspace_id,
        enabled=True,
        trigger__in=(Trigger.CONVERSATION_OPENED, Trigger.MESSAGE),
    ).exists()


def shortcut_workflows(*, workspace_id: int) -> QuerySet[Workflow]:
    return Workflow.objects.filter(workspace_id=workspace_id, enabled=True, trigger=Trigger.SHORTCUT)


def step_drop_off(*, workflow: Workflow, version: int | None = None) -> list[dict]:
    """Per step of a workflow: how many runs reached it, and how many stopped there (the run
    ended at that step without finishing: the customer went silent, asked for a person, or the
    run was stopped). The analytics issue reads this."""
    log = RunLog.objects.filter(workflow=workflow)
    if version is not None:
        log = log.filter(version=version)
    reached = {
        row["step"]: row["runs"]
        for row in log.exclude(kind="end").values("step").annotate(runs=Count("run", distinct=True))
    }
    ended = log.filter(kind="end")
    stopped = {
        row["step"]: row["runs"]
        for row in ended.filter(~Q(outcome__in=["done"])).values("step").annotate(runs=Count("run", distinct=True))
    }
    return [
        {
            "step": step,
            "reached": runs,
            "stopped": stopped.get(step, 0),
            "drop_off": round(stopped.get(step, 0) / runs, 3),
        }
        for step, runs in reached.items()
    ]
