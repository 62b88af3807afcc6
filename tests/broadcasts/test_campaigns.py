"""Campaigns: the beat schedule kept in step with the campaign (crontab in the workspace's time
zone), a run's audience ("we miss you": the segment, no purchase for 30 days, no broadcast for
14), and back in stock end to end: customers tagged `waiting:SKU1`, the order system posts the
stock events through the API, the customers get the template through the simulator once and
lose the tag."""

import time
from datetime import datetime, timedelta

import httpx
import pytest
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from apps.broadcasts.campaigns import (
    RUN_CAMPAIGN_TASK,
    back_in_stock_on_restock,
    campaign_audience_definition,
    campaign_delete,
    campaign_run,
    campaign_schedule_sync,
    campaigns_set_enabled,
    product_variables,
    workspace_campaigns_reschedule,
)
from apps.broadcasts.models import Broadcast, BroadcastSettings, Campaign, Recipient, Segment
from apps.broadcasts.segments import segment_contacts
from apps.connectors.models import MessageTemplate
from apps.contacts.models import Contact, Order, StockEvent, Tag
from apps.contacts.services import contact_index, stock_event_record
from apps.workspaces import services as workspace_services
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_workspace


def make_template(channel, *, name="we_miss_you", body="Hi {{1}}, enjoy {{2}} off with code {{3}}."):
    return MessageTemplate.objects.create(
        workspace=channel.workspace, channel=channel, name=name, body=body, category="marketing"
    )


def make_contact(workspace, *, name, phone, opted_in=True, tags=(), last_purchase_days=None, **fields) -> Contact:
    contact = Contact(workspace=workspace, name=name, phone=phone, **fields)
    if opted_in:
        contact.marketing_consent = {"whatsapp": {"opted_in": True, "at": "2024-01-01T00:00:00+00:00"}}
    if last_purchase_days is not None:
        contact.last_purchase_at = timezone.now() - timedelta(days=last_purchase_days)
    contact_index(contact)
    contact.save()
    for tag in tags:
        contact.tags.add(Tag.objects.get_or_create(workspace=workspace, name=tag)[0])
    return contact


def make_campaign(channel, template, **fields) -> Campaign:
    fields.setdefault("name", "We miss you")
    fields.setdefault("kind", Campaign.Kind.WE_MISS_YOU)
    fields.setdefault("variables", [{"field": "contact.first_name"}, {"value": "10%"}, {"value": "NILE10"}])
    return Campaign.objects.create(workspace=channel.workspace, channel=channel, template=template, **fields)


def no_quiet_hours(workspace) -> None:
    """The tests run at any hour: quiet hours would skip everyone at night."""
    BroadcastSettings.objects.update_or_create(
        workspace=workspace, defaults={"quiet_from": datetime.min.time(), "quiet_until": datetime.min.time()}
    )


@pytest.fixture
def cairo(db):
    return make_workspace(name="Nile Basket", slug="nile", timezone="Africa/Cairo")


@pytest.fixture
def channel(cairo):
    return make_whatsapp_channel(cairo)


# The schedule ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_saving_a_campaign_schedules_it_daily_at_11_in_the_workspace_time_zone(channel):
    campaign = make_campaign(channel, make_template(channel), minute="0", hour="11")

    campaign_schedule_sync(campaign=campaign)

    task = PeriodicTask.objects.get(pk=campaign.periodic_task_id)
    assert task.task == RUN_CAMPAIGN_TASK
    assert task.args == f"[{campaign.pk}]"
    assert task.enabled is True
    crontab = task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_week) == ("0", "11", "*")
    assert str(crontab.timezone) == "Africa/Cairo"
    assert str(crontab.schedule.tz) == "Africa/Cairo"  # what beat computes the next 11:00 in


@pytest.mark.django_db
def test_changing_the_schedule_moves_the_same_task_and_disabling_pauses_it(channel):
    campaign = make_campaign(channel, make_template(channel))
    campaign_schedule_sync(campaign=campaign)
    first = campaign.periodic_task_id

    campaign.hour, campaign.day_of_week = "18", "thu"
    campaign.save()
    campaign_schedule_sync(campaign=campaign)
    campaigns_set_enabled(campaigns=Campaign.objects.filter(pk=campaign.pk), enabled=False)

    campaign.refresh_from_db()
    task = PeriodicTask.objects.get(pk=campaign.periodic_task_id)
    assert campaign.periodic_task_id == first
    assert (task.crontab.hour, task.crontab.day_of_week, task.enabled) == ("18", "thu", False)
    assert PeriodicTask.objects.filter(task=RUN_CAMPAIGN_TASK).count() == 1


@pytest.mark.django_db
def test_a_back_in_stock_campaign_has_no_schedule_and_deleting_a_campaign_removes_its_task(channel):
    template = make_template(channel)
    restock = make_campaign(channel, template, name="Back", kind=Campaign.Kind.BACK_IN_STOCK)
    daily = make_campaign(channel, template)
    campaign_schedule_sync(campaign=restock)
    campaign_schedule_sync(campaign=daily)

    campaign_delete(campaign=daily)

    restock.refresh_from_db()
    assert restock.periodic_task_id is None
    assert not PeriodicTask.objects.filter(task=RUN_CAMPAIGN_TASK).exists()


@pytest.mark.django_db
def test_the_crontab_follows_the_workspace_zone_not_the_server(channel):
    other = make_workspace(slug="hk", timezone="Asia/Hong_Kong")
    hk_channel = make_whatsapp_channel(other)
    cairo_campaign = make_campaign(channel, make_template(channel))
    hk_campaign = make_campaign(hk_channel, make_template(hk_channel))

    campaign_schedule_sync(campaign=cairo_campaign)
    campaign_schedule_sync(campaign=hk_campaign)

    zones = sorted(str(c.timezone) for c in CrontabSchedule.objects.filter(periodictask__task=RUN_CAMPAIGN_TASK))
    assert zones == ["Africa/Cairo", "Asia/Hong_Kong"]


@pytest.mark.django_db
def test_a_workspace_moving_time_zone_moves_its_campaigns(channel):
    campaign = make_campaign(channel, make_template(channel))
    campaign_schedule_sync(campaign=campaign)
    channel.workspace.timezone = "Europe/Moscow"
    channel.workspace.save(update_fields=["timezone"])

    moved = workspace_campaigns_reschedule(workspace_id=channel.workspace_id)

    assert moved == 1
    task = PeriodicTask.objects.get(pk=campaign.periodic_task_id)
    assert (task.crontab.hour, str(task.crontab.timezone)) == ("11", "Europe/Moscow")


# Runs -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_we_miss_you_sends_to_the_segment_without_a_purchase_for_30_days_nor_a_broadcast_for_14(channel):
    cairo = channel.workspace
    segment = Segment.objects.create(
        workspace=cairo,
        name="Cairo",
        definition={"match": "all", "conditions": [{"field": "country", "op": "is", "value": "EG"}]},
    )
    lapsed = make_contact(cairo, name="Youssef Adel", phone="+201002000001", country="EG", last_purchase_days=45)
    recent = make_contact(cairo, name="Hana Mostafa", phone="+201002000004", country="EG", last_purchase_days=10)
    abroad = make_contact(cairo, name="Lina Haddad", phone="+9613000001", country="LB", last_purchase_days=60)
    messaged = make_contact(cairo, name="Omar Said", phone="+201002000003", country="EG", last_purchase_days=35)
    earlier = Broadcast.objects.create(
        workspace=cairo, name="Earlier", channel=channel, template=make_template(channel, name="older")
    )
    Recipient.objects.create(
        workspace=cairo,
        broadcast=earlier,
        contact=messaged,
        dedupe_key="x",
        state="sent",
        sent_at=timezone.now() - timedelta(days=3),
    )
    campaign = make_campaign(channel, make_template(channel), segment=segment, settings={"inactive_days": 30})

    broadcast = campaign_run(campaign_id=campaign.pk)

    assert broadcast.campaign == campaign
    assert broadcast.state in (Broadcast.State.RUNNING, Broadcast.State.COMPLETED)
    definition = Broadcast.objects.get(pk=broadcast.pk).audience_definition
    assert definition == campaign_audience_definition(campaign=campaign)
    chosen = set(segment_contacts(workspace_id=cairo.pk, definition=definition))
    assert chosen == {lapsed}
    assert {recent, abroad, messaged}.isdisjoint(chosen)
    campaign.refresh_from_db()
    assert campaign.last_run_at is not None


@pytest.mark.django_db
def test_a_disabled_campaign_or_a_second_run_within_the_minute_makes_no_broadcast(channel):
    campaign = make_campaign(channel, make_template(channel))
    now = timezone.now()

    first = campaign_run(campaign_id=campaign.pk, now=now)
    again = campaign_run(campaign_id=campaign.pk, now=now + timedelta(seconds=20))
    Campaign.objects.filter(pk=campaign.pk).update(enabled=False)
    disabled = campaign_run(campaign_id=campaign.pk, now=now + timedelta(days=1))

    assert first is not None
    assert again is None and disabled is None
    assert Broadcast.objects.filter(campaign=campaign).count() == 1


@pytest.mark.django_db
def test_a_promotion_sends_to_its_segment_only(channel):
    cairo = channel.workspace
    segment = Segment.objects.create(
        workspace=cairo,
        name="Arabic speakers",
        definition={"match": "all", "conditions": [{"field": "language", "op": "is", "value": "ar"}]},
    )
    campaign = make_campaign(
        channel,
        make_template(channel, name="weekly_promo", body="Hi {{1}}: {{2}}"),
        name="Thursday promotion",
        kind=Campaign.Kind.PROMO,
        segment=segment,
        variables=[{"field": "contact.first_name"}, {"value": "20% off"}],
    )

    broadcast = campaign_run(campaign_id=campaign.pk)

    assert broadcast.segment == segment
    assert Broadcast.objects.get(pk=broadcast.pk).audience_definition == {
        "match": "all",
        "conditions": [segment.definition],
    }


def test_back_in_stock_variables_name_the_product():
    variables = [{"field": "contact.first_name"}, {"field": "product.name"}, {"field": "product.sku"}]

    assert product_variables(variables, sku="DATES-1KG", name="Medjool dates 1 kg") == [
        {"field": "contact.first_name"},
        {"value": "Medjool dates 1 kg"},
        {"value": "DATES-1KG"},
    ]


@pytest.mark.django_db
def test_a_restock_nobody_waits_for_makes_no_broadcast_and_a_stock_event_that_is_no_restock_nothing(channel):
    make_campaign(channel, make_template(channel, name="back_in_stock", body="{{1}}: {{2}}"), kind="back_in_stock")
    first = stock_event_record(workspace_id=channel.workspace_id, sku="SKU1", in_stock=True)
    out = stock_event_record(workspace_id=channel.workspace_id, sku="SKU1", in_stock=False)
    back = stock_event_record(workspace_id=channel.workspace_id, sku="SKU1", in_stock=True)

    assert back_in_stock_on_restock(stock_event=first) == []
    assert back_in_stock_on_restock(stock_event=out) == []
    assert back_in_stock_on_restock(stock_event=back) == []
    assert Tag.objects.filter(workspace=channel.workspace, name="waiting:SKU1").exists()
    assert not Broadcast.objects.exists()


# Back in stock, end to end ---------------------------------------------------------------------


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_back_in_stock_from_the_stock_api_messages_the_waiting_customers_once_and_untags_them(
    live_server_process, celery_worker_process, simulator
):
    workspace = make_workspace(name="Nile Basket", slug="nile-bis", timezone="Africa/Cairo")
    no_quiet_hours(workspace)
    channel = make_whatsapp_channel(workspace, base_url=simulator.url)
    simulator.register(channel, webhook_url=f"{live_server_process.url}/webhooks/{channel.uuid}/")
    template = make_template(channel, name="back_in_stock", body="Good news, {{1}}! {{2}} is back in stock.")
    make_campaign(
        channel,
        template,
        name="Back in stock",
        kind=Campaign.Kind.BACK_IN_STOCK,
        variables=[{"field": "contact.first_name"}, {"field": "product.name"}],
    )
    Order.objects.create(
        workspace=workspace, external_id="NB-1", items=[{"sku": "SKU1", "name": "Medjool dates 1 kg", "qty": 1}]
    )
    amira = make_contact(workspace, name="Amira Hassan", phone="+201001230001", tags=["waiting:SKU1"])
    omar = make_contact(workspace, name="Omar Said", phone="+201001230002", tags=["waiting:SKU1", "vip"])
    make_contact(workspace, name="Salma Ibrahim", phone="+201001230003", tags=["vip"])  # not waiting
    _, token = workspace_services.api_token_create(workspace=workspace, name="shop")
    api = httpx.Client(base_url=f"{live_server_process.url}/api/v1", headers={"Authorization": f"Bearer {token}"})

    def stock(in_stock: bool):
        response = api.post("/stock-events/", json={"sku": "SKU1", "in_stock": in_stock, "quantity": 40 * in_stock})
        assert response.status_code == 201, response.text
        return response.json()

    stock(False)
    assert stock(True)["restocked"] is True

    _wait_for(lambda: Broadcast.objects.filter(campaign__kind="back_in_stock").exists(), 20, "the broadcast")
    broadcast = Broadcast.objects.get()
    _wait_for(lambda: len(simulator.get("/_simulator/outbox", phone_number_id="1000001")) == 2, 60, "two sends")
    outbox = simulator.get("/_simulator/outbox", phone_number_id="1000001")
    assert sorted(item["body"]["to"] for item in outbox) == ["201001230001", "201001230002"]
    parameters = [item["body"]["template"]["components"][0]["parameters"] for item in outbox]
    assert sorted(p[0]["text"] for p in parameters) == ["Amira", "Omar"]
    assert {p[1]["text"] for p in parameters} == {"Medjool dates 1 kg"}

    def untagged():
        return not Contact.tags.through.objects.filter(tag__name="waiting:SKU1").exists()

    _wait_for(untagged, 60, "the waiting tag removed")
    broadcast.refresh_from_db()
    assert broadcast.state == Broadcast.State.COMPLETED
    assert set(amira.tags.values_list("name", flat=True)) == set()
    assert set(omar.tags.values_list("name", flat=True)) == {"vip"}

    # Sold out and back again: nobody waits any more, nobody is messaged again.
    stock(False)
    stock(True)
    time.sleep(3)
    assert Broadcast.objects.count() == 1
    assert len(simulator.get("/_simulator/outbox", phone_number_id="1000001")) == 2
    assert StockEvent.objects.filter(workspace=workspace, restocked=True).count() == 2
