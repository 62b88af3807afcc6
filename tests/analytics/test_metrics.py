"""Every metric of a hand-built week with known answers, driven through the real services (the
inbound pipeline, replies, notes, assignment, close, reopen, ratings, the bot) and folded the way
beat folds: after each step. Each step's events are then set to the scenario's clock, so the
durations are exact. The workspace is in Hong Kong (UTC+8): the first conversation opens at
23:50 local time and is answered after midnight, on the next local day."""

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db.models import Sum

from apps.analytics.models import ARRAY_COUNTERS, SCALAR_COUNTERS, Cycle, Daily, DailyTotal, Event
from apps.analytics.services import analytics_rebuild, event_record, events_fold, events_fold_all
from apps.connectors.base import InboundMessage
from apps.connectors.models import Channel
from apps.contacts.models import Contact
from apps.conversations.models import Conversation, Message
from apps.conversations.services.actions import (
    conversation_assign,
    conversation_close,
    conversation_csat_record,
    conversation_update,
)
from apps.conversations.services.messages import inbound_message_apply, message_send, note_add
from apps.workspaces.models import Role
from tests.factories import make_member, make_team, make_workspace

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 2, 15, 50, tzinfo=UTC)  # Monday 23:50 in Hong Kong
NOV2, NOV3, NOV4 = date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)
_ids = itertools.count(1)


class Clock:
    """Puts the events of the step just taken at `START + seconds`, then folds them."""

    def __init__(self):
        self.seen = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def at(self, seconds: float) -> None:
        Event.objects.filter(pk__gt=self.seen).update(at=START + timedelta(seconds=seconds))
        self.seen = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
        events_fold()


@pytest.fixture
def week():
    workspace = make_workspace(slug="hk-electronics", timezone="Asia/Hong_Kong")
    supervisor = make_member(workspace, Role.SUPERVISOR)
    ann, bob = make_member(workspace), make_member(workspace)
    orders = make_team(workspace, name="Orders", members=[ann, bob])
    returns = make_team(workspace, name="Returns", members=[ann])  # Ann is in two teams
    chat = Channel.objects.create(workspace=workspace, kind="webchat", name="Shop chat")
    bot_channel = Channel.objects.create(workspace=workspace, kind="webchat", name="App chat")
    return workspace, supervisor, ann, bob, orders, returns, chat, bot_channel


def write(channel, sender="amira", text="Where is my order?") -> Message:
    inbound = InboundMessage(provider_id=f"in-{next(_ids)}", sender_id=sender, timestamp=START, kind="text", text=text)
    return inbound_message_apply(channel=channel, inbound=inbound)


def reply(conversation, member, text="On its way!") -> Message:
    return message_send(conversation=conversation, author=member.user, text=text)


def fresh(conversation) -> Conversation:
    return Conversation.objects.get(pk=conversation.pk)


def play(week):
    """The scenario; returns the two conversations."""
    _workspace, supervisor, ann, bob, orders, _returns, chat, bot_channel = week
    clock = Clock()
    first = write(chat).conversation
    clock.at(0)
    message_send(conversation=first, text="Hi! A person will be with you shortly.", sender_kind=Message.Sender.BOT)
    clock.at(5)
    conversation_assign(conversation=first, actor=supervisor.user, membership=supervisor, assignee=ann, team=orders)
    clock.at(60)
    reply(fresh(first), ann)
    clock.at(900)  # 00:05 on Tuesday in Hong Kong
    write(chat, text="Thanks, and the invoice?")
    clock.at(960)
    reply(fresh(first), ann, "Attached.")
    clock.at(1020)
    note_add(conversation=fresh(first), author=ann.user, text="Sent invoice by email too")
    clock.at(1080)
    conversation_close(conversation=fresh(first), actor=ann.user, membership=ann, category="delivery", summary="ok")
    clock.at(1200)
    conversation_csat_record(conversation=fresh(first), score=4)
    clock.at(1260)

    # The bot answers a question on its own and closes: contained.
    contained = write(bot_channel, sender="li", text="opening hours?").conversation
    clock.at(2000)
    message_send(conversation=contained, text="We open at 10.", sender_kind=Message.Sender.BOT)
    event_record(conversation=contained, kind="faq_answered", by="bot", intent="hours")
    clock.at(2001)
    event_record(conversation=contained, kind="faq_accepted", by="bot", intent="hours")
    clock.at(2030)
    conversation_close(conversation=fresh(contained), actor=None, membership=None, from_run=1)
    clock.at(2040)

    # A day later Amira writes again: the first conversation reopens, routing gives it to Bob.
    day = 24 * 3600 + 1200  # Wednesday 00:10 in Hong Kong
    write(chat, text="It arrived broken")
    clock.at(day)
    conversation_assign(conversation=fresh(first), actor=None, membership=None, assignee=bob, team=orders)
    clock.at(day + 30)
    reply(fresh(first), bob, "Sorry! A new one is on its way.")
    clock.at(day + 70)
    conversation_close(conversation=fresh(first), actor=bob.user, membership=bob, category="damaged")
    clock.at(day + 100)
    return first, contained


def test_each_cycle_has_the_known_times_and_counts(week):
    _workspace, _supervisor, ann, bob, orders, _returns, _chat, _bot_channel = week
    first, contained = play(week)

    one, two = Cycle.objects.filter(conversation=first).order_by("number")
    assert (one.source, one.opened_at, one.first_message_at) == ("inbound", START, START)
    assert one.first_assigned_at == START + timedelta(seconds=60)
    assert one.first_response_seconds == 900  # the bot's greeting is no response
    assert one.assigned_response_seconds == 840
    assert one.responder_id == ann.id
    assert (one.responses, one.response_seconds) == (2, 900 + 60)
    assert one.resolution_seconds == 1200
    assert (one.closed_by, one.closer_id, one.category, one.summary) == ("agent", ann.id, "delivery", "ok")
    assert (one.csat, one.csat_agent_id, one.rated_at) == (4, ann.id, START + timedelta(seconds=1260))
    assert (one.messages_in, one.messages_out, one.messages_bot, one.notes) == (2, 2, 1, 1)
    assert one.assignees == [ann.id] and one.team_id == orders.id and one.assignee_id == ann.id
    # Ann: reply after the 5-minute cap (300) + 60 + 60 + 60 + 120; the supervisor's assignment 55.
    assert one.handle_seconds == 600 + 55
    assert (one.bot, one.contained, one.handed_over) == (True, False, False)

    assert two.number == 2 and two.opened_at == START + timedelta(days=1, seconds=1200)
    assert two.first_response_seconds == 70 and two.assigned_response_seconds == 40
    assert two.resolution_seconds == 100 and two.category == "damaged" and two.responder_id == bob.id
    assert two.assignees == [bob.id] and two.csat is None

    bot_cycle = Cycle.objects.get(conversation=contained)
    assert (bot_cycle.contained, bot_cycle.closed_by, bot_cycle.first_response_seconds) == (True, "bot", None)
    assert (bot_cycle.messages_in, bot_cycle.messages_bot, bot_cycle.messages_out) == (1, 1, 0)


def total(**filters) -> dict:
    rows = Daily.objects.filter(**filters)
    sums = rows.aggregate(**{name: Sum(name) for name in SCALAR_COUNTERS})
    for name, size in ARRAY_COUNTERS.items():
        values = [0] * size
        for row in rows.values_list(name, flat=True):
            values = [a + b for a, b in zip(values, row, strict=True)]
        sums[name] = values
    return {name: value or 0 for name, value in sums.items()}


def test_the_daily_rollups_file_each_fact_on_its_local_day_and_person(week):
    workspace, supervisor, ann, bob, orders, returns, _chat, _bot_channel = week
    play(week)

    monday = total(workspace=workspace, day=NOV2)
    assert monday["opened"] == 1 and monday["messages_in"] == 1 and monday["first_responses"] == 0
    assert monday["opened_by_hour"][23] == 1  # 23:50 local
    tuesday = total(workspace=workspace, day=NOV3)
    assert tuesday["first_responses"] == 1 and tuesday["first_response_seconds"] == 900
    assert tuesday["first_response_buckets"] == [0, 0, 0, 0, 1, 0, 0]  # 10–30 min
    assert tuesday["closed"] == 2 and tuesday["contained"] == 1  # Ann's close and the bot's
    assert tuesday["opened"] == 1 and tuesday["bot_conversations"] == 1  # the bot's conversation
    assert tuesday["csat_count"] == 1 and tuesday["csat_scores"] == [0, 0, 0, 1, 0]
    assert tuesday["faq_answered"] == 1 and tuesday["faq_accepted"] == 1
    wednesday = total(workspace=workspace, day=NOV4)
    assert wednesday["reopened"] == 1 and wednesday["opened"] == 0
    assert wednesday["first_response_buckets"] == [0, 1, 0, 0, 0, 0, 0]
    assert wednesday["transfers"] == 1  # from Ann (still assigned since the close) to Bob

    everything = total(workspace=workspace)
    assert everything["messages_in"] == 4 and everything["messages_out"] == 3 and everything["messages_bot"] == 2
    assert everything["closed"] == 3 and everything["resolution_seconds"] == 1200 + 40 + 100
    assert everything["responses"] == 3 and everything["response_seconds"] == 900 + 60 + 70

    of_ann = total(workspace=workspace, agent=ann)
    assert of_ann["messages_out"] == 2 and of_ann["notes"] == 1 and of_ann["csat_sum"] == 4
    assert of_ann["handle_seconds"] == 600 + 30  # and the 30 s Bob's assignment took while she had it
    assert of_ann["assigned"] == 1 and of_ann["closed"] == 1
    of_bob = total(workspace=workspace, agent=bob)
    assert of_bob["first_responses"] == 1 and of_bob["closed"] == 1 and of_bob["assigned"] == 1
    assert total(workspace=workspace, agent=supervisor)["handle_seconds"] == 55
    # Team is the conversation's, not the agent's: nothing of Ann's is filed under Returns.
    assert total(workspace=workspace, team=returns)["messages_out"] == 0
    assert total(workspace=workspace, team=orders)["messages_out"] == 3
    assert total(workspace=workspace, category="damaged")["reopened"] == 1


def test_the_workspace_totals_per_day_equal_the_detailed_rollups(week):
    workspace = week[0]
    play(week)
    for day in (NOV2, NOV3, NOV4):
        whole = DailyTotal.objects.get(workspace=workspace, day=day)
        detailed = total(workspace=workspace, day=day)
        assert {name: getattr(whole, name) for name in detailed} == detailed


def snapshot(workspace) -> tuple:
    daily = sorted(
        tuple(str(v) for v in row)
        for row in Daily.objects.filter(workspace=workspace).values_list(
            "day", "agent_id", "team_id", "channel_id", "category", "language", *SCALAR_COUNTERS, *ARRAY_COUNTERS
        )
    )
    cycles = sorted(
        tuple(str(v) for v in row)
        for row in Cycle.objects.filter(workspace=workspace).values_list(
            *[f.attname for f in Cycle._meta.concrete_fields if f.name != "id"]
        )
    )
    totals = sorted(
        tuple(str(v) for v in row)
        for row in DailyTotal.objects.filter(workspace=workspace).values_list("day", *SCALAR_COUNTERS, *ARRAY_COUNTERS)
    )
    return daily, cycles, totals


def test_a_rebuild_from_the_log_gives_the_same_numbers_as_folding_step_by_step(week):
    workspace = week[0]
    play(week)
    folded = snapshot(workspace)
    assert folded[0] and folded[1]

    assert analytics_rebuild(workspace=workspace) == 2
    assert snapshot(workspace) == folded
    call_command("analytics_rebuild", "--workspace", workspace.slug)
    assert snapshot(workspace) == folded


def test_folding_again_or_late_committed_events_change_nothing_twice(week):
    workspace = week[0]
    first, _ = play(week)
    folded = snapshot(workspace)
    Event.objects.filter(workspace=workspace).update(folded=False)
    events_fold_all()
    assert snapshot(workspace) == folded

    # An event committed late (an older timestamp arriving after newer ones were folded).
    late = event_record(conversation=first, kind="note", by="agent", author_id=week[2].id)
    Event.objects.filter(pk=late.pk).update(at=START + timedelta(seconds=1100))
    events_fold_all()
    with_late = snapshot(workspace)
    analytics_rebuild(workspace=workspace)
    assert snapshot(workspace) == with_late
    assert Cycle.objects.get(conversation=first, number=1).notes == 2


def test_a_long_open_conversation_is_folded_from_where_the_last_fold_stopped(week):
    """The busy day's conversations stay open with a message every few seconds: each fold goes on
    from the last cycle's kept state and reads only the new events, and still ends where a
    rebuild from the whole log does (a late-committed event sends it back to the whole log)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    workspace, _supervisor, ann, _bob, _orders, _returns, chat, _bot_channel = week
    clock = Clock()
    conversation = write(chat).conversation
    clock.at(0)
    for n in range(1, 6):
        write(chat, text=f"and another thing {n}")
        reply(fresh(conversation), ann, f"noted {n}")
        with CaptureQueriesContext(connection) as queries:
            clock.at(n * 30)
        timeline_reads = [
            q["sql"] for q in queries if 'FROM "analytics_event" WHERE "analytics_event"."conversation_id"' in q["sql"]
        ]
        assert timeline_reads == []  # only the unfolded events, by the partial index
    cycle = Cycle.objects.get(conversation=conversation)
    assert (cycle.messages_in, cycle.messages_out, cycle.closed_at) == (6, 5, None)
    assert cycle.resume["after"][1] == Event.objects.filter(conversation=conversation).latest("at", "id").pk
    folded = snapshot(workspace)
    analytics_rebuild(workspace=workspace)
    assert snapshot(workspace) == folded

    late = event_record(conversation=conversation, kind="note", by="agent", author_id=ann.id)
    Event.objects.filter(pk=late.pk).update(at=START + timedelta(seconds=10))
    with CaptureQueriesContext(connection) as queries:
        events_fold_all()
    assert any('"analytics_event"."conversation_id" IN' in q["sql"] for q in queries)
    with_late = snapshot(workspace)
    analytics_rebuild(workspace=workspace)
    assert snapshot(workspace) == with_late
    assert Cycle.objects.get(conversation=conversation).notes == 1


def test_a_customer_back_within_7_days_on_any_channel_marks_the_cycle_they_came_back_after(week):
    workspace, _supervisor, _ann, _bob, _orders, _returns, chat, _bot_channel = week
    first, contained = play(week)  # Amira's first cycle closed at +1200 s; she was back a day later
    one, two = Cycle.objects.filter(conversation=first).order_by("number")
    assert (one.came_back, two.came_back) == (True, False)
    assert not Cycle.objects.get(conversation=contained).came_back

    # Li, whose question the bot closed, is back 3 days later on the other channel (recognised
    # as the same customer, say by phone: the conversation is theirs).
    clock = Clock()
    elsewhere = Conversation.objects.create(workspace=workspace, contact=contained.contact, channel=chat)
    event_record(conversation=elsewhere, kind="opened", by="contact")
    event_record(conversation=elsewhere, kind="message_in", by="contact")
    clock.at(2040 + 3 * 24 * 3600)
    assert Cycle.objects.get(conversation=contained).came_back
    analytics_rebuild(workspace=week[0])
    assert Cycle.objects.get(conversation=contained).came_back


def test_a_queue_wait_and_a_handover_are_counted(week):
    workspace, _supervisor, _ann, bob, orders, _returns, chat, _bot_channel = week
    clock = Clock()
    conversation = write(chat).conversation
    clock.at(0)
    event_record(conversation=conversation, kind="handover", by="bot", reason="asked for a person")
    clock.at(10)
    conversation_assign(conversation=fresh(conversation), actor=None, membership=None, assignee=None, team=orders)
    event_record(conversation=fresh(conversation), kind="queued", by="system")
    clock.at(12)
    conversation_assign(conversation=fresh(conversation), actor=None, membership=None, assignee=bob)
    clock.at(72)
    cycle = Cycle.objects.get(conversation=conversation)
    assert (cycle.queue_seconds, cycle.handed_over) == (60, True)
    day = total(workspace=workspace)
    assert (day["queued"], day["queue_waits"], day["queue_wait_seconds"], day["handovers"]) == (1, 1, 60, 1)


def test_analytics_of_one_workspace_never_count_anothers(week):
    play(week)
    other = make_workspace(slug="other")
    channel = Channel.objects.create(workspace=other, kind="webchat", name="Other chat")
    write(channel, sender="someone")
    events_fold_all()
    assert total(workspace=week[0])["opened"] == 2
    assert total(workspace=other)["opened"] == 1
    assert not Cycle.objects.filter(workspace=other, conversation__workspace=week[0]).exists()


def test_a_category_set_while_open_files_the_whole_cycle_under_it(week):
    workspace, _supervisor, ann, _bob, _orders, _returns, chat, _bot_channel = week
    clock = Clock()
    conversation = write(chat).conversation
    clock.at(0)
    conversation_update(conversation=fresh(conversation), actor=ann.user, membership=None, category="returns")
    clock.at(30)
    assert total(workspace=workspace, category="returns")["opened"] == 1
    assert total(workspace=workspace, category="")["opened"] == 0


def test_random_timelines_folded_at_random_moments_end_as_a_rebuild_does():
    """Forty random conversation lives (every kind of fact, people and teams changing, ties in
    time, closes and reopenings, ratings after the close, now and then a fact committed late with
    an older time), folded at random moments: the incremental folder's cycles and rollups equal a
    rebuild from the whole log."""
    import random

    workspace = make_workspace(slug="random-lives", timezone="Asia/Hong_Kong")
    people = [make_member(workspace) for _ in range(3)]
    teams = [make_team(workspace, name=f"Team {n}", members=people[n:]) for n in range(2)]
    channels = [Channel.objects.create(workspace=workspace, kind="webchat", name=f"Chat {n}") for n in range(2)]
    kinds = [kind for kind in Event.Kind.values if kind != "opened"]
    for seed in range(40):
        chance = random.Random(seed)
        contact = Contact.objects.create(workspace=workspace, name=f"Customer {seed % 7}")
        conversation = Conversation.objects.create(
            workspace=workspace, contact=contact, channel=chance.choice(channels)
        )
        at = START + timedelta(hours=seed)
        for step in range(chance.randint(1, 40)):
            kind = "opened" if step == 0 else chance.choice(kinds)
            late = step > 3 and chance.random() < 0.05
            if not late and chance.random() < 0.8:
                at += timedelta(seconds=chance.choice([0, 1, 30, 400, 5000, 40000]))
            by = {"message_in": "contact", "message_out": chance.choice(["agent", "bot"])}.get(kind, "agent")
            person = chance.choice(people)
            Event.objects.create(
                workspace=workspace,
                conversation=conversation,
                kind=kind,
                at=at - timedelta(minutes=30) if late else at,
                by=by if chance.random() < 0.9 else "system",
                author_id=person.pk if by == "agent" else None,
                agent_id=chance.choice([None, *[p.pk for p in people]]),
                team_id=chance.choice([None, *[t.pk for t in teams]]),
                value=chance.randint(1, 5) if kind == "rated" else None,
                data={
                    "category": chance.choice(["", "delivery", "refund"]),
                    "language": chance.choice(["", "en", "ar"]),
                    "transfer": chance.random() < 0.3,
                },
            )
            if chance.random() < 0.3:
                events_fold_all()
    events_fold_all()
    folded = snapshot(workspace)
    assert Cycle.objects.filter(workspace=workspace).count() > 40
    analytics_rebuild(workspace=workspace)
    assert snapshot(workspace) == folded


def test_the_folders_kept_state_names_everything_a_cycle_builder_gathers():
    """A field added to the builder but not to its kept state would be lost (or missing) when a
    fold goes on from the state: the two lists must name every attribute the builder starts with."""
    import zoneinfo

    from apps.analytics.services import _CycleBuilder

    meta = {"workspace_id": 1, "conversation_id": 1, "contact_id": 1, "channel_id": 1, "tz": zoneinfo.ZoneInfo("UTC")}
    builder = _CycleBuilder(meta, 1, Event(kind="opened", at=START, data={}))
    kept = {*_CycleBuilder._MOMENTS, *_CycleBuilder._VALUES, "meta", "tz", "facts"}
    assert set(vars(builder)) == kept
