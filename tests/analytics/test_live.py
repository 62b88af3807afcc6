"""The live panel: conversations waiting per team, the longest wait, and agents online or away
with their load, as JSON the dashboard refetches when the websocket reports a change."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.conversations.models import Conversation
from apps.workspaces import services
from apps.workspaces.models import Membership
from tests.analytics.test_dashboard import make_channel, make_conversation
from tests.conftest import client_for
from tests.factories import make_member, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def floor(tenants):
    workspace = tenants.a
    chat = make_channel(workspace)
    now = timezone.now()
    queued = make_conversation(workspace, chat)
    Conversation.objects.filter(pk=queued.pk).update(team=tenants.team_a, queued_at=now - timedelta(minutes=5))
    unrouted = make_conversation(workspace, chat)
    Conversation.objects.filter(pk=unrouted.pk).update(waiting_since=now - timedelta(minutes=2))
    teammate = Membership.objects.get(workspace=workspace, user=tenants.teammate)
    mine = make_conversation(workspace, chat)
    Conversation.objects.filter(pk=mine.pk).update(assignee=teammate)
    done = make_conversation(workspace, chat)
    Conversation.objects.filter(pk=done.pk).update(status="closed", queued_at=now - timedelta(hours=3))
    services.agent_status_set(membership=teammate, status="online")
    away = make_member(workspace, user=make_user(first_name="Zoe"))
    services.agent_status_set(membership=away, status="away")
    other = make_conversation(tenants.b, make_channel(tenants.b))  # B's queue is not A's
    Conversation.objects.filter(pk=other.pk).update(queued_at=now - timedelta(hours=1))
    return teammate, away


def test_live_panel_counts_waiting_per_team_and_agents_with_their_load(tenants, floor):
    teammate, away = floor
    data = client_for(tenants.supervisor).get("/analytics/live/").json()
    assert data["waiting"] == 2
    teams = {team["name"]: team for team in data["teams"]}
    assert (teams["Orders"]["waiting"], teams["Orders"]["queued"]) == (1, 1)
    assert 299 <= teams["Orders"]["longest_wait_seconds"] <= 310
    assert teams["No team"]["waiting"] == 1 and 119 <= teams["No team"]["longest_wait_seconds"] <= 130
    assert 299 <= data["longest_wait_seconds"] <= 310
    agents = {agent["id"]: agent for agent in data["agents"]}
    assert (agents[teammate.pk]["status"], agents[teammate.pk]["load"]) == ("online", 1)
    assert (agents[away.pk]["status"], agents[away.pk]["load"]) == ("away", 0)
    assert (data["online"], data["away"]) == (1, 1)


def test_live_panel_is_on_the_dashboard_and_follows_the_websocket(tenants, floor):
    content = client_for(tenants.supervisor).get("/analytics/").content.decode()
    assert 'id="live-panel"' in content and 'data-url="/analytics/live/"' in content
    assert f'data-workspace="{tenants.a.slug}"' in content
    assert "analytics/dashboard.js" in content


def test_live_panel_of_b_shows_only_b(tenants, floor):
    data = client_for(tenants.outsider).get("/analytics/live/").json()
    assert data["waiting"] == 1 and data["teams"][0]["name"] == "No team"
    assert data["agents"] == []


def test_live_panel_needs_a_supervisor(tenants, floor):
    assert client_for(tenants.teammate).get("/analytics/live/").status_code == 403
