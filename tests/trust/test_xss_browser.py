"""Hostile text in a real browser (Debian's chromium through Playwright) against a live daphne:
a workspace whose every text is an XSS payload (tests/trust/hostile.py) is worked in the inbox
(on load, live over the websocket and after a reload), the contact panel, the admin's pages, the
analytics dashboard and the web chat widget. Nothing runs: `window.__xss` stays undefined and no
dialog opens (the `browser` fixture fails the test on one), and the payloads read as text.

The pages are opened with Playwright's `bypass_csp`, so what is tested is the escaping itself;
the Content-Security-Policy is the second wall (tests/trust/test_csp.py, and every test of
tests/browser fails on a violation)."""

import httpx
import pytest
from django.conf import settings
from django.utils import timezone

from apps.connectors.base import InboundMessage
from apps.conversations.models import Conversation, Message
from apps.conversations.services import inbound_message_apply
from tests.browser.conftest import browser  # noqa: F401  the watched browser, a fixture
from tests.conftest import _wait_for, client_for
from tests.trust.hostile import HOSTILE, MARKER, build_hostile

pytestmark = [pytest.mark.live, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NOTHING_RAN = "() => window.__xss === undefined"


@pytest.fixture
def hostile(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    return build_hostile()


def signed_in_page(watched, live, user, path):
    context = watched.new_context(viewport={"width": 1366, "height": 900}, bypass_csp=True)
    cookie = client_for(user).cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live.url}])
    page = context.new_page()
    page.goto(f"{live.url}{path}")
    return page


def assert_inert(page) -> None:
    assert page.evaluate(NOTHING_RAN), f"a payload ran on {page.url}"
    assert page.locator("a[href^='javascript:' i], iframe[src^='javascript:' i]").count() == 0, page.url


def test_the_inbox_shows_hostile_texts_as_text_on_load_live_and_after_a_reload(
    live_server_process,
    hostile,
    browser,  # noqa: F811
):
    tenant = hostile.tenant
    page = signed_in_page(browser, live_server_process, tenant.owner, "/inbox/")
    page.wait_for_selector("#inbox[data-state=ready]")
    page.wait_for_selector(".connection.online")
    page.click("[data-view=unassigned]")
    page.click(".conversation-list .row:has-text('Amira')")
    page.wait_for_selector(".message.in:has-text('Where is my order')")

    assert page.locator("#thread-title").inner_text() == f"Amira {HOSTILE}"
    assert page.locator(".message.note .text").first.inner_text() == f"Note {HOSTILE}"
    page.wait_for_selector("#contact h2", state="attached")
    if page.locator("#contact-pane").is_hidden():
        page.click("[data-action=toggle-panel]")
    assert page.locator("#contact h2").inner_text() == f"Amira {HOSTILE}"
    assert HOSTILE in page.locator("#contact dl").inner_text()  # the custom field
    assert f"vip-{MARKER}" in page.locator("#contact .tags").inner_text()
    page.wait_for_selector("#orders li")  # the order whose tracking link is javascript:
    page.click("#reply")
    page.keyboard.type("/evil")
    page.wait_for_selector("#suggestions li:has-text('/evil')")
    assert f"Reply {MARKER}" in page.locator("#suggestions").inner_text()  # a preview, cut short
    page.keyboard.press("Escape")
    assert_inert(page)

    # Live: the customer writes again and the event reaches the open page over the websocket.
    inbound_message_apply(
        channel=tenant.get("connectors.channel"),
        inbound=InboundMessage(
            provider_id="wamid.hostile-live",
            sender_id="201001234567",
            sender_name="Amira",
            timestamp=timezone.now(),
            kind="text",
            text=f"Live {HOSTILE}",
        ),
    )
    page.wait_for_selector(".message.in:has-text('Live ')", timeout=15000)
    assert page.locator(".message.in .text").last.inner_text() == f"Live {HOSTILE}"
    assert_inert(page)

    # The email: its subject as text, its HTML only sanitised and in a sandboxed frame.
    page.click(".conversation-list .row:has-text('Mailer')")
    page.wait_for_selector(".message.in .subject")
    assert page.locator(".message.in .subject").inner_text() == f"Subject {HOSTILE}"
    page.click(".formatted-email summary")
    frame = page.wait_for_selector(".formatted-email iframe")
    assert frame.get_attribute("sandbox") == ""
    mail = frame.content_frame()
    assert "track" in mail.locator("body").inner_text()  # the words stay, the markup went
    assert mail.locator("script, iframe, form, img[src], [onerror], a[href]").count() == 0
    assert_inert(page)

    page.reload()
    page.wait_for_selector("#inbox[data-state=ready]")
    page.click("[data-view=unassigned]")
    page.click(".conversation-list .row:has-text('Amira')")
    page.wait_for_selector(".message.in:has-text('Live ')")
    assert page.locator(".message.in .text").last.inner_text() == f"Live {HOSTILE}"
    assert_inert(page)


def test_the_admin_and_the_dashboard_show_hostile_texts_as_text(live_server_process, hostile, browser):  # noqa: F811
    tenant = hostile.tenant
    pk = tenant.get
    pages = [
        "/admin/contacts/contact/",
        f"/admin/contacts/contact/{pk('contacts.contact').pk}/change/",
        "/admin/contacts/tag/",
        f"/admin/contacts/order/{pk('contacts.order').pk}/change/",
        "/admin/conversations/quickreply/",
        f"/admin/conversations/message/{pk('conversations.message').pk}/change/",
        "/admin/connectors/messagetemplate/",
        f"/admin/connectors/messagetemplate/{pk('connectors.messagetemplate').pk}/change/",
        f"/admin/connectors/messagetemplate/{pk('connectors.messagetemplate').pk}/preview/",
        "/admin/workflows/workflow/",
        f"/admin/workflows/workflow/{pk('workflows.workflow').pk}/change/",
        f"/admin/workflows/workflow/{pk('workflows.workflow').pk}/try/",
        "/admin/broadcasts/campaign/",
        f"/admin/broadcasts/campaign/{pk('broadcasts.campaign').pk}/change/",
        "/admin/broadcasts/broadcast/add/",
        f"/admin/broadcasts/broadcast/{pk('broadcasts.broadcast').pk}/change/",
        f"/admin/broadcasts/segment/{pk('broadcasts.segment').pk}/change/",
        "/analytics/",
    ]
    page = signed_in_page(browser, live_server_process, tenant.owner, "/admin/")
    for path in pages:
        response = page.goto(f"{live_server_process.url}{path}")
        assert response.status == 200, path
        page.wait_for_load_state("networkidle")
        assert MARKER in page.locator("body").inner_text(), f"{path} does not show the payload as text"
        assert_inert(page)


def test_the_widget_shows_hostile_texts_as_text(
    live_server_process,
    celery_worker_process,
    simulator,
    hostile,
    browser,  # noqa: F811
):
    channel = hostile.tenant.get("webchat")
    channel.settings = {**channel.settings, "allowed_origins": [simulator.url], "greeting": f"Hello {HOSTILE}"}
    channel.save(update_fields=["settings"])
    simulator.post(
        "/_simulator/channels",
        {"kind": "webchat", "name": "hostile", "script_url": f"{live_server_process.url}/widget/{channel.uuid}.js"},
    )
    page = browser.new_context(bypass_csp=True).new_page()
    page.goto(f"{simulator.url}/shop/0/")
    page.click("#parley-widget .launch")
    page.wait_for_selector("#parley-widget .status:has-text('online')")
    assert page.locator("#parley-widget .title").inner_text() == f"Chat {MARKER}"
    page.fill("#parley-widget textarea", HOSTILE)
    page.press("#parley-widget textarea", "Enter")
    _wait_for(lambda: Message.objects.filter(channel=channel).exists(), 20, "the visitor's message")
    assert Message.objects.get(channel=channel).text == HOSTILE  # stored as typed

    conversation = Conversation.objects.get(channel=channel)
    response = httpx.post(
        f"{live_server_process.url}/api/v1/conversations/{conversation.id}/messages/",
        json={"text": f"Answer {HOSTILE}"},
        headers={"Authorization": f"Bearer {hostile.tenant.token}"},
    )
    assert response.status_code == 201
    page.wait_for_selector("#parley-widget .msg:has-text('Answer ')")
    log = page.locator("#parley-widget .log").inner_text()
    assert f"Hello {HOSTILE}" in log and f"Answer {HOSTILE}" in log
    assert_inert(page)
    page.reload()
    page.wait_for_selector("#parley-widget .status:has-text('online')")
    assert f"Answer {HOSTILE}" in page.locator("#parley-widget .log").inner_text()
    assert_inert(page)
