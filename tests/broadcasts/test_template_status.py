"""Broadcasts and their template's fate at the provider: one whose template is paused before it
starts pauses at once with the reason (no recipient is spent on a refusal); a pause by hand has
no reason. And the recipients' CSV export streams under ASGI (daphne) as under WSGI."""

import csv
import io

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from apps.broadcasts import services
from apps.broadcasts.models import Broadcast
from apps.connectors.models import MessageTemplate
from tests.broadcasts.test_admin import sent_broadcast, shop  # noqa: F401 (fixtures)
from tests.broadcasts.test_sending import (
    customers,
    make_template,
    no_quiet_hours,
    outbox,
    settle,
    states,
    tag_broadcast,
)
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_workspace


@pytest.fixture
def nile(db):
    workspace = make_workspace(name="Nile Basket", slug="nile", timezone="Africa/Cairo")
    no_quiet_hours(workspace)
    return workspace


@pytest.fixture
def number(nile, simulator):
    channel = make_whatsapp_channel(nile, base_url=simulator.url)
    simulator.register(channel)
    simulator.post("/_simulator/settings", {"auto_status": "none"})
    return channel


@pytest.mark.django_db
def test_a_broadcast_whose_template_the_provider_paused_pauses_as_it_starts(nile, number, simulator):
    from apps.contacts.models import Tag

    vip = Tag.objects.create(workspace=nile, name="vip")
    customers(nile, vip, 3)
    template = make_template(number)
    broadcast = services.broadcast_start(broadcast=tag_broadcast(number, template, vip))
    MessageTemplate.objects.filter(pk=template.pk).update(
        status="paused", rejected_reason="Paused by Meta (low quality) — FIRST_PAUSE."
    )

    broadcast = settle(broadcast)

    assert broadcast.state == Broadcast.State.PAUSED and broadcast.claimed_at is None
    assert broadcast.paused_reason == (
        "paused: the template parley_promo is paused, not approved (Paused by Meta (low quality) — FIRST_PAUSE.)"
    )
    assert outbox(simulator) == []
    assert set(states(broadcast)) <= {"queued"}  # nobody was spent on a refusal


@pytest.mark.django_db
def test_a_pause_by_hand_has_no_reason_and_one_by_parley_says_why(nile):
    channel = make_whatsapp_channel(nile)
    template = make_template(channel)
    by_hand = Broadcast.objects.create(workspace=nile, name="A", channel=channel, template=template, state="running")
    by_parley = Broadcast.objects.create(workspace=nile, name="B", channel=channel, template=template, state="running")

    services.broadcast_pause(broadcast=by_hand)
    services.broadcast_pause(broadcast=by_parley, reason="paused: the provider made the template x paused")

    by_hand.refresh_from_db()
    by_parley.refresh_from_db()
    assert (by_hand.state, by_hand.paused_reason) == ("paused", "")
    assert (by_parley.state, by_parley.paused_reason) == ("paused", "paused: the provider made the template x paused")


@pytest.mark.django_db
def test_the_recipients_export_streams_under_asgi_without_being_listed_first(shop, sent_broadcast):  # noqa: F811
    tenants, *_ = shop
    client = AsyncClient()
    client.force_login(tenants.supervisor)

    async def download() -> tuple:
        response = await client.get(f"/admin/broadcasts/broadcast/{sent_broadcast.pk}/recipients.csv")
        return response, b"".join([chunk async for chunk in response.streaming_content])

    # From the main thread, so the view's database work shares the test's connection (and rows).
    response, content = async_to_sync(download)()

    assert response.status_code == 200 and response.is_async  # a sync iterator would be listed whole first
    rows = list(csv.reader(io.StringIO(content.decode())))
    assert rows[0][:3] == ["Name", "Phone", "State"]
    assert sorted((row[0], row[2]) for row in rows[1:]) == [("Amira Hassan", "read"), ("Omar Said", "failed")]
