"""The inbox's bots and queues in a real browser (Debian's chromium through Playwright) against a
live daphne, a real Celery worker and the channel simulator playing WhatsApp: an agent sees who
waits in the team's queue, starts a shortcut workflow from the conversation's header, sees the bot
badge while the bot works, stops it, and starts it again by typing `/bot survey`."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.conversations.models import Conversation
from apps.workflows.definition import workflow_import
from apps.workflows.models import Run
from apps.workspaces.models import Role
from tests.browser.test_inbox import customer_writes, screenshot, signed_in_page
from tests.conftest import _wait_for
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_member, make_team, make_workspace

pytestmark = [pytest.mark.live, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SURVEY = {
    "name": "Order survey",
    "trigger": "shortcut",
    "trigger_settings": {"shortcut": "survey"},
    "steps": [
        {"key": "ask", "kind": "ask", "settings": {"text": "Your order number?", "input": "text", "save_as": "order"}}
    ],
}


@pytest.fixture
def shop(live_server_process, celery_worker_process, simulator):
    workspace = make_workspace(slug="bots-shop", name="Nile Basket")
    channel = make_whatsapp_channel(workspace, base_url=simulator.url)
    simulator.register(channel, webhook_url=f"{live_server_process.url}/webhooks/{channel.uuid}/")
    nour = make_member(workspace, Role.AGENT)
    nour.user.first_name = "Nour"
    nour.user.save(update_fields=["first_name"])
    make_team(workspace, name="Orders", members=[nour])
    # Nobody of this team is online: what waits in its queue stays there while Nour looks on (an
    # Orders queue would be handed to her as soon as her inbox sets her online).
    couriers = make_team(workspace, name="Couriers")
    workflow_import(workspace=workspace, definition=SURVEY)
    return workspace, couriers, nour


def test_an_agent_sees_the_queue_and_runs_and_stops_a_bot_from_the_header(
    live_server_process, simulator, shop, browser
):
    _, team, nour = shop
    customer_writes(simulator, "Hello, where is my order?")
    customer_writes(simulator, "I am a courier", wa_id="201009998877", name="Omar Farouk")
    _wait_for(lambda: Conversation.objects.count() == 2, 20, "the conversations")
    amira, omar = Conversation.objects.order_by("id")
    now = timezone.now()
    Conversation.objects.filter(pk=amira.pk).update(team=team, queued_at=now - timedelta(minutes=7))
    Conversation.objects.filter(pk=omar.pk).update(team=team, queued_at=now - timedelta(minutes=2))

    page = signed_in_page(browser, live_server_process, nour.user)
    page.click("[data-view=queue]")
    row = page.locator(".conversation-list .row:has-text('Amira Hassan')")
    row.locator(".row-queue:has-text('in queue · team Couriers · waiting 7 min')").wait_for()
    # Omar wrote last, but Amira has waited longest: she comes first.
    assert page.locator(".conversation-list .row .name").all_inner_texts() == ["Amira Hassan", "Omar Farouk"]
    screenshot(page, "inbox-queue.png")

    row.click()
    page.wait_for_selector(".message.in:has-text('where is my order')")
    page.select_option("[data-action=run-bot]", label="🤖 Order survey (/bot survey)")
    page.wait_for_selector("#thread-bot:has-text('🤖 Order survey')")
    page.wait_for_selector(".conversation-list .row .bot:has-text('Order survey')")
    page.wait_for_selector(".message.out:has-text('Your order number?')", timeout=15000)
    screenshot(page, "inbox-bot.png")
    _wait_for(
        lambda: (
            "Your order number?"
            in [
                m["body"].get("text", {}).get("body")
                for m in simulator.get("/_simulator/outbox", phone_number_id="1000001")
            ]
        ),
        20,
        "the bot's question on the customer's phone",
    )

    page.click("[data-action=stop-bot]")
    page.wait_for_selector("#thread-bot", state="hidden")
    assert Run.objects.get().state == "cancelled"
    assert page.locator(".conversation-list .row .bot").count() == 0

    page.click("#reply")  # the same from the keyboard
    page.keyboard.type("/bot sur")
    page.wait_for_selector("#suggestions li:has-text('/bot survey')")
    page.keyboard.press("Enter")
    page.wait_for_selector("#thread-bot:has-text('Order survey')")
    assert page.input_value("#reply") == ""
    assert Run.objects.filter(state="waiting").count() == 1
