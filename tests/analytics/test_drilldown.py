"""The conversations behind a number: /analytics/conversations/?metric=<name>&<filters> lists
exactly the cycles that number counts, each opening its conversation in the inbox."""

import pytest

from tests.analytics.test_dashboard import WEEK, build_week
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def week(tenants):
    return build_week(tenants)


def listed(week, **params) -> set[str]:
    response = client_for(week.supervisor).get("/analytics/conversations/", {**WEEK, **params})
    assert response.status_code == 200, response.content[:500]
    names = {cycle.pk: name for name, cycle in week.cycles.items()}
    return {names.get(cycle.pk, f"other {cycle.pk}") for cycle in response.context["page"]}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"metric": "opened"}, {"c1", "c2", "c3", "c4"}),
        ({"metric": "started"}, {"c1", "c2", "c3", "c4", "c5"}),
        ({"metric": "reopened"}, {"c5"}),
        ({"metric": "closed"}, {"c1", "c2", "c4"}),
        ({"metric": "contained"}, {"c4"}),
        ({"metric": "first_response"}, {"c1", "c2", "c3", "c5"}),
        ({"metric": "first_response", "bucket": "1"}, {"c2", "c5"}),
        ({"metric": "first_response", "bucket": "5"}, {"c3"}),
        ({"metric": "resolution", "bucket": "6"}, {"c1"}),
        ({"metric": "resolution", "bucket": "3"}, {"c4"}),
        ({"metric": "csat"}, {"c1", "c2"}),
        ({"metric": "csat", "score": "2"}, {"c2"}),
        ({"metric": "cdsat"}, {"c2"}),
        ({"metric": "repeat_contact"}, {"c1", "c2"}),
        ({"metric": "handover"}, {"c5"}),
        ({"metric": "bot"}, {"c4", "c5"}),
        ({"metric": "queued"}, {"c5"}),
        ({"metric": "opened", "weekday": "1", "hour": "9"}, {"c1"}),
        ({"metric": "started", "weekday": "4"}, {"c5"}),
        ({"metric": "opened", "weekday": "4"}, set()),
        ({"metric": "started", "category": "refund"}, {"c2", "c5"}),
        ({"metric": "opened", "from": "2026-11-03", "to": "2026-11-03"}, {"c3"}),
    ],
)
def test_drill_down_lists_exactly_the_cycles_behind_the_number(week, params, expected):
    assert listed(week, **params) == expected


def test_agent_numbers_drill_to_what_is_filed_under_them(week):
    assert listed(week, metric="closed", agent=week.bob.pk) == {"c2"}
    assert listed(week, metric="first_response", agent=week.ann.pk) == {"c1", "c3"}
    assert listed(week, metric="assigned", agent=week.bob.pk) == {"c2", "c5"}
    assert listed(week, metric="csat", agent=week.ann.pk) == {"c1"}


def test_service_level_drills_to_met_and_missed_per_channel(week):
    assert listed(week, metric="service_level", channel=week.chat.pk, met=1) == {"c1"}
    assert listed(week, metric="service_level", channel=week.chat.pk, met=0) == {"c2", "c5"}
    assert listed(week, metric="service_level", channel=week.email.pk, met=1) == {"c3"}


def test_rows_open_the_conversation_in_the_inbox_with_times_and_durations(week):
    response = client_for(week.supervisor).get("/analytics/conversations/", {**WEEK, "metric": "closed"})
    content = response.content.decode()
    c1 = week.cycles["c1"]
    assert f'href="/inbox/?c={c1.conversation_id}"' in content
    assert "1 h" in content and "20 s" in content  # c1's resolution and first response
    assert "2 Nov 09:00" in content
    assert "reopened" in listed_page(week, metric="reopened")


def listed_page(week, **params) -> str:
    return client_for(week.supervisor).get("/analytics/conversations/", {**WEEK, **params}).content.decode()


def test_the_list_is_paginated(week, settings):
    from apps.analytics import views

    original, views.PAGE_SIZE = views.PAGE_SIZE, 2
    try:
        client = client_for(week.supervisor)
        first = client.get("/analytics/conversations/", {**WEEK, "metric": "opened"})
        second = client.get("/analytics/conversations/", {**WEEK, "metric": "opened", "page": 3})
    finally:
        views.PAGE_SIZE = original
    assert len(first.context["page"]) == 2 and first.context["page"].paginator.count == 4
    assert len(second.context["page"]) == 2  # past the last page: the last page
    assert "page=2" in first.content.decode()


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"metric": "everything"},
        {"metric": "first_response", "bucket": "9"},
        {"metric": "csat", "score": "six"},
        {"metric": "opened", "hour": "24"},
        {"metric": "opened", "team": "0"},
        {"metric": "opened", "to": "9999-12-31"},
    ],
)
def test_bad_drill_down_parameters_are_400(week, params):
    response = client_for(week.supervisor).get("/analytics/conversations/", params)
    assert response.status_code == 400
    assert b"report-error" in response.content
