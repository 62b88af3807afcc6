"""The management commands an operator runs: API tokens, the demo company, the schedules."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from apps.broadcasts.models import Broadcast, BroadcastSettings, Campaign, Segment
from apps.contacts.models import Contact, ContactIdentity, Order
from apps.workflows.models import BotSettings, FaqEntry, Step, Workflow, WorkflowVersion
from apps.workspaces.models import (
    AgentStatus,
    ApiToken,
    Membership,
    Shift,
    ShiftException,
    Team,
    User,
    Workspace,
)
from tests.conftest import token_client

pytestmark = pytest.mark.django_db

DEMO_MODELS = (User, Workspace, Membership, Team, Shift, ShiftException)
DEMO_BOT_MODELS = (Workflow, Step, WorkflowVersion, FaqEntry, BotSettings, Contact, ContactIdentity, Order)
DEMO_MARKETING_MODELS = (BroadcastSettings, Segment, Campaign, Broadcast, PeriodicTask)


def _run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


# create_api_token -----------------------------------------------------------------------------


def test_create_api_token_prints_only_the_token(tenants):
    printed = _run("create_api_token", workspace="alpha", name="order system")

    lines = printed.splitlines()
    assert len(lines) == 1
    raw = lines[0]
    assert printed == raw + "\n"
    assert raw.startswith(ApiToken.PREFIX) and " " not in raw
    token = ApiToken.objects.get(token_hash=ApiToken.hash(raw))
    assert (token.workspace, token.name) == (tenants.a, "order system")


def test_token_from_the_command_authenticates_for_its_workspace(tenants):
    raw = _run("create_api_token", workspace="alpha", name="order system").strip()

    response = token_client(raw).get("/api/v1/teams/")

    assert response.status_code == 200
    assert [team["name"] for team in response.json()["results"]] == ["Orders"]


def test_create_api_token_for_unknown_workspace_names_the_known_slugs(tenants):
    with pytest.raises(CommandError) as caught:
        _run("create_api_token", workspace="gamma", name="order system")

    message = str(caught.value)
    assert "'gamma'" in message
    assert "alpha" in message and "beta" in message
    assert ApiToken.objects.count() == 2  # only the fixture's


def test_create_api_token_refuses_a_blank_name(tenants):
    with pytest.raises(CommandError):
        _run("create_api_token", workspace="alpha", name="   ")


# load_demo ------------------------------------------------------------------------------------


def _counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count() for model in (*DEMO_MODELS, *DEMO_BOT_MODELS, *DEMO_MARKETING_MODELS)
    }


def test_load_demo_twice_creates_the_demo_company_once():
    _run("load_demo", quiet_logins=True)
    first = _counts()

    _run("load_demo", quiet_logins=True)

    assert _counts() == first
    assert set(Workspace.objects.values_list("slug", flat=True)) == {
        "support",
        "operations",
        "electronics",
        "marketplace",
        "sandbox",
    }
    assert first["User"] == 18
    assert first["Team"] == 10
    assert first["Workflow"] == 5  # the four journeys and the grocery survey
    assert first["Order"] == 10  # Amira's two, Polka's two, and one each for the six marketing customers
    assert (first["Segment"], first["Campaign"], first["Broadcast"]) == (3, 3, 1)


def test_the_demo_has_a_we_miss_you_campaign_at_11_cairo_a_back_in_stock_flow_and_a_draft_promo():
    _run("load_demo", quiet_logins=True)

    support = Workspace.objects.get(slug="support")
    daily = Campaign.objects.get(workspace=support, name="We miss you")
    task = daily.periodic_task
    assert (task.task, task.enabled, task.args) == ("broadcasts.run_campaign", True, f"[{daily.pk}]")
    assert (task.crontab.minute, task.crontab.hour, str(task.crontab.timezone)) == ("0", "11", "Africa/Cairo")
    restock = Campaign.objects.get(workspace=support, kind="back_in_stock")
    assert restock.periodic_task is None and restock.enabled
    waiting = Contact.objects.filter(workspace=support, tags__name="waiting:DATES-1KG")
    assert waiting.count() == 4
    promo = Broadcast.objects.get(workspace=support, name="Weekend fruit promo")
    assert (promo.state, promo.segment.name, promo.template.name) == ("draft", "Lapsed customers", "weekly_promo")
    opted_in = Contact.objects.filter(workspace=support, marketing_consent__whatsapp__opted_in=True)
    assert opted_in.count() == 5


def test_the_demo_agents_are_online_so_the_bots_can_route_to_them():
    _run("load_demo", quiet_logins=True)

    online = AgentStatus.objects.filter(status="online", membership__workspace__slug="marketplace")
    assert sorted(online.values_list("membership__user__username", flat=True)) == ["dmitry", "elena", "sergey"]
    assert not online.filter(last_seen_at__isnull=False).exists()  # nothing for the presence sweep to expire


def test_demo_user_sara_signs_in_with_the_demo_password():
    _run("load_demo", quiet_logins=True)
    client = Client()

    response = client.post("/login/", {"username": "sara", "password": "parley-demo"})

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").context["user"].username == "sara"


def test_load_demo_prints_the_logins():
    printed = _run("load_demo")

    assert "parley-demo" in printed
    assert "sara" in printed and "supervisor in Customer support" in printed


def test_load_demo_keeps_a_changed_password_on_the_second_run():
    _run("load_demo", quiet_logins=True)
    sara = User.objects.get(username="sara")
    sara.set_password("saras-own-password")
    sara.save(update_fields=["password"])

    _run("load_demo", quiet_logins=True)

    sara.refresh_from_db()
    assert sara.check_password("saras-own-password")


# setup_schedules ------------------------------------------------------------------------------


def test_setup_schedules_creates_the_presence_sweep_once():
    _run("setup_schedules")
    _run("setup_schedules")

    task = PeriodicTask.objects.get(name="Mark absent agents offline")
    assert task.task == "workspaces.sweep_absent_agents"
    assert task.enabled is True
    assert (task.interval.every, task.interval.period) == (60, IntervalSchedule.SECONDS)
    assert IntervalSchedule.objects.filter(every=60, period=IntervalSchedule.SECONDS).count() == 1


def test_setup_schedules_re_enables_a_disabled_task():
    _run("setup_schedules")
    PeriodicTask.objects.filter(name="Mark absent agents offline").update(enabled=False)

    _run("setup_schedules")

    assert PeriodicTask.objects.get(name="Mark absent agents offline").enabled is True


def test_every_scheduled_task_is_one_a_worker_knows():
    from config.celery import app

    app.loader.import_default_modules()  # what a worker does at start: autodiscovers tasks.py
    _run("setup_schedules")

    for task in PeriodicTask.objects.exclude(task="celery.backend_cleanup"):
        assert task.task in app.tasks
