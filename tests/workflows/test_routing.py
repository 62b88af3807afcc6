"""Routing a conversation to a team and one of its agents, the team's queue, and the guarantee
that many workers routing at once never put an agent over capacity nor assign a conversation
twice (real PostgreSQL, real threads, each on its own connection)."""

import queue
import statistics
import threading
from collections import Counter
from datetime import datetime, time, timedelta
from functools import partial
from time import perf_counter, sleep

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from apps.contacts.models import Contact
from apps.conversations.models import Conversation, Message
from apps.conversations.services import conversation_close
from apps.core.exceptions import DomainError
from apps.workflows import routing
from apps.workspaces.models import AgentStatus, ShiftException
from apps.workspaces.services import agent_status_set
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_member, make_shift, make_team, make_workspace

ONLINE, AWAY, OFFLINE = AgentStatus.Status.ONLINE, AgentStatus.Status.AWAY, AgentStatus.Status.OFFLINE
ACTIVE = (Conversation.Status.OPEN, Conversation.Status.PENDING)
# The test server allows 100 connections and other suites share it: 20 workers route the 100.
ROUTING_THREADS = 20


def make_agent(workspace, *, status=ONLINE, capacity=2):
    membership = make_member(workspace)
    AgentStatus.objects.filter(membership=membership).update(status=status, capacity=capacity)
    return membership


def make_team_on_shift(workspace, members, **fields):
    """A team that always works: a 24-hour shift every day."""
    team = make_team(workspace, members=members, **fields)
    for weekday in range(7):
        make_shift(team, weekday=weekday, starts_at=time(0), ends_at=time(0))
    return team


def make_conversations(workspace, count, **fields):
    channel = make_whatsapp_channel(workspace)
    return [
        Conversation.objects.create(
            workspace=workspace,
            contact=Contact.objects.create(workspace=workspace, name=f"Customer {n}"),
            channel=channel,
            **fields,
        )
        for n in range(count)
    ]


def route(conversation, team, **options):
    return routing.conversation_route(conversation=conversation, team=team, **options)


def open_load(membership) -> int:
    return Conversation.objects.filter(assignee=membership, status__in=ACTIVE).count()


def assignments(conversation_ids) -> Counter:
    """Timeline events that gave a conversation to a person, per conversation."""
    events = Message.objects.filter(
        conversation_id__in=conversation_ids, kind=Message.Kind.EVENT, payload__action="assigned"
    )
    return Counter(e.conversation_id for e in events if e.payload.get("assignee_id") is not None)


@pytest.fixture
def workspace(db):
    return make_workspace(timezone="Africa/Cairo")


# Choosing the agent ----------------------------------------------------------------------------


def test_round_robin_spreads_conversations_over_the_online_agents(workspace):
    agents = [make_agent(workspace, capacity=5) for _ in range(3)]
    team = make_team_on_shift(workspace, agents)

    results = [route(conversation, team) for conversation in make_conversations(workspace, 6)]

    assert [r.outcome for r in results] == ["assigned"] * 6
    assert [r.agent for r in results] == agents + agents
    assert all(AgentStatus.objects.get(membership=a).last_assigned_at for a in agents)


def test_an_assigned_conversation_joins_the_team_leaves_the_queue_and_says_so_in_the_timeline(workspace):
    agent = make_agent(workspace)
    team = make_team_on_shift(workspace, [agent])
    (conversation,) = make_conversations(workspace, 1, queued_at=timezone.now())

    route(conversation, team)

    conversation.refresh_from_db()
    assert (conversation.team, conversation.assignee, conversation.queued_at) == (team, agent, None)
    assert assignments([conversation.pk]) == {conversation.pk: 1}


def test_least_open_picks_the_agent_with_the_fewest_open_conversations(workspace):
    busy, idle, middling = (make_agent(workspace, capacity=5) for _ in range(3))
    team = make_team_on_shift(workspace, [busy, idle, middling])
    AgentStatus.objects.filter(membership=idle).update(last_assigned_at=timezone.now())  # round robin would skip
    for agent, status in [(busy, "open"), (busy, "pending"), (middling, "open"), (idle, "closed"), (idle, "snoozed")]:
        make_conversations(workspace, 1, assignee=agent, status=status)
    conversation, second = make_conversations(workspace, 2)

    assert route(conversation, team, strategy="least_open").agent == idle
    # idle and middling now hold one each: the one given a conversation longest ago goes first
    assert route(second, team, strategy="least_open").agent == middling


def test_offline_and_away_agents_are_skipped(workspace):
    offline, away, online = (
        make_agent(workspace, status=OFFLINE),
        make_agent(workspace, status=AWAY),
        make_agent(workspace),
    )
    team = make_team_on_shift(workspace, [offline, away, online])

    results = [route(conversation, team) for conversation in make_conversations(workspace, 2)]

    assert [r.agent for r in results] == [online, online]


def test_without_online_only_an_absent_agent_may_be_chosen(workspace):
    offline = make_agent(workspace, status=OFFLINE)
    team = make_team_on_shift(workspace, [offline])

    (conversation,) = make_conversations(workspace, 1)

    assert route(conversation, team, online_only=False).agent == offline


def test_capacity_is_respected_and_may_be_waived(workspace):
    small, large = make_agent(workspace, capacity=1), make_agent(workspace, capacity=2)
    team = make_team_on_shift(workspace, [small, large])
    make_conversations(workspace, 1, assignee=small)
    make_conversations(workspace, 1, assignee=large)
    first, second, third = make_conversations(workspace, 3)

    assert route(first, team).agent == large
    assert route(second, team).outcome == "queued"
    assert route(third, team, respect_capacity=False).outcome == "assigned"
    assert (open_load(small), open_load(large)) in {(2, 2), (1, 3)}


def test_routing_again_leaves_the_conversation_with_its_agent(workspace):
    agents = [make_agent(workspace) for _ in range(2)]
    team = make_team_on_shift(workspace, agents)
    (conversation,) = make_conversations(workspace, 1)

    first, again = route(conversation, team), route(conversation, team)

    assert again.outcome == "assigned" and again.agent == first.agent
    assert assignments([conversation.pk]) == {conversation.pk: 1}


def test_a_conversation_held_outside_the_team_is_taken_back_and_queued_when_nobody_is_free(workspace):
    outsider = make_agent(workspace)
    team = make_team_on_shift(workspace, [make_agent(workspace, status=OFFLINE)])
    (conversation,) = make_conversations(workspace, 1, assignee=outsider)

    result = route(conversation, team)

    conversation.refresh_from_db()
    assert result.outcome == "queued"
    assert (conversation.assignee, conversation.team) == (None, team)
    assert conversation.queued_at is not None


def test_an_unknown_strategy_is_refused(workspace):
    team = make_team_on_shift(workspace, [])
    (conversation,) = make_conversations(workspace, 1)

    with pytest.raises(DomainError):
        route(conversation, team, strategy="random")


# The queue -------------------------------------------------------------------------------------


def test_with_nobody_free_the_conversation_queues_with_its_place_and_expected_wait(workspace):
    agents = [make_agent(workspace, capacity=1) for _ in range(2)]
    team = make_team_on_shift(workspace, agents, average_handle_minutes=6)
    for agent in agents:
        make_conversations(workspace, 1, assignee=agent)
    waiting = make_conversations(workspace, 3)

    results = [route(conversation, team) for conversation in waiting]

    assert [(r.outcome, r.agent, r.position, r.wait_minutes) for r in results] == [
        ("queued", None, 1, 3),  # ceil(1 * 6 / 2 online)
        ("queued", None, 2, 6),
        ("queued", None, 3, 9),
    ]
    assert list(routing.team_queue(team=team)) == waiting
    assert all(c.assignee_id is None and c.team_id == team.pk for c in routing.team_queue(team=team))


def test_the_queue_is_busy_past_its_length(workspace):
    agent = make_agent(workspace, capacity=1)
    team = make_team_on_shift(
        workspace, [agent], queue_busy_length=2, queue_busy_wait_minutes=1000, average_handle_minutes=10
    )
    make_conversations(workspace, 1, assignee=agent)

    results = [route(conversation, team) for conversation in make_conversations(workspace, 3)]

    assert [r.busy for r in results] == [False, False, True]


def test_the_queue_is_busy_when_the_expected_wait_is_too_long(workspace):
    agent = make_agent(workspace, capacity=1)
    team = make_team_on_shift(
        workspace, [agent], queue_busy_length=100, queue_busy_wait_minutes=15, average_handle_minutes=10
    )
    make_conversations(workspace, 1, assignee=agent)

    results = [route(conversation, team) for conversation in make_conversations(workspace, 2)]

    assert [(r.wait_minutes, r.busy) for r in results] == [(10, False), (20, True)]


def test_routing_a_waiting_conversation_again_keeps_its_place(workspace):
    team = make_team_on_shift(workspace, [make_agent(workspace, status=OFFLINE)])
    first, second = make_conversations(workspace, 2)
    route(first, team)
    route(second, team)
    queued_at = Conversation.objects.get(pk=first.pk).queued_at

    again = route(first, team)

    assert (again.outcome, again.position) == ("queued", 1)
    assert Conversation.objects.get(pk=first.pk).queued_at == queued_at


def test_off_shift_the_conversation_waits_for_the_next_opening(workspace):
    agent = make_agent(workspace)
    team = make_team(workspace, members=[agent])
    tomorrow = timezone.now().astimezone(workspace.tz).date() + timedelta(days=1)
    make_shift(team, weekday=tomorrow.weekday(), starts_at=time(9), ends_at=time(10))
    (conversation,) = make_conversations(workspace, 1)

    result = route(conversation, team)

    assert (result.outcome, result.agent, result.position) == ("closed", None, 1)
    assert (result.wait_minutes, result.busy) == (None, False)  # the opening time is what to tell
    assert result.opens_at == datetime.combine(tomorrow, time(9), tzinfo=workspace.tz)
    assert str(result.opens_at.tzinfo) == "Africa/Cairo"
    assert list(routing.team_queue(team=team)) == [conversation]
    assert routing.queue_dispatch(team_id=team.pk) == 0  # the agent is online, but the shift has not begun


MONDAY = datetime(2025, 6, 2)  # a Monday


@pytest.fixture
def weekly_team(workspace):
    """Works Mondays and Wednesdays, 09:00-17:00 in Cairo."""
    team = make_team(workspace)
    for weekday in (0, 2):
        make_shift(team, weekday=weekday, starts_at=time(9), ends_at=time(17))
    return team


def at(workspace, days: int, hour: int) -> datetime:
    return datetime.combine(MONDAY.date() + timedelta(days=days), time(hour), tzinfo=workspace.tz)


def test_the_team_opens_at_its_next_shift_start(workspace, weekly_team):
    assert routing.team_opens_at(team=weekly_team, after=at(workspace, 0, 8)) == at(workspace, 0, 9)
    assert routing.team_opens_at(team=weekly_team, after=at(workspace, 0, 10)) == at(workspace, 2, 9)
    assert routing.team_opens_at(team=weekly_team, after=at(workspace, 2, 18)) == at(workspace, 7, 9)


def test_the_next_opening_skips_a_holiday_and_honours_special_hours(workspace, weekly_team):
    ShiftException.objects.create(workspace=workspace, team=weekly_team, date=at(workspace, 2, 0).date())
    assert routing.team_opens_at(team=weekly_team, after=at(workspace, 0, 10)) == at(workspace, 7, 9)

    ShiftException.objects.filter(team=weekly_team).update(closed=False, starts_at=time(12), ends_at=time(14))
    assert routing.team_opens_at(team=weekly_team, after=at(workspace, 0, 10)) == at(workspace, 2, 12)


def test_a_team_without_shifts_never_opens(workspace):
    assert routing.team_opens_at(team=make_team(workspace), after=at(workspace, 0, 8)) is None


# Serving the queue -----------------------------------------------------------------------------


def queue_up(workspace, team, count):
    """Conversations that joined the team's queue a minute apart, the first longest ago."""
    start = timezone.now() - timedelta(hours=1)
    return [
        Conversation.objects.create(
            workspace=workspace,
            contact=Contact.objects.create(workspace=workspace, name=f"Waiting {n}"),
            channel=make_whatsapp_channel(workspace),
            team=team,
            queued_at=start + timedelta(minutes=n),
        )
        for n in range(count)
    ]


def dispatch_wakeups(callbacks) -> list[int]:
    return [cb.args[0] for cb in callbacks if getattr(cb, "func", None) is routing._dispatch_later]


def test_an_agent_coming_online_gets_the_longest_waiting_conversations(workspace, django_capture_on_commit_callbacks):
    agent = make_agent(workspace, status=OFFLINE, capacity=2)
    team = make_team_on_shift(workspace, [agent])
    other_team = make_team_on_shift(workspace, [agent])
    first, second, third = queue_up(workspace, team, 3)

    with django_capture_on_commit_callbacks() as callbacks:
        agent_status_set(membership=agent, status=ONLINE)

    assert dispatch_wakeups(callbacks) == [team.pk, other_team.pk]
    assert routing.queue_dispatch(team_id=team.pk) == 2
    assert set(Conversation.objects.filter(assignee=agent)) == {first, second}
    assert list(routing.team_queue(team=team)) == [third]
    assert assignments([first.pk, second.pk, third.pk]) == {first.pk: 1, second.pk: 1}


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_an_agent_coming_online_is_served_by_the_celery_worker(celery_worker_process):
    workspace = make_workspace()
    agent = make_agent(workspace, status=OFFLINE, capacity=1)
    team = make_team_on_shift(workspace, [agent])
    first, second = queue_up(workspace, team, 2)

    agent_status_set(membership=agent, status=ONLINE)

    deadline = perf_counter() + 30
    while not Conversation.objects.filter(assignee=agent).exists() and perf_counter() < deadline:
        sleep(0.1)
    assert list(Conversation.objects.filter(assignee=agent)) == [first]
    assert list(routing.team_queue(team=team)) == [second]


def test_more_capacity_wakes_the_queue_but_going_away_or_staying_online_does_not(
    workspace, django_capture_on_commit_callbacks
):
    agent = make_agent(workspace, status=ONLINE, capacity=1)
    team = make_team_on_shift(workspace, [agent])

    with django_capture_on_commit_callbacks() as more:
        agent_status_set(membership=agent, capacity=3)
    with django_capture_on_commit_callbacks() as same:
        agent_status_set(membership=agent, status=ONLINE)
    with django_capture_on_commit_callbacks() as away:
        agent_status_set(membership=agent, status=AWAY)

    assert (dispatch_wakeups(more), dispatch_wakeups(same), dispatch_wakeups(away)) == ([team.pk], [], [])


def test_dispatch_skips_conversations_closed_or_assigned_meanwhile_and_drops_them_from_the_queue(workspace):
    agent, colleague = make_agent(workspace), make_agent(workspace)
    team = make_team_on_shift(workspace, [agent])
    closed, taken, waiting = queue_up(workspace, team, 3)
    Conversation.objects.filter(pk=closed.pk).update(status=Conversation.Status.CLOSED)
    Conversation.objects.filter(pk=taken.pk).update(assignee=colleague)

    assert routing.queue_dispatch(team_id=team.pk) == 1

    closed.refresh_from_db(), taken.refresh_from_db(), waiting.refresh_from_db()
    assert (closed.assignee, closed.queued_at) == (None, None)
    assert (taken.assignee, taken.queued_at) == (colleague, None)
    assert (waiting.assignee, waiting.queued_at) == (agent, None)


def test_dispatch_with_nobody_free_leaves_the_queue_alone(workspace):
    team = make_team_on_shift(workspace, [make_agent(workspace, status=AWAY)])
    waiting = queue_up(workspace, team, 2)

    assert routing.queue_dispatch(team_id=team.pk) == 0
    assert list(routing.team_queue(team=team)) == waiting


def test_the_beat_sweep_serves_every_team_with_a_queue(workspace):
    first_team = make_team_on_shift(workspace, [make_agent(workspace, capacity=1)])
    second_team = make_team_on_shift(workspace, [make_agent(workspace, capacity=5)])
    queue_up(workspace, first_team, 2)
    queue_up(workspace, second_team, 2)

    assert routing.queues_dispatch_all() == 3
    assert routing.team_queue(team=first_team).count() == 1
    assert not routing.team_queue(team=second_team).exists()


def test_teams_of_an_agent(workspace):
    agent = make_agent(workspace)
    teams = [make_team(workspace, members=[agent]) for _ in range(2)]
    make_team(workspace)

    assert routing.teams_of(agent) == [team.pk for team in teams]
    assert routing.teams_of(None) == []


# Concurrency -----------------------------------------------------------------------------------


def run_concurrently(work, items, *, threads: int):
    """Runs work(item) for every item from `threads` real threads, each on its own database
    connection (closed when the thread ends), released together. Returns the results in item
    order, each call's seconds, and the wall-clock seconds."""
    pending = queue.SimpleQueue()
    for index, item in enumerate(items):
        pending.put((index, item))
    results, seconds, errors = [None] * len(items), [0.0] * len(items), []
    start = threading.Barrier(threads + 1)

    def worker():
        try:
            connection.ensure_connection()  # connecting is not part of the race
            start.wait(timeout=60)
            while True:
                try:
                    index, item = pending.get_nowait()
                except queue.Empty:
                    return
                began = perf_counter()
                try:
                    results[index] = work(item)
                except Exception as error:  # reported below, after every thread has finished
                    errors.append(error)
                seconds[index] = perf_counter() - began
        finally:
            connection.close()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    start.wait(timeout=60)
    began = perf_counter()
    for thread in workers:
        thread.join()
    elapsed = perf_counter() - began
    assert not errors, errors
    return results, seconds, elapsed


class LoadWatcher(threading.Thread):
    """Polls every agent's open conversations while the race runs, remembering the highest."""

    def __init__(self, agents):
        super().__init__()
        self.agents, self.highest, self.samples = agents, 0, 0
        self.done = threading.Event()

    def run(self):
        try:
            while not self.done.is_set():
                loads = (
                    Conversation.objects.filter(assignee__in=self.agents, status__in=ACTIVE)
                    .values("assignee")
                    .annotate(n=Count("id"))
                )
                self.highest = max([self.highest, *(row["n"] for row in loads)])
                self.samples += 1
        finally:
            connection.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.done.set()
        self.join()


def close_then_dispatch(team, conversation):
    """An agent closes a conversation and the queue is served, as the close's task would;
    None is a dispatcher alone (beat, another agent's wake-up)."""
    if conversation is not None:
        conversation_close(conversation=conversation, actor=None, membership=None)
    return routing.queue_dispatch(team_id=team.pk)


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@pytest.mark.django_db(transaction=True)
def test_a_hundred_conversations_at_once_never_overload_an_agent_nor_assign_one_twice(monkeypatch):
    # This race drives every dispatch itself. The dispatch tasks each close would queue would reach
    # the session's live Celery worker (started by earlier tests), which would still be reading these
    # tables while the test database is truncated at teardown (a deadlock PostgreSQL breaks by
    # failing the TRUNCATE).
    monkeypatch.setattr(routing, "_dispatch_later", lambda team_id: None)
    workspace = make_workspace()
    agents = [make_agent(workspace, capacity=2) for _ in range(3)]
    team = make_team_on_shift(workspace, agents, queue_busy_length=1000, queue_busy_wait_minutes=100_000)
    conversations = make_conversations(workspace, 100)
    ids = [c.pk for c in conversations]
    with LoadWatcher(agents) as watcher:
        # 100 routes at once
        results, route_seconds, route_elapsed = run_concurrently(
            lambda conversation: route(conversation, team), conversations, threads=ROUTING_THREADS
        )

        assigned = [r for r in results if r.outcome == "assigned"]
        queued = {c.pk: r for c, r in zip(conversations, results, strict=True) if r.outcome == "queued"}
        assert len(assigned) == 6 and len(queued) == 94
        assert Counter(r.agent.pk for r in assigned) == {agent.pk: 2 for agent in agents}
        assert all(open_load(agent) == 2 for agent in agents)
        assert sorted(r.position for r in queued.values()) == list(range(1, 95))
        # the queue's order is the order in which they joined it, as each was told its place
        in_line = list(routing.team_queue(team=team).values_list("pk", flat=True))
        assert in_line == sorted(queued, key=lambda pk: queued[pk].position)
        assert assignments(ids) == dict.fromkeys(set(ids) - set(queued), 1)

        # agents free up: closes and dispatchers race, round after round
        rounds, dispatch_elapsed = 0, 0.0
        while holding := list(Conversation.objects.filter(team=team, assignee__isnull=False, status__in=ACTIVE)):
            next_in_line = list(routing.team_queue(team=team).values_list("pk", flat=True)[: len(holding)])

            counts, _, elapsed = run_concurrently(
                partial(close_then_dispatch, team), holding + [None] * 3, threads=len(holding) + 3
            )
            rounds, dispatch_elapsed = rounds + 1, dispatch_elapsed + elapsed

            # a Celery worker started by a live test of this session may serve the closes' own
            # dispatch tasks meanwhile: one more dispatcher in the race
            assert sum(counts) <= len(next_in_line)
            now_held = Conversation.objects.filter(team=team, assignee__isnull=False, status__in=ACTIVE)
            assert set(now_held.values_list("pk", flat=True)) == set(next_in_line)  # the longest waiting first
            assert all(open_load(agent) <= 2 for agent in agents)

    assert watcher.highest == 2
    assert not routing.team_queue(team=team).exists()
    assert Conversation.objects.filter(pk__in=ids, status=Conversation.Status.CLOSED).count() == 100
    assert assignments(ids) == dict.fromkeys(ids, 1)
    assert not Conversation.objects.filter(pk__in=ids, assignee__isnull=True).exists()
    print(
        f"\nrouting concurrency: 100 routes on {ROUTING_THREADS} threads in {route_elapsed:.2f}s "
        f"(per route p50 {statistics.median(route_seconds) * 1000:.0f} ms, "
        f"p95 {percentile(route_seconds, 0.95) * 1000:.0f} ms, max {max(route_seconds) * 1000:.0f} ms); "
        f"6 assigned (2 per agent), 94 queued; then {rounds} rounds of concurrent closes + dispatches "
        f"in {dispatch_elapsed:.2f}s; highest load seen {watcher.highest} over {watcher.samples} samples; "
        f"timeline: 100 assignments for 100 conversations"
    )
