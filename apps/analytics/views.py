"""The supervisor dashboard (/analytics/), the conversations behind each number, and the live
panel's JSON. Supervisors and owners of the current workspace only; every read is a selector
scoped by that workspace."""

from dataclasses import replace
from datetime import UTC
from functools import wraps
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _

from apps.analytics import charts, selectors
from apps.analytics.filters import ReportFilters, report_filters
from apps.analytics.models import BUCKET_LABELS
from apps.core.exceptions import DomainError
from apps.workspaces.models import ADMIN_ROLES

PAGE_SIZE = 50


def supervisor_required(view):
    """Signed in, acting in a workspace, and a supervisor or owner of it (else 403)."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            from django.contrib.auth.views import redirect_to_login

            return redirect_to_login(request.get_full_path())
        context = request.workspace_context
        if context is None:
            raise Http404
        if not (request.user.is_superuser or context.role in ADMIN_ROLES):
            raise PermissionDenied
        return view(request, context.workspace, *args, **kwargs)

    return wrapped


def _choices(workspace) -> dict:
    from apps.connectors.models import Channel
    from apps.workspaces.models import Membership, Team

    return {
        "teams": Team.objects.filter(workspace=workspace).order_by("name"),
        "agents": Membership.objects.filter(workspace=workspace).select_related("user").order_by("user__username"),
        "channels": Channel.objects.filter(workspace=workspace).order_by("name"),
        "categories": workspace.closing_categories,
        "granularities": [("day", _("by day")), ("week", _("by week")), ("month", _("by month"))],
    }


def _filters(workspace, query) -> ReportFilters:
    filters = report_filters(workspace=workspace, query=query)
    try:  # the far ends of the calendar have no instant PostgreSQL (or Python) can hold
        filters.since.astimezone(UTC), filters.until.astimezone(UTC)
    except (OverflowError, ValueError):
        raise DomainError("Dates must lie within years 1–9998.", fields={"to": ["Out of range."]}) from None
    return filters


def _error_page(request, workspace, template: str, error: DomainError):
    context = {"error": error, "query": request.GET, **_choices(workspace)}
    return render(request, template, context, status=400)


@supervisor_required
def dashboard(request, workspace):
    try:
        filters = _filters(workspace, request.GET)
        by = request.GET.get("by") or _granularity(filters)
        data = _dashboard_data(filters, by)
    except DomainError as error:
        return _error_page(request, workspace, "analytics/dashboard.html", error)
    return render(
        request,
        "analytics/dashboard.html",
        {
            "filters": filters,
            "by": by,
            "query": request.GET,
            "export_query": urlencode(filters.query()),  # the download has the page's range and filters
            **data,
            **_choices(workspace),
        },
    )


def _granularity(filters: ReportFilters) -> str:
    """By day up to a month, by week up to half a year, by month beyond: a chart of readable bars
    unless the supervisor asks for another."""
    return "day" if filters.days <= 31 else "week" if filters.days <= 183 else "month"


def _dashboard_data(filters: ReportFilters, by: str) -> dict:
    totals = selectors.daily_totals(filters)
    summary = selectors.report_summary(filters, totals=totals)
    heat = selectors.hour_weekday(filters)
    short, long = selectors.trend(filters, by=by), selectors.trend(selectors.last_twelve_months(filters), by="month")
    agents = selectors.agent_table(filters)
    load = selectors.load(filters, heatmap=heat, totals=totals)
    broadcasts = selectors.broadcasts(filters)
    data = {
        "summary": summary,
        "trend": short,
        "csat_tables": _csat_tables(selectors.csat_breakdown(filters)),
        "leaderboard": agents,
        "automation": selectors.automation(filters, totals=totals),
        "broadcasts": broadcasts,
        "load": load,
        "live": selectors.live_panel(workspace=filters.workspace),
        "bucket_labels": BUCKET_LABELS,
    }
    data["charts"] = _charts(filters, by, summary, short, long, heat, agents, load, broadcasts)
    return data


def _csat_tables(breakdown: dict) -> list[tuple]:
    titles = {"channel": _("Per channel"), "agent": _("Per agent"), "team": _("Per team")}
    return [(titles[dimension], breakdown[dimension], dimension) for dimension in titles]


def _drill(filters: ReportFilters, metric: str, **extra) -> str:
    return f"{reverse('analytics:conversations')}?{urlencode(filters.query(metric=metric, **extra))}"


def _charts(filters, by, summary, short, long, heat, agents, load, broadcasts) -> dict:
    weekdays = [str(day) for day in selectors.WEEKDAY_LABELS]
    hour_of_week = [f"{day} {hour:02d}" for day in weekdays for hour in range(24)]
    buckets = [str(label) for label in BUCKET_LABELS]
    return {
        "volume": _volume(filters, short, by, _("Conversations, this range")),
        "volume_long": _volume(filters, long, "month", _("Conversations, last 12 months")),
        "times": _times(short, by, _("Response and resolution, this range")),
        "times_long": _times(long, "month", _("Response and resolution, last 12 months")),
        "heatmap": charts.heatmap(
            _("Conversations opened or reopened, by weekday and hour"),
            heat,
            weekdays,
            link=lambda day, hour: _drill(filters, "started", weekday=day + 1, hour=hour),
        ),
        "first_response": charts.bars(
            _("First response time"),
            buckets,
            {_("Conversations"): summary["first_response_buckets"]},
            links={_("Conversations"): [_drill(filters, "first_response", bucket=i) for i in range(len(buckets))]},
            show_legend=False,
        ),
        "resolution": charts.bars(
            _("Resolution time"),
            buckets,
            {_("Conversations"): summary["resolution_buckets"]},
            links={_("Conversations"): [_drill(filters, "resolution", bucket=i) for i in range(len(buckets))]},
            show_legend=False,
        ),
        "service_level": charts.horizontal_bars(
            _("Service level per channel (%)"),
            [row["channel"] for row in summary["service_level"]],
            {_("Within target"): [round((row["rate"] or 0) * 100, 1) for row in summary["service_level"]]},
            links={
                _("Within target"): [
                    _drill(filters, "service_level", channel=row["channel_id"], met=1)
                    for row in summary["service_level"]
                ]
            },
            show_legend=False,
            range=(0, 100),
        ),
        "csat": charts.bars(
            _("CSAT ratings"),
            ["1", "2", "3", "4", "5"],
            {_("Ratings"): summary["csat_distribution"]},
            links={_("Ratings"): [_drill(filters, "csat", score=score) for score in range(1, 6)]},
            show_legend=False,
        ),
        "agents": charts.horizontal_bars(
            _("Closed per agent"),
            [row["name"] for row in agents[:10]],
            {_("Closed"): [row["closed"] for row in agents[:10]]},
            links={_("Closed"): [_drill(filters, "closed", agent=row["id"]) for row in agents[:10]]},
            show_legend=False,
        ),
        "load": charts.lines(
            _("Agents online vs needed, per hour of the week"),
            hour_of_week,
            {
                _("Online (average)"): [v for day in load["online"] for v in day],
                _("Needed"): [v for day in load["needed"] for v in day],
            },
            label_every=24,
        ),
        "broadcasts": charts.bars(
            _("Broadcast funnel"),
            [row["name"] for row in broadcasts["broadcasts"]],
            {
                _(stage.capitalize()): [row[stage] for row in broadcasts["broadcasts"]]
                for stage in ("sent", "delivered", "read", "replied", "converted")
            },
        )
        if broadcasts["broadcasts"]
        else None,
    }


def _label(point: dict, by: str) -> str:
    return point["period"].strftime("%b %Y" if by == "month" else "%d %b")


def _volume(filters, points, by, title) -> str:
    labels = [_label(p, by) for p in points]
    links = {
        name: [_drill(replace(filters, start=p["from"], end=p["to"]), metric) for p in points]
        for name, metric in ((_("Opened"), "opened"), (_("Closed"), "closed"))
    }
    return charts.bars(
        title,
        labels,
        {_("Opened"): [p["opened"] for p in points], _("Closed"): [p["closed"] for p in points]},
        links=links,
    )


def _times(points, by, title) -> str:
    labels = [_label(p, by) for p in points]

    def minutes(value):
        return None if value is None else round(value / 60, 1)

    def hours(value):
        return None if value is None else round(value / 3600, 1)

    return charts.lines(
        title,
        labels,
        {_("First response avg (min)"): [minutes(p["first_response_avg_seconds"]) for p in points]},
        secondary={_("Resolution avg (h)"): [hours(p["resolution_avg_seconds"]) for p in points]},
    )


@supervisor_required
def conversations(request, workspace):
    """The cycles behind one number, newest first, each opening its conversation in the inbox."""
    try:
        filters = _filters(workspace, request.GET)
        metric, rows = selectors.cycles_behind(filters, request.GET)
    except DomainError as error:
        return _error_page(request, workspace, "analytics/conversations.html", error)
    page = Paginator(rows.select_related("conversation__contact"), PAGE_SIZE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "analytics/conversations.html",
        {
            "filters": filters,
            "metric": metric,
            "metric_name": request.GET.get("metric"),
            "page": page,
            "params": params.urlencode(),
            "dashboard_query": urlencode(filters.query()),
            "query": request.GET,
            **_choices(workspace),
        },
    )


@supervisor_required
def live(request, workspace):
    """The live panel as JSON: the dashboard refetches it when the websocket reports a change."""
    return JsonResponse(selectors.live_panel(workspace=workspace))
