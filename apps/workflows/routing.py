"""Routing: which agent of a team takes a conversation, and the team's queue when nobody can.

Many workers route and dispatch at once, so every decision is taken under row locks, always in
the same order: the conversation, then the team's row, then the team's members' AgentStatus rows
by id. Teams share agents; one fixed order means two teams never wait on each other in a circle.
An agent's open conversations are counted while their row is locked, and the assignment commits
before the lock is released, so the next router counts it: nobody goes over capacity and no
conversation is handed out twice. The team's row serialises its queue, so `queued_at` follows the
order in which conversations really joined it.

A dispatcher holds the team's row and reads the queue with SKIP LOCKED: a router that holds a
queued conversation is itself waiting for the team's row, so waiting for that conversation
would be a deadlock. A skipped conversation is served by the next dispatch (beat runs one every
minute)."""

import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import partial

from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from apps.conversations import payloads
from apps.conversations.models import Conversation
from apps.core import realtime
from apps.core.events import build_event
from apps.core.exceptions import DomainError, NotFound
from apps.workspaces.models import AgentStatus, Membership, Shift, ShiftException, Team
from apps.workspaces.selectors import team_is_on_shift

logger = logging.getLogger(__name__)

ASSIGNED, QUEUED, CLOSED = "assigned", "queued", "closed"
ROUND_ROBIN, LEAST_OPEN = "round_robin", "least_open"
STRATEGIES = (ROUND_ROBIN, LEAST_OPEN)
# What counts against an agent's capacity: a snoozed conversation does not need them now.
ACTIVE_STATUSES = (Conversation.Status.OPEN, Conversation.Status.PENDING)
OPENS_AT_HORIZON_DAYS = 8
NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass
class RouteResult:
    outcome: str  # ASSIGNED, QUEUED, or CLOSED (the team is off shift: queued, assigned when it opens)
    agent: Membership | None = None
    position: int | None = None  # 1-based place in the team's queue
    wait_minutes: int | None = None  # expected wait, when queued
    busy: bool = False  # queued at peak load: the queue or the expected wait is past the team's thresholds
    opens_at: datetime | None = None  # when closed: the next shift start, in the workspace's time zone


def conversation_route(
    *,
    conversation: Conversation,
    team: Team,
    strategy: str = ROUND_ROBIN,
    online_only: bool = True,
    respect_capacity: bool = True,
) -> RouteResult:
    """Gives the conversation to the team: to one of its free agents, else to its queue. Routing
    it again is harmless: it stays with a team member who has it, or keeps its place in line."""
    if strategy not in STRATEGIES:
        raise DomainError(f"Unknown routing strategy {strategy!r}.", code="invalid_strategy")
    if team.workspace_id != conversation.workspace_id:
        raise DomainError("That team is not in this workspace.", code="invalid_team")
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update(of=("self",)).get(pk=conversation.pk)
        team = _lock_team(team.pk)
        if team is None:
            raise NotFound("That team no longer exists.")
        now = timezone.now()
        if not team_is_on_shift(team=team, at=now):
            return _enqueue(conversation, team, now, outcome=CLOSED)
        agents = _lock_agents(team)
        agent = _current_assignee(conversation, agents, online_only=online_only) or _pick(
            agents, _open_counts(agents), strategy=strategy, online_only=online_only, respect_capacity=respect_capacity
        )
        if agent is None:
            return _enqueue(conversation, team, now, outcome=QUEUED, agents_online=len(_online(agents)))
        _assign(conversation, agent, team)
    return RouteResult(ASSIGNED, agent=agent.membership)


def queue_dispatch(*, team_id: int) -> int:
    """Assigns the team's longest-waiting conversations to its free agents (online, under
    capacity, the least loaded first). Returns how many it assigned."""
    _queue_drop_stale(team_id)
    assigned = 0
    with transaction.atomic():
        team = _lock_team(team_id)
        if team is None or not team_is_on_shift(team=team, at=timezone.now()):
            return 0
        agents = _lock_agents(team)
        counts = _open_counts(agents)
        while free := _free_slots(agents, counts):
            # FOR UPDATE re-checks the filter on each row's latest version, so a conversation
            # closed or assigned since the query began is left out.
            waiting = list(team_queue(team=team).select_for_update(skip_locked=True, of=("self",))[:free])
            if not waiting:
                break
            for conversation in waiting:
                agent = _pick(agents, counts, strategy=LEAST_OPEN)
                _assign(conversation, agent, team)
                counts[agent.membership_id] += 1
                assigned += 1
    return assigned


def queues_dispatch_all() -> int:
    """Every team with a queue (beat, each minute): a shift has begun, or a wake-up was lost."""
    Conversation.objects.filter(queued_at__isnull=False, team__isnull=True).update(queued_at=None)
    team_ids = list(
        Conversation.objects.filter(queued_at__isnull=False).order_by().values_list("team_id", flat=True).distinct()
    )
    assigned = 0
    for team_id in team_ids:
        try:
            assigned += queue_dispatch(team_id=team_id)
        except Exception:  # one team's failure must not starve the others' queues
            logger.exception("Dispatching the queue of team %s failed", team_id)
    return assigned


def queues_dispatch_on_commit(team_ids: Iterable[int | None]) -> None:
    """After commit, a `workflows.dispatch_queue` task per team. Robust: a broker that is down
    must not undo the close or status change that freed the agent; beat serves the queue then."""
    for team_id in dict.fromkeys(team_id for team_id in team_ids if team_id is not None):
        transaction.on_commit(partial(_dispatch_later, team_id), robust=True)


def _dispatch_later(team_id: int) -> None:
    from apps.workflows.tasks import dispatch_queue  # tasks import this module

    dispatch_queue.delay(team_id)


def teams_of(membership: Membership | None) -> list[int]:
    """The ids of the teams an agent works in (none for Parley itself)."""
    if membership is None:
        return []
    return list(membership.teams.order_by("id").values_list("id", flat=True))


def team_queue(*, team: Team) -> QuerySet[Conversation]:
    """The team's queue, longest waiting first."""
    return Conversation.objects.filter(
        team=team, queued_at__isnull=False, assignee__isnull=True, status__in=ACTIVE_STATUSES
    ).order_by("queued_at", "id")


def team_opens_at(*, team: Team, after: datetime) -> datetime | None:
    """The team's next shift start after `after`, within 8 days, holidays and special days
    included; in the workspace's time zone. None when nothing opens in that time."""
    tz = team.workspace.tz
    first = after.astimezone(tz).date()
    days = [first + timedelta(days=n) for n in range(OPENS_AT_HORIZON_DAYS + 1)]
    exceptions = {e.date: e for e in ShiftException.objects.filter(team=team, date__range=(days[0], days[-1]))}
    starts = defaultdict(list)
    for weekday, starts_at in Shift.objects.filter(team=team).values_list("weekday", "starts_at"):
        starts[weekday].append(starts_at)
    for day in days:
        exception = exceptions.get(day)
        if exception is not None and exception.closed:
            continue
        day_starts = starts[day.weekday()] if exception is None else [exception.starts_at or time(0)]
        upcoming = [opens for opens in (datetime.combine(day, s, tzinfo=tz) for s in day_starts) if opens > after]
        if upcoming:
            return min(upcoming)
    return None


# Inside the locks ------------------------------------------------------------------------------


def _lock_team(team_id: int) -> Team | None:
    # NO KEY UPDATE: conversations may still be filed under the team (their foreign key check
    # takes KEY SHARE) while routers queue behind this lock.
    locked = Team.objects.select_for_update(no_key=True, of=("self",)).select_related("workspace")
    return locked.filter(pk=team_id).first()


def _lock_agents(team: Team) -> list[AgentStatus]:
    """The team's members' statuses, locked in id order. A member without a status row
    (membership_add always makes one) is treated as offline: there is nothing to lock."""
    return list(
        AgentStatus.objects.select_for_update(of=("self",))
        .filter(membership__teams=team)
        .select_related("membership__user")
        .order_by("id")
    )


def _open_counts(agents: list[AgentStatus]) -> defaultdict[int, int]:
    rows = (
        Conversation.objects.filter(assignee_id__in=[a.membership_id for a in agents], status__in=ACTIVE_STATUSES)
        .order_by()
        .values_list("assignee_id")
        .annotate(count=Count("id"))
    )
    return defaultdict(int, rows)


def _online(agents: list[AgentStatus]) -> list[AgentStatus]:
    return [agent for agent in agents if agent.status == AgentStatus.Status.ONLINE]


def _free_slots(agents: list[AgentStatus], counts: dict[int, int]) -> int:
    return sum(max(0, agent.capacity - counts[agent.membership_id]) for agent in _online(agents))


def _waited(agent: AgentStatus) -> tuple:
    """Round robin: whoever was given a conversation longest ago (or never) goes first."""
    return (agent.last_assigned_at or NEVER, agent.id)


def _pick(
    agents: list[AgentStatus],
    counts: dict[int, int],
    *,
    strategy: str,
    online_only: bool = True,
    respect_capacity: bool = True,
) -> AgentStatus | None:
    eligible = [
        agent
        for agent in (_online(agents) if online_only else agents)
        if not respect_capacity or counts[agent.membership_id] < agent.capacity
    ]
    if not eligible:
        return None
    if strategy == LEAST_OPEN:
        return min(eligible, key=lambda agent: (counts[agent.membership_id], *_waited(agent)))
    return min(eligible, key=_waited)


def _current_assignee(
    conversation: Conversation, agents: list[AgentStatus], *, online_only: bool
) -> AgentStatus | None:
    """A team member who already has the conversation keeps it (a second route is no reassignment)."""
    for agent in _online(agents) if online_only else agents:
        if agent.membership_id == conversation.assignee_id:
            return agent
    return None


def _assign(conversation: Conversation, agent: AgentStatus, team: Team) -> None:
    from apps.conversations.services.actions import conversation_assign  # actions calls back into routing

    if conversation.queued_at is not None:
        conversation.queued_at = None
        conversation.save(update_fields=["queued_at"])  # before the assignment, whose event carries it
    conversation_assign(conversation=conversation, actor=None, membership=None, assignee=agent.membership, team=team)
    agent.last_assigned_at = timezone.now()
    agent.save(update_fields=["last_assigned_at"])


def _enqueue(
    conversation: Conversation, team: Team, now: datetime, *, outcome: str, agents_online: int = 0
) -> RouteResult:
    from apps.conversations.services.actions import conversation_assign

    already_waiting = conversation.team_id == team.pk and conversation.assignee_id is None
    queued_at = conversation.queued_at if already_waiting and conversation.queued_at else now
    previous = conversation.queued_at
    # After the assignment: unassigning or moving teams may clear queued_at in conversation_assign.
    conversation = conversation_assign(
        conversation=conversation, actor=None, membership=None, assignee=None, team=team
    )
    conversation.queued_at = queued_at
    conversation.save(update_fields=["queued_at"])
    if queued_at != previous:
        from apps.analytics.services import event_record

        event_record(conversation=conversation, kind="queued", by="system")
        realtime.publish_on_commit(
            conversation.workspace_id,
            build_event("conversation.updated", conversation=payloads.conversation_event(conversation)),
        )
    return _place_in_queue(conversation, team, outcome=outcome, agents_online=agents_online, now=now)


def _place_in_queue(
    conversation: Conversation, team: Team, *, outcome: str, agents_online: int, now: datetime
) -> RouteResult:
    queue = team_queue(team=team)
    ahead = queue.filter(
        Q(queued_at__lt=conversation.queued_at) | Q(queued_at=conversation.queued_at, pk__lt=conversation.pk)
    )
    position = ahead.count() + 1
    if outcome == CLOSED:
        # Out of hours the customer needs the opening time; a wait or "busy" would mislead.
        return RouteResult(CLOSED, position=position, opens_at=team_opens_at(team=team, after=now))
    wait = math.ceil(position * team.average_handle_minutes / max(1, agents_online))
    busy = queue.count() > team.queue_busy_length or wait > team.queue_busy_wait_minutes
    return RouteResult(QUEUED, position=position, wait_minutes=wait, busy=busy)


def _queue_drop_stale(team_id: int) -> None:
    """Conversations closed or assigned by hand while they waited leave the queue. Rows someone
    holds are skipped, not waited for: whoever holds them settles them."""
    stale = Conversation.objects.filter(team_id=team_id, queued_at__isnull=False).filter(
        Q(assignee__isnull=False) | Q(status=Conversation.Status.CLOSED)
    )
    with transaction.atomic():
        ids = list(stale.select_for_update(skip_locked=True, of=("self",)).values_list("pk", flat=True))
        if ids:
            Conversation.objects.filter(pk__in=ids).update(queued_at=None)
