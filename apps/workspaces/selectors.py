"""Reads for workspaces, and the one place that decides which workspace a request acts in."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import QuerySet

from apps.core.exceptions import NotFound
from apps.workspaces.models import (
    ADMIN_ROLES,
    INTEGRATION_ROLE,
    WEEKDAYS,
    AgentStatus,
    ApiToken,
    Membership,
    Shift,
    ShiftException,
    Team,
    User,
    Workspace,
)

SESSION_WORKSPACE_KEY = "workspace_id"
WORKSPACE_HEADER = "HTTP_X_PARLEY_WORKSPACE"


@dataclass(frozen=True)
class WorkspaceContext:
    workspace: Workspace
    role: str
    membership: Membership | None  # None for an API token


def memberships_for_user(user: User) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("workspace").order_by("workspace__name")


def membership_get(*, user: User, workspace: Workspace) -> Membership | None:
    return Membership.objects.filter(user=user, workspace=workspace).first()


def workspace_context_for_user(user: User, slug: str | None, *, preferred_id: int | None = None):
    """The workspace a signed-in user acts in: the one named by slug, else their preferred
    one, else their first. None when they are not a member of the one named (or of any)."""
    memberships = memberships_for_user(user)
    if slug:
        membership = memberships.filter(workspace__slug=slug).first()
    else:
        membership = memberships.filter(workspace_id=preferred_id).first() if preferred_id else None
        membership = membership or memberships.first()
    if membership is None:
        return None
    return WorkspaceContext(membership.workspace, membership.role, membership)


def workspace_context_for_request(request) -> WorkspaceContext:
    token = getattr(request, "auth", None)
    if isinstance(token, ApiToken):
        return WorkspaceContext(token.workspace, INTEGRATION_ROLE, None)
    session = getattr(request, "session", None)
    context = workspace_context_for_user(
        request.user,
        request.META.get(WORKSPACE_HEADER),
        preferred_id=session.get(SESSION_WORKSPACE_KEY) if session is not None else None,
    )
    if context is None:
        raise NotFound("No such workspace.")
    return context


def workspaces_administered_by(user: User) -> QuerySet[Workspace]:
    """Workspaces whose configuration this user may see in the admin."""
    if user.is_superuser:
        return Workspace.objects.all()
    return Workspace.objects.filter(memberships__user=user, memberships__role__in=ADMIN_ROLES)


def api_token_get_active(raw: str) -> ApiToken | None:
    return (
        ApiToken.objects.select_related("workspace")
        .filter(token_hash=ApiToken.hash(raw), revoked_at__isnull=True)
        .first()
    )


def team_list(*, workspace: Workspace) -> QuerySet[Team]:
    return Team.objects.filter(workspace=workspace).prefetch_related("members__user")


def agent_list(*, workspace: Workspace) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(workspace=workspace).select_related("user", "agent_status").prefetch_related("teams")
    )


def agent_statuses_stale(*, older_than: datetime) -> QuerySet[AgentStatus]:
    """Agents shown as present whose browser has not been heard from since `older_than`."""
    return AgentStatus.objects.exclude(status=AgentStatus.Status.OFFLINE).filter(last_seen_at__lt=older_than)


def _within(moment: datetime, day_start: datetime, start, end) -> bool:
    opens = day_start.replace(hour=start.hour, minute=start.minute)
    closes = day_start.replace(hour=end.hour, minute=end.minute)
    if closes <= opens:  # runs past midnight
        closes += timedelta(days=1)
    return opens <= moment < closes


def team_is_on_shift(*, team: Team, at: datetime) -> bool:
    """Whether the team works at `at`, in its workspace's time zone, holidays included. A team
    with no weekly shifts at all works around the clock, except on the days marked closed."""
    local = at.astimezone(team.workspace.tz)
    if not Shift.objects.filter(team=team).exists():
        exception = ShiftException.objects.filter(team=team, date=local.date()).first()
        if exception is None:
            return True
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return not exception.closed and _within(local, day, exception.starts_at, exception.ends_at)
    for day_offset in (0, -1):  # yesterday's overnight shift may still be running
        day = (local + timedelta(days=day_offset)).replace(hour=0, minute=0, second=0, microsecond=0)
        exception = ShiftException.objects.filter(team=team, date=day.date()).first()
        if exception is not None:
            if not exception.closed and _within(local, day, exception.starts_at, exception.ends_at):
                return True
            continue
        shifts = Shift.objects.filter(team=team, weekday=day.weekday())
        if any(_within(local, day, shift.starts_at, shift.ends_at) for shift in shifts):
            return True
    return False


def workspace_is_open(*, workspace: Workspace, at: datetime) -> bool:
    from datetime import time

    local = at.astimezone(workspace.tz)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    intervals = workspace.business_hours.get(WEEKDAYS[local.weekday()], [])
    return any(_within(local, day, time.fromisoformat(start), time.fromisoformat(end)) for start, end in intervals)
