"""`load_demo --history`: past weeks of closed conversations so a demo dashboard has pictures."""

from datetime import timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone

from apps.analytics.demo import history_generate
from apps.analytics.models import Cycle, Daily
from apps.analytics.services import analytics_rebuild
from apps.connectors.models import Channel
from apps.conversations.models import Message
from apps.workspaces.models import Role
from tests.factories import make_member, make_team, make_workspace

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    workspace = make_workspace(slug="demo-shop", timezone="Africa/Cairo")
    agents = [make_member(workspace, Role.AGENT) for _ in range(3)]
    make_team(workspace, name="Orders", members=agents)
    Channel.objects.create(workspace=workspace, kind="webchat", name="Shop chat")
    return workspace


def test_history_is_past_closed_conversations_whose_numbers_a_rebuild_confirms(shop):
    made = history_generate(workspace=shop, days=5, per_day=6, months=1)

    assert made > 20 and Cycle.objects.filter(workspace=shop).count() == made
    assert not Cycle.objects.filter(workspace=shop, closed_at__isnull=True).exists()
    assert not Message.objects.filter(workspace=shop, state__in=("queued", "sending")).exists()  # nothing leaves
    assert not Message.objects.filter(workspace=shop, created_at__gt=timezone.now() - timedelta(hours=1)).exists()
    totals = Daily.objects.filter(workspace=shop).aggregate(opened=Sum("opened"), answered=Sum("first_responses"))
    assert totals["opened"] == made and totals["answered"] > 0

    def rollups():
        return sorted(
            map(str, Daily.objects.filter(workspace=shop).values_list("day", "agent_id", "opened", "closed"))
        )

    before = rollups()
    analytics_rebuild(workspace=shop)
    assert rollups() == before


def test_history_is_made_once(shop):
    assert history_generate(workspace=shop, days=2, per_day=2, months=0) > 0
    assert history_generate(workspace=shop, days=2, per_day=2, months=0) == 0
