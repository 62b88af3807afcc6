"""The web chat widget in a real browser (Debian's chromium driven by Playwright), on a shop page
served from another origin (the channel simulator's demo shop), against a live daphne and a
real Celery worker."""

import httpx
import pytest

from apps.connectors.models import Channel
from apps.conversations.models import Conversation, Message
from apps.workspaces.services import api_token_create
from tests.browser.conftest import SCREENSHOTS
from tests.conftest import _wait_for
from tests.factories import make_workspace

pytestmark = [pytest.mark.live, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser_page(browser):
    return browser.new_page()


def shop_with_widget(live, simulator, **settings):
    workspace = make_workspace(slug="browser-shop")
    channel = Channel.objects.create(
        workspace=workspace,
        kind="webchat",
        name="Nile Basket website",
        settings={"allowed_origins": [simulator.url], "greeting": "Hi! How can we help?", **settings},
    )
    simulator.post(
        "/_simulator/channels",
        {"kind": "webchat", "name": channel.name, "script_url": f"{live.url}/widget/{channel.uuid}.js"},
    )
    _, token = api_token_create(workspace=workspace, name="inbox")
    return channel, token


def test_a_visitor_chats_from_a_shop_page_and_the_conversation_survives_a_reload(
    live_server_process, celery_worker_process, simulator, browser_page
):
    channel, token = shop_with_widget(live_server_process, simulator)
    page = browser_page
    page.goto(f"{simulator.url}/shop/0/")

    page.click("#parley-widget .launch")
    page.wait_for_selector("#parley-widget .status:has-text('online')")
    assert page.locator("#parley-widget .log").inner_text().startswith("Hi! How can we help?")
    page.fill("#parley-widget textarea", "Do you deliver to Maadi?")
    page.press("#parley-widget textarea", "Enter")

    _wait_for(lambda: Message.objects.filter(channel=channel).exists(), 20, "the visitor's message")
    conversation = Conversation.objects.get(channel=channel)
    # Over HTTP to the live server: this thread runs Playwright's event loop.
    response = httpx.post(
        f"{live_server_process.url}/api/v1/conversations/{conversation.id}/messages/",
        json={"text": "Yes, every day from 9 to 21."},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201
    page.wait_for_selector("#parley-widget .msg:has-text('Yes, every day from 9 to 21.')")
    _wait_for(lambda: Message.objects.get(direction="out").state == "read", 20, "the read receipt")

    page.reload()
    page.wait_for_selector("#parley-widget .status:has-text('online')")
    log = page.locator("#parley-widget .log").inner_text()
    assert "Do you deliver to Maadi?" in log and "Yes, every day from 9 to 21." in log
    assert Conversation.objects.filter(channel=channel).count() == 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "widget-conversation.png"))


def test_the_prechat_form_names_a_bad_email_then_starts_the_chat(
    live_server_process, celery_worker_process, simulator, browser_page
):
    channel, _ = shop_with_widget(
        live_server_process,
        simulator,
        prechat={"enabled": True, "fields": ["name", "email"], "required": ["name", "email"]},
    )
    page = browser_page
    page.goto(f"{simulator.url}/shop/0/")
    page.click("#parley-widget .launch")
    page.wait_for_selector("#parley-widget form.prechat:visible")
    page.fill("#parley-widget form.prechat [name=name]", "Amira")
    page.fill("#parley-widget form.prechat [name=email]", "amira@")
    # The browser's own check would stop "amira@"; the server's answer is what is under test.
    page.eval_on_selector("#parley-widget form.prechat", "form => form.noValidate = true")
    page.click("#parley-widget form.prechat button")
    page.wait_for_selector("#parley-widget [data-error=email]:has-text('valid email')")

    page.fill("#parley-widget form.prechat [name=email]", "amira@example.com")
    page.click("#parley-widget form.prechat button")
    page.wait_for_selector("#parley-widget form.send:visible")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "widget-prechat.png"))
    page.fill("#parley-widget textarea", "Hello")
    page.press("#parley-widget textarea", "Enter")
    _wait_for(lambda: Message.objects.filter(channel=channel).exists(), 20, "the visitor's message")
    contact = Conversation.objects.get(channel=channel).contact
    assert (contact.name, contact.email) == ("Amira", "amira@example.com")
