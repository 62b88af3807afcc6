"""The analytics writes: recording facts as they happen, folding them into cycles and rollups.

`event_record` is called by the services of the other apps inside their own transactions, so
a fact is logged exactly when (and only if) it is stored. `events_fold` turns a conversation's
whole timeline into its `Cycle` rows and adds the *difference* from what those cycles added
before to the `Daily` rollups: folding a conversation twice, or its events in any order, or
late-committed events after newer ones, always ends at the same numbers, which is also what
`analytics_rebuild` (folding everything from nothing) arrives at. docs/metrics.md defines each
number; this module is the one place that computes them."""

import copy
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime

from django.db import connection, transaction
from django.utils import timezone

from apps.analytics.models import (
    ARRAY_COUNTERS,
    SCALAR_COUNTERS,
    AgentPresence,
    Cycle,
    Daily,
    DailyTotal,
    Event,
    bucket_of,
)

HANDLE_GAP_CAP = 300  # seconds: a longer silence is not somebody working on the conversation
FOLD_LOCK = 0x5A4C_0001  # PostgreSQL advisory lock: one folder (or rebuild) at a time
FOLD_CHUNK = 200  # conversations per transaction

By = Event.By
Kind = Event.Kind


# Recording -------------------------------------------------------------------------------------


def _membership_id(workspace_id: int, user) -> int | None:
    if user is None:
        return None
    known = getattr(user, "membership_in", None)  # the API request's own (core.api.permissions)
    if known is not None and known[0] == workspace_id:
        return known[1]
    from apps.workspaces.models import Membership

    return Membership.objects.filter(workspace_id=workspace_id, user=user).values_list("id", flat=True).first()


def event_record(
    *, conversation, kind: str, by: str = "", user=None, author_id: int | None = None, value=None, **data
) -> Event:
    """Logs one fact of `conversation` as it stands now (its assignee and team after the fact).
    `user` is the person who acted (a User; their membership is looked up) or `author_id` the
    membership itself."""
    if author_id is None and user is not None:
        author_id = _membership_id(conversation.workspace_id, user)
    event = _event(conversation=conversation, kind=kind, by=by, author_id=author_id, value=value, **data)
    event.save(force_insert=True)
    return event


def inbound_messages_record(*, conversations: list) -> None:
    """A `message in` by the contact for each conversation listed (once per message, as it stands
    now), in one INSERT: the inbound fast lane's batch."""
    Event.objects.bulk_create(
        [_event(conversation=c, kind=Kind.MESSAGE_IN, by=By.CONTACT, language=c.language) for c in conversations]
    )


def _event(*, conversation, kind: str, by: str = "", author_id: int | None = None, value=None, **data) -> Event:
    return Event(
        workspace_id=conversation.workspace_id,
        conversation_id=conversation.pk,
        kind=kind,
        by=by,
        author_id=author_id,
        agent_id=conversation.assignee_id,
        team_id=conversation.team_id,
        value=value,
        data={key: value for key, value in data.items() if value not in (None, "")},
    )


def message_event_record(*, conversation, message) -> None:
    """A message in or out of the conversation, said by whom (a note is a person's too)."""
    from apps.conversations.models import Message

    if message.kind == Message.Kind.EVENT:
        return
    if message.direction == Message.Direction.INBOUND:
        event_record(conversation=conversation, kind=Kind.MESSAGE_IN, by=By.CONTACT, language=conversation.language)
        return
    if message.kind == Message.Kind.NOTE:
        event_record(conversation=conversation, kind=Kind.NOTE, by=By.AGENT, user=message.author)
        return
    by = {
        Message.Sender.AGENT: By.AGENT if message.author_id else By.SYSTEM,  # an integration is no person
        Message.Sender.BOT: By.BOT,
    }.get(message.sender_kind, By.SYSTEM)
    event_record(conversation=conversation, kind=Kind.MESSAGE_OUT, by=by, user=message.author)


def presence_record(*, membership, status: str) -> None:
    AgentPresence.objects.create(workspace_id=membership.workspace_id, membership=membership, status=status)


# Folding ---------------------------------------------------------------------------------------


def _seconds(later: datetime, earlier: datetime) -> int:
    return max(0, int((later - earlier).total_seconds()))


@dataclass
class _Facts:
    """What one cycle adds to the rollups: {(day, agent, team): {counter: amount}}; category and
    language are the cycle's final ones, set when it is written."""

    rows: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))

    def add(self, day, agent, team, counter: str, amount: int = 1) -> None:
        self.rows[(day, agent, team)][counter] += amount

    def add_at(self, day, agent, team, counter: str, index: int) -> None:
        row = self.rows[(day, agent, team)]
        values = row.get(counter) or [0] * ARRAY_COUNTERS[counter]
        values[index] += 1
        row[counter] = values


class _CycleBuilder:
    def __init__(self, meta: dict, number: int, start: Event):
        self.meta, self.tz = meta, meta["tz"]
        self.number, self.opened_at = number, start.at
        source = start.data.get("source")
        if not source:
            inbound = start.kind in (Kind.OPENED, Kind.REOPENED, Kind.MESSAGE_IN)
            source = Cycle.Source.INBOUND if inbound else Cycle.Source.OUTBOUND
        self.source = source
        self.facts = _Facts()
        self.closed_at = self.first_message_at = self.first_assigned_at = self.first_response_at = None
        self.responder = self.closer = self.csat = self.csat_agent = self.rated_at = None
        self.closed_by = self.summary = self.category = self.language = ""
        self.assignees: list[int] = []
        self.responses = self.response_seconds = self.handle_seconds = 0
        self.messages_in = self.messages_out = self.messages_bot = self.notes = 0
        self.queued_at = self.queue_seconds = None
        self.bot = self.handed_over = False
        self.previous_at, self.previous_agent, self.waiting_since = None, start.agent_id, None
        self.agent, self.team = start.agent_id, start.team_id

    def day(self, at: datetime):
        return at.astimezone(self.tz).date()

    # Where an open cycle stands, kept on its row so the next fold goes on from here.
    _MOMENTS = (
        "opened_at", "closed_at", "first_message_at", "first_assigned_at", "first_response_at", "rated_at",
        "queued_at", "previous_at", "waiting_since",
    )  # fmt: skip
    _VALUES = (
        "number", "source", "responder", "closer", "csat", "csat_agent", "closed_by", "summary", "category",
        "language", "assignees", "responses", "response_seconds", "handle_seconds", "messages_in", "messages_out",
        "messages_bot", "notes", "queue_seconds", "bot", "handed_over", "previous_agent", "agent", "team",
    )  # fmt: skip
    _KEYS = ("close_key", "csat_key")  # (day, agent, team), set by a close and a rating

    def state(self, last: Event) -> dict:
        """Everything `add` has gathered, as JSON, before `build` adds the once-per-cycle facts;
        `last` is the event it ends at."""
        moments = {name: getattr(self, name) for name in self._MOMENTS}
        keys = {name: getattr(self, name, None) for name in self._KEYS}
        return {
            "after": [last.at.isoformat(), last.pk],
            "meta": [self.meta["workspace_id"], self.meta["channel_id"], self.meta["contact_id"], self.tz.key],
            "moments": {name: at.isoformat() if at else None for name, at in moments.items()},
            "values": {name: copy.copy(getattr(self, name)) for name in self._VALUES},
            "keys": {name: [key[0].isoformat(), key[1], key[2]] if key else None for name, key in keys.items()},
            "facts": [  # copies: `build` adds to the counters after this
                [day.isoformat(), agent, team, {name: copy.copy(amount) for name, amount in counters.items()}]
                for (day, agent, team), counters in self.facts.rows.items()
            ],
        }

    @classmethod
    def resumed(cls, meta: dict, state: dict) -> "_CycleBuilder | None":
        """The builder `state` was taken from, or None when it cannot go on: the conversation
        moved (another channel, contact, or its workspace's time zone) since."""
        where = [meta["workspace_id"], meta["channel_id"], meta["contact_id"], meta["tz"].key]
        if state["meta"] != where:
            return None
        builder = cls.__new__(cls)
        builder.meta, builder.tz, builder.facts = meta, meta["tz"], _Facts()
        for name, at in state["moments"].items():
            setattr(builder, name, datetime.fromisoformat(at) if at else None)
        for name, value in state["values"].items():
            setattr(builder, name, value)
        for name, key in state["keys"].items():
            if key:
                setattr(builder, name, (date.fromisoformat(key[0]), key[1], key[2]))
        for day, agent, team, counters in state["facts"]:
            builder.facts.rows[(date.fromisoformat(day), agent, team)].update(counters)
        return builder

    def add(self, event: Event) -> None:
        day, agent, team = self.day(event.at), event.agent_id, event.team_id
        person = event.author_id if event.by == By.AGENT else None
        if self.closed_at is None and self.previous_at is not None:
            worker = person or self.previous_agent
            if worker:
                gap = min(_seconds(event.at, self.previous_at), HANDLE_GAP_CAP)
                self.handle_seconds += gap
                self.facts.add(day, worker, team, "handle_seconds", gap)
        getattr(self, f"_{event.kind}", self._other)(event, day, agent, team, person)
        if event.data.get("language"):
            self.language = event.data["language"]
        self.previous_at, self.previous_agent = event.at, event.agent_id
        self.agent, self.team = event.agent_id, event.team_id

    def _other(self, event, day, agent, team, person) -> None:
        pass  # opened / reopened while already open: nothing more to count

    def _message_in(self, event, day, agent, team, person) -> None:
        self.messages_in += 1
        self.facts.add(day, agent, team, "messages_in")
        if self.closed_at is None:
            self.first_message_at = self.first_message_at or event.at
            self.waiting_since = self.waiting_since or event.at

    def _message_out(self, event, day, agent, team, person) -> None:
        if not person:
            self.messages_bot += 1
            self.bot = self.bot or event.by == By.BOT
            self.facts.add(day, agent, team, "messages_bot")
            return
        self.messages_out += 1
        self.facts.add(day, person, team, "messages_out")
        if self.closed_at is not None:
            return
        if self.waiting_since is not None:
            waited = _seconds(event.at, self.waiting_since)
            self.responses += 1
            self.response_seconds += waited
            self.facts.add(day, person, team, "responses")
            self.facts.add(day, person, team, "response_seconds", waited)
            self.waiting_since = None
        if self.first_message_at is not None and self.first_response_at is None:
            self.first_response_at, self.responder = event.at, person

    def _note(self, event, day, agent, team, person) -> None:
        self.notes += 1
        self.facts.add(day, person or agent, team, "notes")

    def _assigned(self, event, day, agent, team, person) -> None:
        if agent is None or agent == event.data.get("previous_id"):
            return
        self.facts.add(day, agent, team, "assigned")
        if event.data.get("transfer"):
            self.facts.add(day, agent, team, "transfers")
        if agent not in self.assignees:
            self.assignees.append(agent)
        if self.closed_at is None:
            self.first_assigned_at = self.first_assigned_at or event.at
            if self.queued_at is not None:
                waited = _seconds(event.at, self.queued_at)
                self.facts.add(day, agent, team, "queue_waits")
                self.facts.add(day, agent, team, "queue_wait_seconds", waited)
                if self.queue_seconds is None:
                    self.queue_seconds = waited
                self.queued_at = None

    def _categorised(self, event, day, agent, team, person) -> None:
        self.category = event.data.get("category", "")

    def _queued(self, event, day, agent, team, person) -> None:
        if self.closed_at is None and self.queued_at is None:
            self.queued_at = event.at
            self.facts.add(day, agent, team, "queued")

    def _closed(self, event, day, agent, team, person) -> None:
        if self.closed_at is not None:
            return
        self.closed_at, self.closed_by, self.closer = event.at, event.by, person
        self.summary = event.data.get("summary", "")
        if event.data.get("category"):
            self.category = event.data["category"]
        self.close_key = (day, person or agent, team)

    def _rated(self, event, day, agent, team, person) -> None:
        self.csat, self.csat_agent, self.csat_key = event.value, agent, (day, agent, team)
        self.rated_at = event.at

    def _handover(self, event, day, agent, team, person) -> None:
        self.handed_over = True

    def _faq_answered(self, event, day, agent, team, person) -> None:
        self.facts.add(day, agent, team, "faq_answered")

    def _faq_accepted(self, event, day, agent, team, person) -> None:
        self.facts.add(day, agent, team, "faq_accepted")

    def build(self) -> Cycle:
        """The cycle's row, its once-per-cycle facts added to the rollups."""
        facts, opened_day = self.facts, self.day(self.opened_at)
        start_key = (opened_day, self.agent, self.team)
        facts.add(*start_key, "opened" if self.number == 1 else "reopened")
        facts.add_at(*start_key, "opened_by_hour", self.opened_at.astimezone(self.tz).hour)
        if self.bot:
            facts.add(*start_key, "bot_conversations")
        if self.handed_over:
            facts.add(*start_key, "handovers")
        first_response = assigned_response = resolution = None
        if self.first_response_at is not None:
            first_response = _seconds(self.first_response_at, self.first_message_at)
            key = (self.day(self.first_response_at), self.responder, self.team)
            facts.add(*key, "first_responses")
            facts.add(*key, "first_response_seconds", first_response)
            facts.add_at(*key, "first_response_buckets", bucket_of(first_response))
            if self.first_assigned_at is not None and self.first_assigned_at <= self.first_response_at:
                assigned_response = _seconds(self.first_response_at, self.first_assigned_at)
                facts.add(*key, "assigned_responses")
                facts.add(*key, "assigned_response_seconds", assigned_response)
        contained = self.bot and self.closed_at is not None and not self.messages_out and not self.assignees
        if self.closed_at is not None:
            resolution = _seconds(self.closed_at, self.opened_at)
            facts.add(*self.close_key, "closed")
            facts.add(*self.close_key, "resolution_seconds", resolution)
            facts.add_at(*self.close_key, "resolution_buckets", bucket_of(resolution))
            if contained:
                facts.add(*self.close_key, "contained")
        if self.csat is not None:
            facts.add(*self.csat_key, "csat_count")
            facts.add(*self.csat_key, "csat_sum", self.csat)
            facts.add_at(*self.csat_key, "csat_scores", self.csat - 1)
        meta = self.meta
        return Cycle(
            workspace_id=meta["workspace_id"],
            conversation_id=meta["conversation_id"],
            number=self.number,
            contact_id=meta["contact_id"],
            channel_id=meta["channel_id"],
            source=self.source,
            team_id=self.team,
            assignee_id=self.agent,
            assignees=self.assignees,
            category=self.category,
            language=self.language,
            opened_at=self.opened_at,
            first_message_at=self.first_message_at,
            first_assigned_at=self.first_assigned_at,
            first_response_at=self.first_response_at,
            first_response_seconds=first_response,
            assigned_response_seconds=assigned_response,
            responder_id=self.responder,
            responses=self.responses,
            response_seconds=self.response_seconds,
            closed_at=self.closed_at,
            resolution_seconds=resolution,
            closed_by=self.closed_by,
            closer_id=self.closer,
            summary=self.summary,
            csat=self.csat,
            rated_at=self.rated_at,
            csat_agent_id=self.csat_agent,
            messages_in=self.messages_in,
            messages_out=self.messages_out,
            messages_bot=self.messages_bot,
            notes=self.notes,
            handle_seconds=self.handle_seconds,
            queue_seconds=self.queue_seconds,
            bot=self.bot,
            handed_over=self.handed_over,
            contained=contained,
            contribution=[
                [day.isoformat(), agent, team, meta["channel_id"], self.category, self.language, dict(counters)]
                for (day, agent, team), counters in facts.rows.items()
            ],
        )


def cycles_of(meta: dict, events: list[Event], *, going_on: "_CycleBuilder | None" = None) -> list[Cycle]:
    """A conversation's timeline cut into cycles: each opening (or reopening after a close)
    starts one; the first event starts one too when nothing opened it (we wrote first, or it
    predates the log). A rating or a message after the close still belongs to that cycle.
    `going_on`: the last cycle as an earlier fold left it, `events` the ones after it. The last
    cycle keeps its state (`Cycle.resume`) for the next fold."""
    builders: list[_CycleBuilder] = [going_on] if going_on else []
    for event in events:
        current = builders[-1] if builders else None
        reopening = event.kind in (Kind.OPENED, Kind.REOPENED) and current is not None and current.closed_at
        if current is None or reopening:
            current = _CycleBuilder(meta, current.number + 1 if current else 1, event)
            builders.append(current)
        current.add(event)
    resume = builders[-1].state(events[-1]) if builders and events else None
    cycles = [builder.build() for builder in builders]
    if cycles:
        cycles[-1].resume = resume
    return cycles


def _metas(conversation_ids) -> dict[int, dict]:
    from apps.conversations.models import Conversation

    rows = Conversation.objects.filter(pk__in=conversation_ids).values_list(
        "pk", "workspace_id", "workspace__timezone", "channel_id", "contact_id"
    )
    zones: dict[str, zoneinfo.ZoneInfo] = {}
    return {
        pk: {
            "conversation_id": pk,
            "workspace_id": workspace_id,
            "tz": zones.setdefault(tz, zoneinfo.ZoneInfo(tz)),
            "channel_id": channel_id,
            "contact_id": contact_id,
        }
        for pk, workspace_id, tz, channel_id, contact_id in rows
    }


def _contributions(cycles, sign: int, into: dict) -> None:
    for cycle in cycles:
        for day, agent, team, channel, category, language, counters in cycle.contribution:
            row = into[(cycle.workspace_id, day, agent, team, channel, category, language)]
            for name, amount in counters.items():
                if name in ARRAY_COUNTERS:
                    values = row.get(name) or [0] * ARRAY_COUNTERS[name]
                    row[name] = [a + sign * b for a, b in zip(values, amount, strict=True)]
                else:
                    row[name] = row.get(name, 0) + sign * amount


def _after(event: Event, state: dict) -> bool:
    at, pk = state["after"]
    return (event.at, event.pk) > (datetime.fromisoformat(at), pk)


def _refold(conversation_ids: list[int], fresh: dict[int, list[Event]] | None = None) -> list[int]:
    """Recomputes these conversations' cycles and moves the rollups by the difference; returns
    the ids of the unfolded events it read (the ones now in the rollups as well).

    `fresh`: the unfolded events already read, by conversation, in timeline order. A conversation
    whose last cycle kept its state and whose fresh events all come after that state's last one
    goes on from there (its earlier cycles cannot change); any other (a late-committed event, a
    conversation moved, a first fold) is refolded from its whole log."""
    metas = _metas(conversation_ids)
    fresh = fresh or {}
    kept = Cycle.objects.filter(conversation_id__in=list(metas), resume__isnull=False).only(
        "conversation_id", "workspace_id", "number", "contribution", "resume"
    )
    going_on = {}
    for cycle in kept if fresh else ():
        events = fresh.get(cycle.conversation_id)
        if events and all(_after(event, cycle.resume) for event in events):
            builder = _CycleBuilder.resumed(metas[cycle.conversation_id], cycle.resume)
            if builder is not None:
                going_on[cycle.conversation_id] = (cycle, builder)
    whole = [pk for pk in metas if pk not in going_on]
    events = defaultdict(list)
    read = [event.pk for pk in going_on for event in fresh[pk]]
    if whole:
        for event in Event.objects.filter(conversation_id__in=whole).order_by("conversation_id", "at", "id"):
            events[event.conversation_id].append(event)
            if not event.folded:
                read.append(event.pk)
    old = list(Cycle.objects.filter(conversation_id__in=whole).only("workspace_id", "contribution"))
    new = [cycle for pk in whole for cycle in cycles_of(metas[pk], events[pk])]
    for pk, (cycle, builder) in going_on.items():
        old.append(cycle)
        new += cycles_of(metas[pk], fresh[pk], going_on=builder)
    delta: dict = defaultdict(dict)
    _contributions(old, -1, delta)
    _contributions(new, +1, delta)
    Cycle.objects.filter(conversation_id__in=whole).delete()
    Cycle.objects.filter(pk__in=[cycle.pk for cycle, _builder in going_on.values()]).delete()
    Cycle.objects.bulk_create(new, batch_size=1000)
    cycles_came_back_mark({(meta["workspace_id"], meta["contact_id"]) for meta in metas.values()})
    _rollups_apply(delta)
    return read


def _fold_chunks(conversation_ids: list[int], *, fresh: dict | None = None, stdout=None) -> int:
    """Refolds conversations a chunk a transaction, marking folded exactly the events each refold
    read: one committed meanwhile stays unfolded for the next run, never marked unseen. Returns
    how many events it marked."""
    marked = 0
    for start in range(0, len(conversation_ids), FOLD_CHUNK):
        with transaction.atomic():
            chunk = conversation_ids[start : start + FOLD_CHUNK]
            read = _refold(chunk, {pk: fresh[pk] for pk in chunk} if fresh else None)
            marked += _mark_folded(read)
        if stdout is not None and (start // FOLD_CHUNK) % 50 == 0:
            stdout.write(f"{min(start + FOLD_CHUNK, len(conversation_ids))} / {len(conversation_ids)} conversations")
    return marked


def _mark_folded(event_ids: list[int]) -> int:
    """One array parameter rather than `pk__in` (an IN list of thousands of placeholders, which
    the driver spent more time splitting than the fold took)."""
    if not event_ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute("UPDATE analytics_event SET folded = true WHERE id = ANY(%s) AND NOT folded", [event_ids])
        return cursor.rowcount


REPEAT_DAYS = 7
CAME_BACK = f"""
    UPDATE analytics_cycle c SET came_back = v.came_back
    FROM (
        SELECT c.id, c.closed_at IS NOT NULL AND EXISTS (
            SELECT 1 FROM analytics_cycle o
            WHERE o.workspace_id = c.workspace_id AND o.contact_id = c.contact_id
              AND o.opened_at > c.closed_at AND o.opened_at <= c.closed_at + interval '{REPEAT_DAYS} days'
        ) AS came_back
        FROM analytics_cycle c
        JOIN unnest(%s::bigint[], %s::bigint[]) AS k(workspace_id, contact_id)
          ON c.workspace_id = k.workspace_id AND c.contact_id = k.contact_id
    ) v
    WHERE c.id = v.id AND c.came_back IS DISTINCT FROM v.came_back
"""


def cycles_came_back_mark(contacts: set[tuple[int, int]]) -> None:
    """Repeat contact crosses conversations (the customer may come back on another channel):
    every cycle of these customers is marked again, whichever of their conversations changed."""
    if not contacts:
        return
    workspaces, contact_ids = zip(*sorted(contacts), strict=True)
    with connection.cursor() as cursor:
        cursor.execute(CAME_BACK, [list(workspaces), list(contact_ids)])


KEY_COLUMNS = ("workspace_id", "day", "agent_id", "team_id", "channel_id", "category", "language")
TOTAL_KEY_COLUMNS = ("workspace_id", "day")


def _upsert_sql(table: str, keys: tuple, rows: int) -> str:
    columns = (*keys, *SCALAR_COUNTERS, *ARRAY_COUNTERS)
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    updates = [f"{name} = {table}.{name} + EXCLUDED.{name}" for name in SCALAR_COUNTERS]
    updates += [
        f"{name} = ARRAY(SELECT a + b FROM unnest({table}.{name}, EXCLUDED.{name}) "
        f"WITH ORDINALITY AS t(a, b, i) ORDER BY i)"
        for name in ARRAY_COUNTERS
    ]
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([placeholders] * rows)} "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(updates)}"
    )


EMPTY_ROW = " AND ".join([f"{name} = 0" for name in SCALAR_COUNTERS] + [f"0 = ALL({name})" for name in ARRAY_COUNTERS])


def _collapsed(delta: dict) -> dict:
    """The same differences per workspace and day (for `DailyTotal`)."""
    totals: dict = defaultdict(dict)
    for (workspace_id, day, *_dimensions), counters in delta.items():
        row = totals[(workspace_id, day)]
        for name, amount in counters.items():
            if name in ARRAY_COUNTERS:
                row[name] = [a + b for a, b in zip(row.get(name) or [0] * ARRAY_COUNTERS[name], amount, strict=True)]
            else:
                row[name] = row.get(name, 0) + amount
    return totals


def _rows_of(delta: dict) -> list[list]:
    rows = []
    for key, counters in delta.items():
        if not any(any(v) if isinstance(v, list) else v for v in counters.values()):
            continue
        scalars = [counters.get(name, 0) for name in SCALAR_COUNTERS]
        arrays = [counters.get(name) or [0] * size for name, size in ARRAY_COUNTERS.items()]
        rows.append([*key, *scalars, *arrays])
    rows.sort(key=lambda row: [str(part) for part in row[:7]])  # one lock order for every folder
    return rows


def _rollups_apply(delta: dict) -> None:
    for table, keys, changes in (
        ("analytics_daily", KEY_COLUMNS, delta),
        ("analytics_dailytotal", TOTAL_KEY_COLUMNS, _collapsed(delta)),
    ):
        rows = _rows_of(changes)
        if not rows:
            continue
        with connection.cursor() as cursor:
            for start in range(0, len(rows), 500):
                batch = rows[start : start + 500]
                cursor.execute(_upsert_sql(table, keys, len(batch)), [value for row in batch for value in row])
            cursor.execute(
                f"DELETE FROM {table} WHERE workspace_id = ANY(%s) AND day = ANY(%s) AND {EMPTY_ROW}",
                [sorted({row[0] for row in rows}), sorted({row[1] for row in rows})],
            )


class _FoldLock:
    """Only one folder or rebuild at a time (a PostgreSQL session advisory lock): folding the
    same conversation twice at once would add its difference twice."""

    def __enter__(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [FOLD_LOCK])
            self.held = cursor.fetchone()[0]
        return self.held

    def __exit__(self, *exc) -> None:
        if self.held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [FOLD_LOCK])


def events_fold(*, limit: int = 20_000) -> int:
    """Folds the conversations of the oldest `limit` events not yet in the cycles and rollups;
    returns how many events that folded. Another folder at work: 0 at once (beat runs it again)."""
    with _FoldLock() as held:
        if not held:
            return 0
        fresh = defaultdict(list)
        for event in Event.objects.filter(folded=False).order_by("id")[:limit]:
            fresh[event.conversation_id].append(event)
        for events in fresh.values():
            events.sort(key=lambda event: (event.at, event.pk))
        return _fold_chunks(sorted(fresh), fresh=fresh)


def events_fold_all() -> int:
    """Folds until nothing is left (tests, the rebuild, a catch-up after an outage)."""
    total = 0
    while folded := events_fold():
        total += folded
    return total


def analytics_rebuild(*, workspace=None, stdout=None) -> int:
    """Throws the cycles and rollups away and folds every event again; the numbers must come
    out the same as the folder's. Returns the number of conversations folded."""
    with _FoldLock() as held:
        if not held:
            from apps.core.exceptions import Conflict

            raise Conflict("The folder is running; try again in a few seconds.")
        scope = {"workspace": workspace} if workspace is not None else {}
        with transaction.atomic():
            Daily.objects.filter(**scope).delete()
            DailyTotal.objects.filter(**scope).delete()
            Cycle.objects.filter(**scope).delete()
        conversation_ids = list(
            Event.objects.filter(**scope).order_by().values_list("conversation_id", flat=True).distinct()
        )
        conversation_ids.sort()
        _fold_chunks(conversation_ids, stdout=stdout)
        return len(conversation_ids)


def fold_lag() -> dict:
    """How far behind the folder is: unfolded events and the age of the oldest."""
    oldest = Event.objects.filter(folded=False).order_by("id").values_list("at", flat=True).first()
    return {
        "unfolded": Event.objects.filter(folded=False).count(),
        "oldest_seconds": _seconds(timezone.now(), oldest) if oldest else 0,
    }
