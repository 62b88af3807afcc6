"""The live inbox in real browsers (Debian's chromium through Playwright) against a live daphne,
a real Celery worker and the channel simulator playing WhatsApp: an agent works a conversation
from first message to close, a colleague receives a transfer live in their own browser, and a
dropped connection catches up on everything it missed."""

import pytest
from django.conf import settings

from apps.contacts.models import Tag
from apps.conversations.models import Conversation, Message, QuickReply
from apps.workspaces.models import Role
from tests.browser.conftest import SCREENSHOTS
from tests.conftest import _wait_for, client_for
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_member, make_team, make_workspace

pytestmark = [pytest.mark.live, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def shop(live_server_process, celery_worker_process, simulator):
    workspace = make_workspace(slug="inbox-shop", name="Nile Basket")
    workspace.closing_categories = ["order status", "refund"]
    workspace.save(update_fields=["closing_categories"])
    channel = make_whatsapp_channel(workspace, base_url=simulator.url)
    simulator.register(channel, webhook_url=f"{live_server_process.url}/webhooks/{channel.uuid}/")
    nour = make_member(workspace, Role.AGENT)
    karim = make_member(workspace, Role.AGENT)
    for member, first in ((nour, "Nour"), (karim, "Karim")):
        member.user.first_name = first
        member.user.save(update_fields=["first_name"])
    make_team(workspace, name="Orders", members=[nour, karim])
    QuickReply.objects.create(workspace=workspace, shortcut="ships", text="Hi {{contact.first_name}}, it ships today.")
    Tag.objects.create(workspace=workspace, name="vip")
    return workspace, channel, nour, karim


def signed_in_page(browser, live, user):
    context = browser.new_context(viewport={"width": 1366, "height": 820})
    cookie = client_for(user).cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live.url}])
    page = context.new_page()
    page.goto(f"{live.url}/inbox/")
    page.wait_for_selector("#inbox[data-state=ready]")
    page.wait_for_selector(".connection.online")
    return page


def customer_writes(simulator, text, wa_id="201001234567", name="Amira Hassan"):
    simulator.post(
        "/_simulator/inbound",
        {"phone_number_id": "1000001", "from": wa_id, "name": name, "type": "text", "text": text, "wait": True},
    )


def screenshot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name))


def test_an_agent_works_a_conversation_and_a_colleague_receives_the_transfer_live(
    live_server_process, simulator, shop, browser
):
    _, _, nour, karim = shop
    page = signed_in_page(browser, live_server_process, nour.user)
    page.click("[data-view=unassigned]")
    colleague = signed_in_page(browser, live_server_process, karim.user)
    colleague.click("[data-view=mine]")

    customer_writes(simulator, "Hello, where is my order 1001?")
    page.wait_for_selector(".conversation-list .row:has-text('Amira Hassan')")
    page.click(".conversation-list .row:has-text('Amira Hassan')")
    page.wait_for_selector(".message.in:has-text('where is my order 1001')")
    page.click("[data-action=assign-me]")
    page.wait_for_selector("#thread-meta:has-text('Nour')")

    page.click("#reply")
    page.keyboard.type("/ship")
    page.wait_for_selector("#suggestions li:has-text('/ships')")
    page.keyboard.press("Enter")  # takes the quick reply
    assert page.input_value("#reply") == "Hi Amira, it ships today."
    page.keyboard.press("Enter")  # sends it
    page.wait_for_selector(
        ".message.out:has-text('it ships today') .tick.delivered, .message.out:has-text('it ships today') .tick.read",
        timeout=20000,
    )

    page.check("input[name=mode][value=note]")
    page.fill("#reply", f"@{karim.user.username} she may call back about a refund")
    page.keyboard.press("Enter")
    page.wait_for_selector(".message.note:has-text('may call back')")
    screenshot(page, "inbox-conversation.png")

    page.click("[data-action=transfer]")
    page.select_option("#dialog select[name=assignee]", str(karim.id))
    page.fill("#dialog textarea[name=note]", "Refund question, over to you")
    page.click("#dialog button.primary")
    colleague.wait_for_selector(".conversation-list .row:has-text('Amira Hassan')", timeout=15000)
    colleague.wait_for_selector("#notification-count:not([hidden])")

    colleague.click(".conversation-list .row:has-text('Amira Hassan')")
    colleague.wait_for_selector(".message.note:has-text('Refund question, over to you')")
    colleague.click("[data-action=close]")
    colleague.select_option("#dialog select[name=category]", "refund")
    colleague.fill("#dialog textarea[name=summary]", "Refund explained")
    colleague.click("#dialog button.primary")
    colleague.wait_for_selector("#thread-meta:has-text('closed')")
    screenshot(colleague, "inbox-closed.png")

    conversation = Conversation.objects.get()
    assert (conversation.status, conversation.category, conversation.assignee_id) == ("closed", "refund", karim.id)
    assert conversation.closing_summary == "Refund explained"
    sent = [m["body"]["text"]["body"] for m in simulator.get("/_simulator/outbox", phone_number_id="1000001")]
    assert sent == ["Hi Amira, it ships today."]  # notes and events never leave


def test_a_dropped_connection_catches_up_on_what_it_missed(live_server_process, simulator, shop, browser):
    _, _, nour, _ = shop
    customer_writes(simulator, "First question")
    _wait_for(lambda: Message.objects.exists(), 20, "the first message")
    page = signed_in_page(browser, live_server_process, nour.user)
    page.click("[data-view=unassigned]")
    page.click(".conversation-list .row:has-text('Amira Hassan')")
    page.wait_for_selector(".message.in:has-text('First question')")

    page.evaluate("window.parleyInbox.live.pause()")
    page.wait_for_selector(".connection.offline")
    customer_writes(simulator, "Are you there?")
    customer_writes(simulator, "I am at home until 6", wa_id="201009998877", name="Omar Farouk")
    _wait_for(lambda: Message.objects.count() == 3, 20, "the messages sent while offline")
    assert page.locator(".message.in:has-text('Are you there?')").count() == 0

    page.evaluate("window.parleyInbox.live.resume()")
    page.wait_for_selector(".message.in:has-text('Are you there?')", timeout=15000)
    page.wait_for_selector(".conversation-list .row:has-text('Omar Farouk')", timeout=15000)
    screenshot(page, "inbox-list.png")
