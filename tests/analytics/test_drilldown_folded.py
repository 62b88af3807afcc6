"""The drill-down against the real pipeline: the metrics scenario (tests/analytics/test_metrics.py,
driven through the services and folded) and, for every number that counts conversations, the
dashboard's number equals the count of cycles its link lists, for the whole workspace and per agent."""

import pytest

from apps.analytics import selectors
from apps.analytics.filters import report_filters
from tests.analytics.test_metrics import play
from tests.analytics.test_metrics import week as metrics_week  # noqa: F401  (the scenario's fixture)
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

RANGE = {"from": "2026-11-02", "to": "2026-11-08"}
COUNTED_BY = {
    "opened": "opened",
    "reopened": "reopened",
    "closed": "closed",
    "contained": "contained",
    "first_responses": "first_response",
    "assigned_responses": "assigned_response",
    "csat_count": "csat",
    "bot_conversations": "bot",
    "handovers": "handover",
    "repeat_contacts": "repeat_contact",
}


def drilled(client, **params) -> int:
    response = client.get("/analytics/conversations/", {**RANGE, **params})
    assert response.status_code == 200
    return response.context["page"].paginator.count


@pytest.fixture
def played(request):
    week = request.getfixturevalue("metrics_week")
    play(week)
    return week


def test_each_count_equals_the_cycles_its_link_lists(played):
    workspace, supervisor, ann, bob, *_ = played
    client = client_for(supervisor.user)
    for agent in (None, ann.pk, bob.pk):
        params = {"agent": agent} if agent else {}
        summary = selectors.report_summary(report_filters(workspace=workspace, query={**RANGE, **params}))
        assert summary["opened"] > 0 or agent
        for number, metric in COUNTED_BY.items():
            assert summary[number] == drilled(client, metric=metric, **params), (number, agent)
        for bucket, count in enumerate(summary["first_response_buckets"]):
            assert count == drilled(client, metric="first_response", bucket=bucket, **params), (bucket, agent)
        for bucket, count in enumerate(summary["resolution_buckets"]):
            assert count == drilled(client, metric="resolution", bucket=bucket, **params), (bucket, agent)
        for score, count in enumerate(summary["csat_distribution"], start=1):
            assert count == drilled(client, metric="csat", score=score, **params)


def test_heatmap_cells_drill_to_the_cycles_opened_then(played):
    workspace, supervisor, *_ = played
    client = client_for(supervisor.user)
    heat = selectors.hour_weekday(report_filters(workspace=workspace, query=RANGE))
    cells = [(day, hour, n) for day, row in enumerate(heat) for hour, n in enumerate(row) if n]
    assert cells  # Hong Kong local hours: the first opens at 23:50 on Monday
    assert (0, 23) in {(day, hour) for day, hour, _n in cells}
    for day, hour, count in cells:
        assert drilled(client, metric="started", weekday=day + 1, hour=hour) == count


def test_service_level_split_adds_up(played):
    workspace, supervisor, *_ = played
    client = client_for(supervisor.user)
    for row in selectors.service_level(report_filters(workspace=workspace, query=RANGE)):
        assert drilled(client, metric="service_level", channel=row["channel_id"], met=1) == row["within"]
        assert drilled(client, metric="service_level", channel=row["channel_id"], met=0) == row["missed"]
