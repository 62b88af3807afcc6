"""The supervisor dashboard (/analytics/): who may see it, and each panel's numbers for a
hand-built week of cycles and rollups whose answers are known.

The rows are written directly, as the folder (apps/analytics/services.py) would have written
them for this week, so that every panel is checked against numbers worked out by hand:

    Monday 2 Nov 2026 (UTC workspace)        cycle  channel  who        first response  closed after
    09:00 Ann's order question                c1     chat     Ann        20 s            1 h (CSAT 5)
    11:00 a refund, Bob                        c2     chat     Bob        90 s            10 min (CSAT 2)
    Tue 08:00 the c1 customer by email         c3     email    Ann        50 min          open
    Wed 12:00 a bot answers and closes         c4     chat     (bot)      -               5 min, contained
    Thu 10:00 c2's customer again (reopened)   c5     chat     Bob        45 s            open, bot handed over
"""

import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest

from apps.analytics.models import (
    ARRAY_COUNTERS,
    SCALAR_COUNTERS,
    Cycle,
    Daily,
    DailyTotal,
    zeros_buckets,
    zeros_hours,
    zeros_scores,
)
from apps.analytics.services import cycles_came_back_mark
from apps.connectors.models import Channel
from apps.contacts.services import contact_resolve
from apps.conversations.models import Conversation
from tests.conftest import client_for
from tests.factories import make_member, make_user

pytestmark = pytest.mark.django_db

MONDAY = date(2026, 11, 2)
WEEK = {"from": "2026-11-02", "to": "2026-11-08"}
_ids = itertools.count(1)


def at(day_offset: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 2 + day_offset, hour, minute, tzinfo=UTC)


def make_channel(workspace, kind="webchat", name="Shop chat") -> Channel:
    return Channel.objects.create(workspace=workspace, kind=kind, name=name)


def make_conversation(workspace, channel, contact=None) -> Conversation:
    contact = contact or contact_resolve(channel=channel, external_id=f"c{next(_ids)}", name="Amira")
    return Conversation.objects.create(workspace=workspace, contact=contact, channel=channel)


def make_cycle(conversation, *, number=1, opened_at, **fields) -> Cycle:
    first_response = fields.get("first_response_seconds")
    if first_response is not None:
        fields.setdefault("first_message_at", opened_at)
        fields.setdefault("first_response_at", opened_at + timedelta(seconds=first_response))
    if fields.get("closed_at") is not None:
        fields.setdefault("resolution_seconds", int((fields["closed_at"] - opened_at).total_seconds()))
    if fields.get("csat") is not None:
        fields.setdefault("rated_at", fields.get("closed_at") or opened_at)  # rated as it closed
    cycle = Cycle.objects.create(
        workspace_id=conversation.workspace_id,
        conversation=conversation,
        number=number,
        contact_id=conversation.contact_id,
        channel_id=conversation.channel_id,
        source="inbound",
        opened_at=opened_at,
        **fields,
    )
    cycles_came_back_mark({(conversation.workspace_id, conversation.contact_id)})  # as the folder does
    return cycle


def make_daily(workspace, day, channel, *, agent=None, team=None, category="", language="en", **counters) -> Daily:
    arrays = {"first_response_buckets": zeros_buckets(), "resolution_buckets": zeros_buckets()}
    arrays |= {"csat_scores": zeros_scores(), "opened_by_hour": zeros_hours()}
    for name, array in arrays.items():
        for index, value in counters.pop(name, {}).items():
            array[index] = value
    row = Daily.objects.create(
        workspace=workspace,
        day=day,
        channel=channel,
        agent=agent,
        team=team,
        category=category,
        language=language,
        **arrays,
        **counters,
    )
    # The folder keeps the workspace's per-day totals beside the detailed rows; so does this.
    whole, _ = DailyTotal.objects.get_or_create(workspace=workspace, day=day)
    for name in SCALAR_COUNTERS:
        setattr(whole, name, getattr(whole, name) + getattr(row, name))
    for name in ARRAY_COUNTERS:
        setattr(whole, name, [a + b for a, b in zip(getattr(whole, name), getattr(row, name), strict=True)])
    whole.save()
    return row


@dataclass
class Week:
    workspace: object
    supervisor: object
    ann: object
    bob: object
    team: object
    chat: object
    email: object
    cycles: dict


@pytest.fixture
def week(tenants) -> Week:
    return build_week(tenants)


def build_week(tenants) -> Week:
    """The week above, in workspace A (Orders team: Ann, Bob), plus noise the reports must
    ignore: a cycle after the range and workspace B's own week."""
    workspace, team = tenants.a, tenants.team_a
    ann = make_member(workspace, user=make_user(first_name="Ann"))
    bob = make_member(workspace, user=make_user(first_name="Bob"))
    team.members.add(ann, bob)
    chat, email = make_channel(workspace), make_channel(workspace, kind="email", name="Support mail")
    first, second = make_conversation(workspace, chat), make_conversation(workspace, chat)
    by_mail = make_conversation(workspace, email, contact=first.contact)
    bot = make_conversation(workspace, chat)
    common = {"team": team, "language": "en"}
    c1 = make_cycle(
        first,
        opened_at=at(0, 9),
        first_response_seconds=20,
        closed_at=at(0, 10),
        responder=ann,
        closer=ann,
        closed_by="agent",
        assignee=ann,
        assignees=[ann.pk],
        first_assigned_at=at(0, 9),
        csat=5,
        csat_agent=ann,
        category="orders",
        messages_in=2,
        messages_out=2,
        handle_seconds=300,
        **common,
    )
    c2 = make_cycle(
        second,
        opened_at=at(0, 11),
        first_response_seconds=90,
        closed_at=at(0, 11, 10),
        responder=bob,
        closer=bob,
        closed_by="agent",
        assignee=bob,
        assignees=[bob.pk],
        first_assigned_at=at(0, 11),
        csat=2,
        csat_agent=bob,
        category="refund",
        handle_seconds=200,
        **common,
    )
    c3 = make_cycle(
        by_mail,
        opened_at=at(1, 8),
        first_response_seconds=3000,
        responder=ann,
        assignee=ann,
        assignees=[ann.pk],
        first_assigned_at=at(1, 8),
        category="orders",
        handle_seconds=100,
        **common,
    )
    c4 = make_cycle(bot, opened_at=at(2, 12), closed_at=at(2, 12, 5), closed_by="bot", bot=True, contained=True)
    c5 = make_cycle(
        second,
        number=2,
        opened_at=at(3, 10),
        first_response_seconds=45,
        responder=bob,
        assignee=bob,
        assignees=[bob.pk],
        first_assigned_at=at(3, 10),
        bot=True,
        handed_over=True,
        queue_seconds=120,
        category="refund",
        **common,
    )
    later = make_conversation(workspace, chat)
    make_cycle(later, opened_at=at(8, 9), first_response_seconds=5, responder=ann, assignee=ann)

    day = {"team": team, "language": "en"}
    make_daily(workspace, MONDAY, chat, agent=ann, category="orders", opened=1, opened_by_hour={9: 1}, closed=1,
               resolution_seconds=3600, resolution_buckets={6: 1}, first_responses=1, first_response_seconds=20,
               first_response_buckets={0: 1}, messages_in=2, messages_out=2, csat_count=1, csat_sum=5,
               csat_scores={4: 1}, assigned=1, handle_seconds=300, responses=2, response_seconds=40,
               **day)  # fmt: skip
    make_daily(workspace, MONDAY, chat, agent=bob, category="refund", opened=1, opened_by_hour={11: 1}, closed=1,
               resolution_seconds=600, resolution_buckets={4: 1}, first_responses=1, first_response_seconds=90,
               first_response_buckets={1: 1}, csat_count=1, csat_sum=2, csat_scores={1: 1}, assigned=1,
               messages_in=1, messages_out=1, handle_seconds=200, **day)  # fmt: skip
    make_daily(workspace, MONDAY + timedelta(days=1), email, agent=ann, category="orders", opened=1,
               opened_by_hour={8: 1}, first_responses=1, first_response_seconds=3000, first_response_buckets={5: 1},
               messages_in=1, messages_out=1, assigned=1, handle_seconds=100, **day)  # fmt: skip
    make_daily(workspace, MONDAY + timedelta(days=2), chat, opened=1, opened_by_hour={12: 1}, closed=1, contained=1,
               resolution_seconds=300, resolution_buckets={3: 1}, bot_conversations=1, messages_in=1,
               messages_bot=2, faq_answered=1, faq_accepted=1)  # fmt: skip
    make_daily(workspace, MONDAY + timedelta(days=3), chat, agent=bob, category="refund", reopened=1,
               opened_by_hour={10: 1}, first_responses=1, first_response_seconds=45, first_response_buckets={1: 1},
               bot_conversations=1, handovers=1, queued=1, queue_waits=1, queue_wait_seconds=120, assigned=1,
               messages_in=1, messages_out=1, **day)  # fmt: skip
    make_daily(workspace, MONDAY + timedelta(days=8), chat, agent=ann, opened=1, first_responses=1)

    other_chat = make_channel(tenants.b, name="Beta chat")
    make_cycle(make_conversation(tenants.b, other_chat), opened_at=at(0, 9), first_response_seconds=1)
    make_daily(tenants.b, MONDAY, other_chat, opened=7, closed=7, csat_count=1, csat_sum=1, csat_scores={0: 1})
    cycles = {"c1": c1, "c2": c2, "c3": c3, "c4": c4, "c5": c5}
    return Week(workspace, tenants.supervisor, ann, bob, team, chat, email, cycles)


def summary_of(week, **params):
    from apps.analytics.filters import report_filters
    from apps.analytics.selectors import report_summary

    return report_summary(report_filters(workspace=week.workspace, query={**WEEK, **params}))


# Who may see it -------------------------------------------------------------------------------


def test_supervisor_and_owner_see_the_dashboard(tenants, week):
    for user in (tenants.supervisor, tenants.owner):
        response = client_for(user).get("/analytics/", WEEK)
        assert response.status_code == 200
        assert b"Analytics" in response.content


def test_agent_gets_403(tenants, week):
    client = client_for(tenants.teammate)
    for path in ("/analytics/", "/analytics/conversations/?metric=opened", "/analytics/live/"):
        assert client.get(path).status_code == 403


def test_anonymous_is_sent_to_login(tenants):
    response = client_for(make_user()).get("/analytics/")  # signed in, but in no workspace
    assert response.status_code == 404
    from django.test import Client

    assert Client().get("/analytics/").status_code == 302


def test_member_of_workspace_b_never_sees_a(tenants, week):
    client = client_for(tenants.outsider)
    page = client.get("/analytics/", WEEK)
    assert page.status_code == 200
    assert page.context["summary"]["opened"] == 7  # B's own week, not A's
    assert client.get("/analytics/", {**WEEK, "team": tenants.team_a.pk}).status_code == 400
    assert client.get("/analytics/", {**WEEK, "channel": week.chat.pk}).status_code == 400
    assert client.post(f"/workspaces/{tenants.a.slug}/switch/").status_code == 404
    assert (
        client.get("/analytics/conversations/", {**WEEK, "metric": "opened", "agent": week.ann.pk}).status_code == 400
    )
    listed = client.get("/analytics/conversations/", {**WEEK, "metric": "opened"}).context["page"]
    assert {cycle.workspace_id for cycle in listed} == {tenants.b.pk}


def test_the_nav_links_supervisors_to_analytics_but_not_agents(tenants):
    assert b'href="/analytics/"' in client_for(tenants.supervisor).get("/").content
    assert b'href="/analytics/"' not in client_for(tenants.teammate).get("/").content


# The numbers ----------------------------------------------------------------------------------


def test_summary_counts_the_week(week):
    s = summary_of(week)
    assert (s["opened"], s["reopened"], s["closed"]) == (4, 1, 3)
    assert (s["messages_in"], s["messages_out"], s["messages_bot"]) == (6, 5, 2)
    assert s["first_responses"] == 4
    assert s["first_response_avg_seconds"] == 788.8  # (20 + 90 + 3000 + 45) / 4
    assert s["first_response_median_seconds"] == 67.5
    assert s["first_response_buckets"] == [1, 2, 0, 0, 0, 1, 0]
    assert s["resolution_avg_seconds"] == 1500.0
    assert s["resolution_median_seconds"] == 600.0
    assert s["resolution_buckets"] == [0, 0, 0, 1, 1, 0, 1]
    assert s["response_avg_seconds"] == 20.0
    assert s["handle_seconds"] == 600 and s["handle_avg_seconds"] == 200.0


def test_summary_service_level_per_channel(week):
    levels = {row["kind"]: row for row in summary_of(week)["service_level"]}
    assert (levels["webchat"]["answered"], levels["webchat"]["within"], levels["webchat"]["rate"]) == (3, 1, 0.3333)
    assert levels["webchat"]["target_seconds"] == 30
    assert (levels["email"]["answered"], levels["email"]["within"], levels["email"]["target_seconds"]) == (1, 1, 14400)
    assert summary_of(week)["service_level_rate"] == 0.5


def test_summary_csat_automation_repeat_and_queue(week):
    s = summary_of(week)
    assert (s["csat_count"], s["csat_avg"], s["cdsat"], s["csat_distribution"]) == (2, 3.5, 0.5, [0, 1, 0, 0, 1])
    assert (s["bot_conversations"], s["contained"], s["containment_rate"]) == (2, 1, 0.5)
    assert (s["handovers"], s["handover_rate"], s["faq_answered"], s["faq_accepted"]) == (1, 0.5, 1, 1)
    # c1's customer wrote again by email the next day; c2's reopened on Thursday; the bot's did not.
    assert (s["repeat_contact_closed"], s["repeat_contacts"], s["repeat_contact_rate"]) == (3, 2, 0.6667)
    assert (s["queued"], s["queue_wait_avg_seconds"]) == (1, 120.0)


def test_summary_is_plain_json(week):
    import json

    assert json.loads(json.dumps(summary_of(week)))["opened"] == 4


def test_filters_narrow_every_number(week):
    bob = summary_of(week, agent=week.bob.pk)
    assert (bob["opened"], bob["reopened"], bob["closed"], bob["first_responses"], bob["csat_avg"]) == (
        1,
        1,
        1,
        2,
        2.0,
    )
    assert bob["first_response_median_seconds"] == 67.5
    email = summary_of(week, channel=week.email.pk)
    assert (email["opened"], email["first_response_median_seconds"], email["closed"]) == (1, 3000.0, 0)
    refunds = summary_of(week, category="refund")
    assert (refunds["opened"], refunds["reopened"], refunds["resolution_median_seconds"]) == (1, 1, 600.0)
    monday = summary_of(week, **{"from": "2026-11-02", "to": "2026-11-02"})
    assert (monday["opened"], monday["closed"], monday["repeat_contacts"]) == (2, 2, 2)
    assert summary_of(week, language="fr")["opened"] == 0


def test_dashboard_panels(week):
    response = client_for(week.supervisor).get("/analytics/", WEEK)
    context = response.context
    assert [p["opened"] for p in context["trend"]] == [2, 1, 1, 0, 0, 0, 0]
    assert [p["reopened"] for p in context["trend"]] == [0, 0, 0, 1, 0, 0, 0]
    agents = {row["name"]: row for row in context["leaderboard"]}
    assert [row["name"] for row in context["leaderboard"]] == ["Ann", "Bob"]
    assert (agents["Ann"]["assigned"], agents["Ann"]["closed"], agents["Ann"]["messages_out"]) == (2, 1, 3)
    assert (agents["Ann"]["first_response_avg_seconds"], agents["Ann"]["first_response_median_seconds"]) == (
        1510.0,
        1510.0,
    )
    assert (agents["Ann"]["resolution_avg_seconds"], agents["Ann"]["handle_seconds"], agents["Ann"]["csat_avg"]) == (
        3600.0,
        400,
        5.0,
    )
    assert (agents["Bob"]["first_response_median_seconds"], agents["Bob"]["csat_avg"]) == (67.5, 2.0)
    csat = {title: rows for title, rows, _dimension in context["csat_tables"]}
    assert [(r["name"], r["avg"], r["cdsat"]) for r in csat["Per agent"]] == [("Ann", 5.0, 0.0), ("Bob", 2.0, 1.0)]
    assert [(r["name"], r["count"]) for r in csat["Per team"]] == [("Orders", 2)]
    assert context["automation"]["containment_rate"] == 0.5


def test_heatmap_and_long_term_trend(week):
    from apps.analytics import selectors
    from apps.analytics.filters import report_filters

    filters = report_filters(workspace=week.workspace, query=WEEK)
    heat = selectors.hour_weekday(filters)
    assert (heat[0][9], heat[0][11], heat[1][8], heat[2][12], heat[3][10]) == (1, 1, 1, 1, 1)
    assert sum(map(sum, heat)) == 5
    months = selectors.trend(selectors.last_twelve_months(filters), by="month")
    assert len(months) == 12 and months[0]["period"] == date(2025, 12, 1)
    assert months[-1]["opened"] == 4  # the range ends on 8 Nov: the day after is not counted
    weeks = selectors.trend(filters, by="week")
    assert [(w["period"], w["opened"], w["reopened"]) for w in weeks] == [(MONDAY, 4, 1)]


def test_load_needs_and_online_agents(week):
    from apps.analytics import selectors
    from apps.analytics.filters import report_filters
    from apps.analytics.models import AgentPresence

    week.team.average_handle_minutes = 60
    week.team.save(update_fields=["average_handle_minutes"])
    AgentPresence.objects.create(workspace=week.workspace, membership=week.ann, status="online", at=at(-1, 9))
    AgentPresence.objects.create(workspace=week.workspace, membership=week.ann, status="away", at=at(0, 10, 30))
    filters = report_filters(workspace=week.workspace, query=WEEK)
    load = selectors.load(filters)
    # online since Sunday (before the range), away on Monday at 10:30: Monday 00:00-10:30 only
    assert (load["online"][0][0], load["online"][0][9], load["online"][0][10], load["online"][0][11]) == (1, 1, 0.5, 0)
    assert load["online"][1][9] == 0.0
    capacity = load["capacity"]
    assert load["needed"][0][9] == round(1 * 1.0 / capacity, 2)  # one arrival x 1 h / capacity
    assert (load["queued"], load["queue_wait_avg_seconds"]) == (1, 120.0)


def test_dashboard_pictures_are_inline_svg_without_scripts(week):
    content = client_for(week.supervisor).get("/analytics/", WEEK).content.decode()
    assert content.count("<svg") >= 10
    assert "kozea.github.io" not in content and "<script>" not in content
    assert 'class="heatmap"' in content
    assert "/analytics/conversations/?from=2026-11-02&amp;to=2026-11-02&amp;metric=opened" in content


def test_every_headline_number_links_to_its_conversations(week):
    content = client_for(week.supervisor).get("/analytics/", WEEK).content.decode()
    for metric in ("opened", "closed", "first_response", "resolution", "csat", "contained", "repeat_contact"):
        assert f'data-metric="{metric}" href="/analytics/conversations/?from=2026-11-02&amp;to=2026-11-08' in content


@pytest.mark.parametrize(
    "params",
    [
        {"from": "yesterday"},
        {"from": "2026-11-09", "to": "2026-11-02"},
        {"team": "abc"},
        {"agent": "999999"},
        {"by": "fortnight"},
        {"from": "2020-01-01", "to": "2026-01-01"},
        {"to": "9999-12-31"},
        {"channel": "-1"},
        {"team": "²"},
    ],
)
def test_bad_filters_are_a_form_error_not_a_crash(week, params):
    response = client_for(week.supervisor).get("/analytics/", params)
    assert response.status_code == 400
    assert b"report-error" in response.content


def test_the_download_links_carry_the_pages_range_and_filters(week):
    content = client_for(week.supervisor).get("/analytics/", {**WEEK, "team": week.team.pk}).content.decode()
    expected = f"/api/v1/reports/export/?from=2026-11-02&amp;to=2026-11-08&amp;team={week.team.pk}&amp;format="
    assert f'{expected}csv"' in content and f'{expected}xlsx"' in content

    download = client_for(week.supervisor).get("/api/v1/reports/export/?from=2026-11-02&to=2026-11-08&format=csv")
    assert download.status_code == 200 and download["Content-Type"].startswith("text/csv")


def test_dashboard_query_count_is_bounded(week, django_assert_max_num_queries):
    client = client_for(week.supervisor)
    with django_assert_max_num_queries(45):
        assert client.get("/analytics/", {**WEEK, "team": week.team.pk}).status_code == 200


def test_empty_workspace_renders(tenants):
    response = client_for(tenants.outsider).get("/analytics/")
    assert response.status_code == 200
    assert response.context["summary"]["first_response_avg_seconds"] is None
