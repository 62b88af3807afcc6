"""Reads for the analytics dashboard, the drill-down, the live panel and `/api/v1/reports/summary/`.

Totals and trends are SUMs over `Daily` rows (one query whatever the range); medians, service
level, repeat contacts and the drill-down read `Cycle` (indexed by opened_at / closed_at); nothing
here reads messages. Every function takes a `ReportFilters` (apps/analytics/filters.py) and
scopes every query by its workspace. docs/metrics.md defines each number."""

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from django.db.models import (
    Aggregate,
    Case,
    Count,
    F,
    FloatField,
    IntegerField,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import ExtractHour, ExtractIsoWeekDay, TruncMonth, TruncWeek
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from apps.analytics.filters import ReportFilters
from apps.analytics.models import (
    ARRAY_COUNTERS,
    BUCKET_LABELS,
    BUCKETS,
    SCALAR_COUNTERS,
    AgentPresence,
    Cycle,
    Daily,
    DailyTotal,
    Settings,
)
from apps.core.exceptions import DomainError

GRANULARITIES = ("day", "week", "month")
WEEKDAY_LABELS = (_("Mon"), _("Tue"), _("Wed"), _("Thu"), _("Fri"), _("Sat"), _("Sun"))


class Median(Aggregate):
    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def _ratio(part, whole, digits: int = 4) -> float | None:
    return round(part / whole, digits) if whole else None


def _average(total, count) -> float | None:
    return round(total / count, 1) if count else None


def settings_for(workspace) -> Settings:
    """The workspace's reporting rules; the defaults until a supervisor saves their own."""
    return Settings.objects.filter(workspace=workspace).first() or Settings(workspace=workspace)


# Daily sums ----------------------------------------------------------------------------------


DIMENSIONS = ("team_id", "agent_id", "channel_id", "category", "language")


def daily_rows(filters: ReportFilters) -> QuerySet[Daily]:
    rows = Daily.objects.filter(workspace=filters.workspace, day__gte=filters.start, day__lte=filters.end)
    for name in DIMENSIONS:
        value = getattr(filters, name)
        if value is not None:
            rows = rows.filter(**{name: value})
    return rows


def day_rows(filters: ReportFilters) -> QuerySet[Daily] | QuerySet[DailyTotal]:
    """For sums over days only (totals, trends, the heatmap): one `DailyTotal` row a day when
    nothing narrows the report, else the `Daily` rows that match."""
    if all(getattr(filters, name) is None for name in DIMENSIONS):
        return DailyTotal.objects.filter(workspace=filters.workspace, day__gte=filters.start, day__lte=filters.end)
    return daily_rows(filters)


def _sum_expressions(names=SCALAR_COUNTERS, arrays=ARRAY_COUNTERS) -> dict:
    """SUM of every counter, and of every element of the array counters (PostgreSQL cannot SUM arrays)."""
    sums = {name: Sum(name) for name in names}
    for name, length in arrays.items():
        sums.update({f"{name}__{i}": Sum(f"{name}__{i}") for i in range(length)})
    return sums


def _folded(row: dict, arrays=ARRAY_COUNTERS) -> dict:
    """Turns a row of sums back into counters (None -> 0) and arrays."""
    out = {key: value or 0 for key, value in row.items() if "__" not in key}
    for name, length in arrays.items():
        if f"{name}__0" in row:
            out[name] = [row[f"{name}__{i}"] or 0 for i in range(length)]
    return out


def daily_totals(filters: ReportFilters) -> dict:
    """Every Daily counter summed over the range and filters (arrays element-wise)."""
    return _folded(day_rows(filters).aggregate(**_sum_expressions()))


# Cycles --------------------------------------------------------------------------------------


def _agent_q(agent_id: int, attributed_to: str) -> Q:
    """Which cycles count for an agent, mirroring whom Daily files the counter under."""
    if attributed_to == "closer":  # who closed it (a person), else the assignee at close
        return Q(closer_id=agent_id) | Q(closer__isnull=True, assignee_id=agent_id)
    if attributed_to == "assignees":
        return Q(assignees__contains=[agent_id])
    return Q(**{f"{attributed_to}_id": agent_id})


def cycle_rows(filters: ReportFilters, *, at: str = "opened_at", agent: str = "assignee") -> QuerySet[Cycle]:
    """Cycles whose `at` falls in the range, with the filters applied (agent as attributed)."""
    rows = Cycle.objects.filter(
        workspace=filters.workspace, **{f"{at}__gte": filters.since, f"{at}__lt": filters.until}
    ).defer("resume")  # the folder's own state: no report reads it
    for name in ("team_id", "channel_id", "category", "language"):
        value = getattr(filters, name)
        if value is not None:
            rows = rows.filter(**{name: value})
    if filters.agent_id is not None:
        rows = rows.filter(_agent_q(filters.agent_id, agent))
    return rows


def medians(filters: ReportFilters) -> dict:
    """Median first response (by the day of the first response) and resolution (by closing day)."""
    first = cycle_rows(filters, at="first_response_at", agent="responder").aggregate(
        value=Median("first_response_seconds")
    )
    resolution = cycle_rows(filters, at="closed_at", agent="closer").aggregate(value=Median("resolution_seconds"))
    return {
        "first_response_median_seconds": _rounded(first["value"]),
        "resolution_median_seconds": _rounded(resolution["value"]),
    }


def _rounded(value) -> float | None:
    return None if value is None else round(value, 1)


def _with_target(rows: QuerySet[Cycle], workspace) -> QuerySet[Cycle]:
    """Annotates each cycle with its channel kind's first response target (Settings.target_for)."""
    rules = settings_for(workspace)
    target = Case(
        When(channel__kind="email", then=Value(rules.target_for("email"))),
        default=Value(rules.target_for("chat")),
        output_field=IntegerField(),
    )
    return rows.annotate(target=target)


def service_level(filters: ReportFilters) -> list[dict]:
    """Per channel: of the cycles first answered in the range, the share answered within the
    workspace's target for that channel's kind (chat vs email)."""
    from apps.connectors.models import Channel

    rows = _with_target(cycle_rows(filters, at="first_response_at", agent="responder"), filters.workspace)
    counts = (
        rows.filter(first_response_seconds__isnull=False)
        .values("channel_id", "target")
        .annotate(answered=Count("id"), within=Count("id", filter=Q(first_response_seconds__lte=F("target"))))
        .order_by()
    )
    channels = {c.pk: c for c in Channel.objects.filter(workspace=filters.workspace)}
    result = []
    for row in sorted(counts, key=lambda r: channels[r["channel_id"]].name):
        channel = channels[row["channel_id"]]
        result.append(
            {
                "channel_id": channel.pk,
                "channel": channel.name,
                "kind": channel.kind,
                "target_seconds": row["target"],
                "answered": row["answered"],
                "within": row["within"],
                "missed": row["answered"] - row["within"],
                "rate": _ratio(row["within"], row["answered"]),
            }
        )
    return result


def repeat_contacts(filters: ReportFilters) -> dict:
    """Closed cycles in the range whose customer opened another one (any channel) within 7 days."""
    counts = cycle_rows(filters, at="closed_at", agent="closer").aggregate(
        closed=Count("id"), repeated=Count("id", filter=Q(came_back=True))
    )
    return {
        "repeat_contact_closed": counts["closed"],
        "repeat_contacts": counts["repeated"],
        "repeat_contact_rate": _ratio(counts["repeated"], counts["closed"]),
    }


# The summary ---------------------------------------------------------------------------------


def report_summary(filters: ReportFilters, *, totals: dict | None = None) -> dict:
    """Every headline number of the range, as plain JSON. The keys are stable (the API serves them):

    - from, to (local dates, inclusive), timezone, bucket_labels (the 7 buckets' labels)
    - opened, reopened, closed, messages_in, messages_out, messages_bot, notes, assigned, transfers
    - first_responses, first_response_avg_seconds, first_response_median_seconds, first_response_buckets[7]
    - assigned_responses, assigned_response_avg_seconds (first assignment -> first response)
    - responses, response_avg_seconds (every reply that answered waiting customer messages)
    - resolution_avg_seconds, resolution_median_seconds, resolution_buckets[7] (closed conversations)
    - handle_seconds (total person time), handle_avg_seconds (per closed conversation)
    - service_level: [{channel_id, channel, kind, target_seconds, answered, within, missed, rate}],
      service_level_rate (all channels together)
    - csat_count, csat_avg, csat_distribution[5] (how many 1s..5s), cdsat (share of 1-2 ratings)
    - bot_conversations, contained, containment_rate (contained / bot_conversations), handovers,
      handover_rate (handovers / bot_conversations), faq_answered, faq_accepted, faq_acceptance_rate
    - repeat_contact_closed, repeat_contacts, repeat_contact_rate (closed cycles whose customer came
      back within 7 days)
    - queued, queue_waits, queue_wait_avg_seconds

    Averages and rates are null when there is nothing to average; durations are seconds.
    `totals` (daily_totals of the same filters) saves the query when the caller has them."""
    totals = totals or daily_totals(filters)
    levels = service_level(filters)
    answered = sum(row["answered"] for row in levels)
    summary = {
        "from": filters.start.isoformat(),
        "to": filters.end.isoformat(),
        "timezone": str(filters.workspace.tz),
        "bucket_labels": [str(label) for label in BUCKET_LABELS],
        **{
            name: totals[name]
            for name in (
                "opened",
                "reopened",
                "closed",
                "messages_in",
                "messages_out",
                "messages_bot",
                "notes",
                "assigned",
                "transfers",
                "first_responses",
                "assigned_responses",
                "responses",
                "handle_seconds",
                "csat_count",
                "bot_conversations",
                "contained",
                "handovers",
                "faq_answered",
                "faq_accepted",
                "queued",
                "queue_waits",
            )
        },
        "first_response_avg_seconds": _average(totals["first_response_seconds"], totals["first_responses"]),
        "first_response_buckets": totals["first_response_buckets"],
        "assigned_response_avg_seconds": _average(totals["assigned_response_seconds"], totals["assigned_responses"]),
        "response_avg_seconds": _average(totals["response_seconds"], totals["responses"]),
        "resolution_avg_seconds": _average(totals["resolution_seconds"], totals["closed"]),
        "resolution_buckets": totals["resolution_buckets"],
        "handle_avg_seconds": _average(totals["handle_seconds"], totals["closed"]),
        "service_level": levels,
        "service_level_rate": _ratio(sum(row["within"] for row in levels), answered),
        "csat_avg": _ratio(totals["csat_sum"], totals["csat_count"], 2),
        "csat_distribution": totals["csat_scores"],
        "cdsat": _ratio(sum(totals["csat_scores"][:2]), totals["csat_count"]),
        "containment_rate": _ratio(totals["contained"], totals["bot_conversations"]),
        "handover_rate": _ratio(totals["handovers"], totals["bot_conversations"]),
        "faq_acceptance_rate": _ratio(totals["faq_accepted"], totals["faq_answered"]),
        "queue_wait_avg_seconds": _average(totals["queue_wait_seconds"], totals["queue_waits"]),
        **medians(filters),
        **repeat_contacts(filters),
    }
    return summary


# Trends --------------------------------------------------------------------------------------

TREND_COUNTERS = (
    "opened",
    "closed",
    "reopened",
    "messages_in",
    "messages_out",
    "first_responses",
    "first_response_seconds",
    "resolution_seconds",
    "csat_count",
    "csat_sum",
)


def _period_starts(start: date, end: date, by: str) -> list[date]:
    if by == "day":
        return [start + timedelta(days=i) for i in range((end - start).days + 1)]
    if by == "week":
        first = start - timedelta(days=start.weekday())
        return [first + timedelta(weeks=i) for i in range((end - first).days // 7 + 1)]
    periods, month = [], start.replace(day=1)
    while month <= end:
        periods.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return periods


def trend(filters: ReportFilters, *, by: str = "day") -> list[dict]:
    """The range's counters per day, week (Monday first) or month, gaps filled with zeros; each
    point carries its own from/to so a chart's bar can link to its conversations."""
    if by not in GRANULARITIES:
        raise DomainError("'by' must be day, week or month.", code="invalid", fields={"by": ["Unknown."]})
    period = {"day": F("day"), "week": TruncWeek("day"), "month": TruncMonth("day")}[by]
    rows = (
        day_rows(filters)
        .annotate(period=period)
        .values("period")
        .annotate(**{name: Sum(name) for name in TREND_COUNTERS})
        .order_by()
    )
    found = {_as_date(row.pop("period")): row for row in rows}
    points = []
    for start in _period_starts(filters.start, filters.end, by):
        row = dict.fromkeys(TREND_COUNTERS, 0) | {k: v or 0 for k, v in found.get(start, {}).items()}
        end = _period_end(start, by)
        points.append(
            {
                "period": start,
                "from": max(start, filters.start),
                "to": min(end, filters.end),
                **{name: row.get(name, 0) for name in TREND_COUNTERS},
                "first_response_avg_seconds": _average(
                    row.get("first_response_seconds", 0), row.get("first_responses")
                ),
                "resolution_avg_seconds": _average(row.get("resolution_seconds", 0), row.get("closed")),
                "csat_avg": _ratio(row.get("csat_sum", 0), row.get("csat_count"), 2),
            }
        )
    return points


def _as_date(value) -> date:
    return value.date() if isinstance(value, datetime) else value


def _period_end(start: date, by: str) -> date:
    if by == "day":
        return start
    if by == "week":
        return start + timedelta(days=6)
    return (start + timedelta(days=32)).replace(day=1) - timedelta(days=1)


def last_twelve_months(filters: ReportFilters) -> ReportFilters:
    """The same filters over the twelve calendar months that end with the range's last day."""
    first = filters.end.replace(day=1)
    for _month in range(11):
        first = (first - timedelta(days=1)).replace(day=1)
    return replace(filters, start=first)


def hour_weekday(filters: ReportFilters) -> list[list[int]]:
    """Conversations opened per local weekday (Monday first) x hour: 7 rows of 24."""
    rows = (
        day_rows(filters)
        .annotate(weekday=ExtractIsoWeekDay("day"))
        .values("weekday")
        .annotate(**_sum_expressions(names=(), arrays={"opened_by_hour": 24}))
        .order_by()
    )
    matrix = [[0] * 24 for _day in range(7)]
    for row in rows:
        matrix[row["weekday"] - 1] = _folded(row, {"opened_by_hour": 24})["opened_by_hour"]
    return matrix


# Breakdowns ----------------------------------------------------------------------------------


def _members(workspace) -> dict:
    from apps.workspaces.models import Membership

    return {m.pk: m for m in Membership.objects.filter(workspace=workspace).select_related("user")}


def csat_breakdown(filters: ReportFilters) -> dict:
    """CSAT average, count and CD-SAT per channel, agent (who was rated) and team."""
    from apps.connectors.models import Channel
    from apps.workspaces.models import Team

    names = {
        "channel_id": {c.pk: c.name for c in Channel.objects.filter(workspace=filters.workspace)},
        "agent_id": {pk: m.user.display_name for pk, m in _members(filters.workspace).items()},
        "team_id": {t.pk: t.name for t in Team.objects.filter(workspace=filters.workspace)},
    }
    result = {}
    for key, labels in names.items():
        rows = (
            daily_rows(filters)
            .values(key)
            .annotate(
                count=Sum("csat_count"), total=Sum("csat_sum"), low=Sum("csat_scores__0") + Sum("csat_scores__1")
            )
            .filter(count__gt=0)
            .order_by(key)
        )
        result[key.removesuffix("_id")] = [
            {
                "id": row[key],
                "name": labels.get(row[key], "—"),
                "count": row["count"],
                "avg": _ratio(row["total"], row["count"], 2),
                "cdsat": _ratio(row["low"], row["count"]),
            }
            for row in rows
        ]
    return result


AGENT_COUNTERS = (
    "assigned",
    "closed",
    "messages_out",
    "notes",
    "first_responses",
    "first_response_seconds",
    "resolution_seconds",
    "handle_seconds",
    "csat_count",
    "csat_sum",
)


def agent_table(filters: ReportFilters) -> list[dict]:
    """Per agent with any activity in the range, busiest (most closed) first: assigned, closed,
    messages, first response (avg and median), resolution avg, handle time, CSAT."""
    rows = (
        daily_rows(filters)
        .filter(agent__isnull=False)
        .values("agent_id")
        .annotate(**{name: Sum(name) for name in AGENT_COUNTERS})
        .order_by()
    )
    medians_by_agent = dict(
        cycle_rows(filters, at="first_response_at", agent="responder")
        .filter(responder__isnull=False)
        .values("responder_id")
        .annotate(median=Median("first_response_seconds"))
        .values_list("responder_id", "median")
        .order_by()
    )
    members = _members(filters.workspace)
    table = []
    for row in rows:
        agent = members.get(row["agent_id"])
        table.append(
            {
                "id": row["agent_id"],
                "name": agent.user.display_name if agent else "—",
                "assigned": row["assigned"],
                "closed": row["closed"],
                "messages_out": row["messages_out"],
                "notes": row["notes"],
                "first_responses": row["first_responses"],
                "first_response_avg_seconds": _average(row["first_response_seconds"], row["first_responses"]),
                "first_response_median_seconds": _rounded(medians_by_agent.get(row["agent_id"])),
                "resolution_avg_seconds": _average(row["resolution_seconds"], row["closed"]),
                "handle_seconds": row["handle_seconds"],
                "csat_count": row["csat_count"],
                "csat_avg": _ratio(row["csat_sum"], row["csat_count"], 2),
            }
        )
    return sorted(table, key=lambda r: (-r["closed"], -r["assigned"], r["name"]))


def automation(filters: ReportFilters, totals: dict | None = None) -> dict:
    """Bots: containment, hand-overs, FAQ answers, and the per-step drop-off of each enabled
    workflow (all-time, from apps.workflows.selectors.step_drop_off: runs are not dated here)."""
    from apps.workflows.models import Workflow
    from apps.workflows.selectors import step_drop_off

    totals = totals or daily_totals(filters)
    workflows = Workflow.objects.filter(workspace=filters.workspace, enabled=True).order_by("name")[:12]
    return {
        "bot_conversations": totals["bot_conversations"],
        "contained": totals["contained"],
        "containment_rate": _ratio(totals["contained"], totals["bot_conversations"]),
        "handovers": totals["handovers"],
        "handover_rate": _ratio(totals["handovers"], totals["bot_conversations"]),
        "faq_answered": totals["faq_answered"],
        "faq_accepted": totals["faq_accepted"],
        "faq_acceptance_rate": _ratio(totals["faq_accepted"], totals["faq_answered"]),
        "workflows": [{"id": w.pk, "name": w.name, "steps": step_drop_off(workflow=w)} for w in workflows],
    }


FUNNEL = ("total", "sent", "delivered", "read", "replied", "converted", "failed", "skipped")


def broadcasts(filters: ReportFilters) -> dict:
    """The funnel of each broadcast started in the range (one aggregate over their recipients),
    and the same summed per campaign. A recipient read was also delivered and sent."""
    from apps.broadcasts.models import Broadcast, Recipient

    State = Recipient.State
    found = Broadcast.objects.filter(
        workspace=filters.workspace, started_at__gte=filters.since, started_at__lt=filters.until
    ).select_related("campaign")
    if filters.channel_id is not None:
        found = found.filter(channel_id=filters.channel_id)
    found = list(found.order_by("started_at")[:50])
    counts = {
        row.pop("broadcast_id"): row
        for row in Recipient.objects.filter(broadcast__in=found)
        .values("broadcast_id")
        .annotate(
            total=Count("id"),
            sent=Count("id", filter=Q(state__in=(State.SENT, State.DELIVERED, State.READ))),
            delivered=Count("id", filter=Q(state__in=(State.DELIVERED, State.READ))),
            read=Count("id", filter=Q(state=State.READ)),
            replied=Count("replied_at"),
            converted=Count("converted_at"),
            failed=Count("id", filter=Q(state=State.FAILED)),
            skipped=Count("id", filter=Q(state=State.SKIPPED)),
        )
        .order_by()
    }
    rows, campaigns = [], {}
    for broadcast in found:
        funnel = counts.get(broadcast.pk, dict.fromkeys(FUNNEL, 0))
        rows.append({"id": broadcast.pk, "name": broadcast.name, "started_at": broadcast.started_at, **funnel})
        if broadcast.campaign_id:
            campaign = campaigns.setdefault(
                broadcast.campaign_id, {"id": broadcast.campaign_id, "name": broadcast.campaign.name, "broadcasts": 0}
            )
            campaign["broadcasts"] += 1
            for stage in FUNNEL:
                campaign[stage] = campaign.get(stage, 0) + funnel[stage]
    return {"broadcasts": rows, "campaigns": sorted(campaigns.values(), key=lambda c: c["name"])}


# Load ----------------------------------------------------------------------------------------


def _weekday_occurrences(filters: ReportFilters) -> list[int]:
    counts = [0] * 7
    for offset in range(filters.days):
        counts[(filters.start + timedelta(days=offset)).weekday()] += 1
    return counts


def _presence_rows(filters: ReportFilters) -> list[AgentPresence]:
    """Status changes in the range, plus each agent's last one before it (their status at the start)."""
    rows = AgentPresence.objects.filter(workspace=filters.workspace)
    if filters.agent_id is not None:
        rows = rows.filter(membership_id=filters.agent_id)
    elif filters.team_id is not None:
        rows = rows.filter(membership__teams__id=filters.team_id)
    before = rows.filter(at__lt=filters.since).order_by("membership_id", "-at").distinct("membership_id")
    during = rows.filter(at__gte=filters.since, at__lt=filters.until).order_by("membership_id", "at")
    return sorted([*before, *during], key=lambda p: (p.membership_id, p.at))


def online_hours(filters: ReportFilters) -> list[list[float]]:
    """Average number of agents online per local weekday x hour over the range, from the
    intervals between AgentPresence changes (away and offline do not count)."""
    tz, seconds = filters.workspace.tz, [[0.0] * 24 for _day in range(7)]
    end_of_range = min(filters.until, timezone.now())
    by_agent = defaultdict(list)
    for change in _presence_rows(filters):
        by_agent[change.membership_id].append(change)
    for changes in by_agent.values():
        for change, following in zip(changes, [*changes[1:], None], strict=True):
            if change.status != "online":
                continue
            start = max(change.at, filters.since)
            stop = min(following.at if following else end_of_range, end_of_range)
            _spread(start.astimezone(tz), stop.astimezone(tz), seconds)
    days = _weekday_occurrences(filters)
    return [[round(seconds[d][h] / (days[d] * 3600), 2) if days[d] else 0.0 for h in range(24)] for d in range(7)]


def _spread(start: datetime, stop: datetime, seconds: list[list[float]]) -> None:
    while start < stop:
        next_hour = (start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)).astimezone(start.tzinfo)
        piece = min(next_hour, stop)
        seconds[start.weekday()][start.hour] += (piece - start).total_seconds()
        start = piece


def load(filters: ReportFilters, heatmap: list[list[int]] | None = None, totals: dict | None = None) -> dict:
    """Queue waits, and agents online vs needed per hour of the week.

    needed = arrivals in that hour (conversations opened, averaged over the range's occurrences
    of that weekday) x the average handle minutes of the teams (the filtered team's, else every
    team's; Team.average_handle_minutes) / 60, divided by the average agent capacity (the most
    conversations an agent takes at once, AgentStatus.capacity): the agents it takes to carry
    that hour's work if each works `capacity` conversations side by side."""
    from apps.workspaces.models import AgentStatus, Team

    heatmap = heatmap if heatmap is not None else hour_weekday(filters)
    totals = totals or daily_totals(filters)
    teams = Team.objects.filter(workspace=filters.workspace)
    if filters.team_id is not None:
        teams = teams.filter(pk=filters.team_id)
    handle_minutes = [t.average_handle_minutes for t in teams] or [6]
    capacities = list(AgentStatus.objects.filter(workspace=filters.workspace).values_list("capacity", flat=True))
    capacity = (sum(capacities) / len(capacities)) if capacities else 5
    aht_hours = sum(handle_minutes) / len(handle_minutes) / 60
    days = _weekday_occurrences(filters)
    needed = [
        [round(heatmap[d][h] / days[d] * aht_hours / capacity, 2) if days[d] else 0.0 for h in range(24)]
        for d in range(7)
    ]
    return {
        "queued": totals["queued"],
        "queue_waits": totals["queue_waits"],
        "queue_wait_avg_seconds": _average(totals["queue_wait_seconds"], totals["queue_waits"]),
        "average_handle_minutes": round(aht_hours * 60, 1),
        "capacity": round(capacity, 1),
        "online": online_hours(filters),
        "needed": needed,
    }


# Live ----------------------------------------------------------------------------------------


def live_panel(*, workspace) -> dict:
    """Now: conversations waiting for a person per team (open, unassigned; queued ones counted
    apart), the longest wait, and each present agent with their load (open conversations
    assigned). Three queries; the dashboard refetches it when the websocket says something moved."""
    from django.db.models import Min
    from django.db.models.functions import Coalesce

    from apps.conversations.models import Conversation
    from apps.workspaces.models import AgentStatus, Team

    now = timezone.now()
    open_ = Conversation.objects.filter(workspace=workspace, status=Conversation.Status.OPEN)
    waiting = (
        open_.filter(assignee__isnull=True)
        .values("team_id")
        .annotate(
            waiting=Count("id"),
            queued=Count("id", filter=Q(queued_at__isnull=False)),
            since=Min(Coalesce("queued_at", "waiting_since", "opened_at")),
        )
        .order_by()
    )
    names = dict(Team.objects.filter(workspace=workspace).values_list("id", "name"))
    teams = [
        {
            "id": row["team_id"],
            "name": names.get(row["team_id"], str(_("No team"))),
            "waiting": row["waiting"],
            "queued": row["queued"],
            "longest_wait_seconds": int((now - row["since"]).total_seconds()) if row["since"] else 0,
        }
        for row in waiting
    ]
    teams.sort(key=lambda t: -t["longest_wait_seconds"])
    loads = dict(open_.filter(assignee__isnull=False).values_list("assignee_id").annotate(Count("id")).order_by())
    present = (
        AgentStatus.objects.filter(workspace=workspace)
        .exclude(status=AgentStatus.Status.OFFLINE)
        .select_related("membership__user")
        .order_by("status", "membership__user__username")
    )
    agents = [
        {
            "id": s.membership_id,
            "name": s.membership.user.display_name,
            "status": s.status,
            "load": loads.get(s.membership_id, 0),
            "capacity": s.capacity,
        }
        for s in present
    ]
    return {
        "at": now.isoformat(),
        "waiting": sum(t["waiting"] for t in teams),
        "longest_wait_seconds": max((t["longest_wait_seconds"] for t in teams), default=0),
        "teams": teams,
        "online": sum(1 for a in agents if a["status"] == AgentStatus.Status.ONLINE),
        "away": sum(1 for a in agents if a["status"] == AgentStatus.Status.AWAY),
        "agents": agents,
    }


# Drill-down ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """The cycles behind a number: which timestamp puts a cycle in the range, which cycles
    count, and whom the number is filed under for the agent filter (as Daily files it)."""

    label: str
    at: str = "opened_at"
    where: Q = field(default_factory=Q)
    agent: str = "assignee"


METRICS = {
    "opened": Metric(_("Opened"), where=Q(number=1)),  # a first opening; reopenings are "reopened"
    "started": Metric(_("Opened or reopened")),  # the heatmap counts both
    "reopened": Metric(_("Reopened"), where=Q(number__gt=1)),
    "closed": Metric(_("Closed"), "closed_at", agent="closer"),
    "resolution": Metric(_("Resolution time"), "closed_at", Q(resolution_seconds__isnull=False), "closer"),
    "contained": Metric(_("Contained by a bot"), "closed_at", Q(contained=True), "closer"),
    "first_response": Metric(
        _("First response"), "first_response_at", Q(first_response_seconds__isnull=False), "responder"
    ),
    "assigned_response": Metric(
        _("First assignment → first response"),
        "first_response_at",
        Q(assigned_response_seconds__isnull=False),
        "responder",
    ),
    "service_level": Metric(
        _("Service level"), "first_response_at", Q(first_response_seconds__isnull=False), "responder"
    ),
    "responses": Metric(_("Replies"), where=Q(responses__gt=0)),
    "messages": Metric(_("With messages"), where=Q(messages_in__gt=0) | Q(messages_out__gt=0)),
    "assigned": Metric(_("Assigned"), "first_assigned_at", Q(first_assigned_at__isnull=False), "assignees"),
    "handle": Metric(_("Handled"), where=Q(handle_seconds__gt=0)),
    "csat": Metric(_("Rated"), "rated_at", Q(csat__isnull=False), "csat_agent"),
    "cdsat": Metric(_("Rated 1–2"), "rated_at", Q(csat__lte=2), "csat_agent"),
    "bot": Metric(_("A bot spoke"), where=Q(bot=True)),
    "handover": Metric(_("Handed over by a bot"), where=Q(handed_over=True)),
    "repeat_contact": Metric(_("Came back within 7 days"), "closed_at", agent="closer"),
    "queued": Metric(_("Waited in a queue"), where=Q(queue_seconds__isnull=False)),
}
DURATION_OF = {"first_response": "first_response_seconds", "resolution": "resolution_seconds"}


def _int_param(query, name: str, low: int, high: int) -> int | None:
    raw = query.get(name)
    if raw in (None, ""):
        return None
    if not str(raw).isdigit() or not low <= int(raw) <= high:
        raise DomainError(
            f"{name!r} must be a number from {low} to {high}.", code="invalid", fields={name: ["Invalid."]}
        )
    return int(raw)


def cycles_behind(filters: ReportFilters, query) -> tuple[Metric, QuerySet[Cycle]]:
    """The cycles behind one number of the dashboard: `metric` (a key of METRICS) and, where it
    applies, `bucket` (0-6 of a duration distribution), `score` (a CSAT 1-5), `met` (service
    level: 1 within the target, 0 missed), `weekday` (1 = Monday) and `hour` (local)."""
    name = query.get("metric") or ""
    if name not in METRICS:
        raise DomainError("Unknown metric.", code="invalid", fields={"metric": [f"One of {', '.join(METRICS)}."]})
    metric = METRICS[name]
    rows = cycle_rows(filters, at=metric.at, agent=metric.agent).filter(metric.where)
    bucket = _int_param(query, "bucket", 0, len(BUCKETS))
    if bucket is not None:
        rows = rows.filter(_bucket_q(DURATION_OF.get(name, "first_response_seconds"), bucket))
    score = _int_param(query, "score", 1, 5)
    if score is not None:
        rows = rows.filter(csat=score)
    if name == "repeat_contact":
        rows = rows.filter(came_back=True)
    met = _int_param(query, "met", 0, 1)
    if met is not None:
        rows = _with_target(rows, filters.workspace)
        within = Q(first_response_seconds__lte=F("target"))
        rows = rows.filter(within if met else ~within)
    weekday, hour = _int_param(query, "weekday", 1, 7), _int_param(query, "hour", 0, 23)
    if weekday is not None:
        rows = rows.annotate(_weekday=ExtractIsoWeekDay("opened_at", tzinfo=filters.workspace.tz)).filter(
            _weekday=weekday
        )
    if hour is not None:
        rows = rows.annotate(_hour=ExtractHour("opened_at", tzinfo=filters.workspace.tz)).filter(_hour=hour)
    rows = rows.select_related("channel", "assignee__user", "team").order_by(f"-{metric.at}", "-id")
    return metric, rows


def _bucket_q(duration: str, bucket: int) -> Q:
    bounds = (0, *BUCKETS)
    q = Q(**{f"{duration}__gte": bounds[bucket]})
    if bucket < len(BUCKETS):
        q &= Q(**{f"{duration}__lt": BUCKETS[bucket]})
    return q
