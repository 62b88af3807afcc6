"""A person chats as a customer on every channel from the simulator's page (Debian's chromium
through Playwright), against a live daphne and a real Celery worker: their message reaches the
inbox, the operator's menu reaches their screen, and the option they tap comes back to Parley as
the same choice whichever channel carried it. The channels are configured exactly as the demo
configures them (`load_demo`)."""

import pytest

from apps.connectors.models import Channel
from apps.conversations.models import Conversation, Message
from apps.conversations.services import message_send
from apps.workspaces.management.commands.load_demo import demo_channel_config, simulator_registration
from tests.conftest import _wait_for
from tests.factories import make_workspace

pytestmark = [pytest.mark.live, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHANNELS = [
    ({"kind": "messenger", "name": "Nile on Facebook", "page_id": "310000000000009"}, "24681357900"),
    ({"kind": "instagram", "name": "@nile", "page_id": "17841400000000109"}, "17841400000000001"),
    ({"kind": "telegram", "name": "Nile bot", "username": "NileBot", "bot_token": "7000009:AAdemo-page"}, "500100200"),
    ({"kind": "wechat", "name": "Nile WeChat", "app_id": "wx00000000page01", "original_id": "gh_page01"}, "oAmira01"),
    ({"kind": "email", "name": "help@nile.example", "address": "help@nile.example"}, "amira@example.com"),
    ({"kind": "custom", "name": "Nile app", "app_id": "nile-page-app"}, "app-user-42"),
]
KEYS = {"messenger": "page_id", "instagram": "page_id", "telegram": "bot_token", "wechat": "app_id"}
OPTIONS = [{"id": "order", "title": "My order"}, {"id": "refund", "title": "A refund"}]


@pytest.fixture
def demo_like(settings, live_server_process, simulator):
    settings.PUBLIC_URL = live_server_process.url
    settings.SIMULATOR_URL = simulator.url
    settings.SIMULATOR_SMTP_PORT = simulator.get("/_simulator/mail/servers", kind="email")["smtp_port"]

    def connect(spec):
        credentials, extra = demo_channel_config(spec)
        channel = Channel.objects.create(
            workspace=make_workspace(slug=f"page-{spec['kind']}"),
            kind=spec["kind"],
            name=spec["name"],
            credentials=credentials,
            settings={"base_url": simulator.url, "demo": spec, **extra},
        )
        simulator.post("/_simulator/channels", simulator_registration(channel))
        return channel

    return connect


@pytest.mark.parametrize(("spec", "user"), CHANNELS, ids=[spec["kind"] for spec, _ in CHANNELS])
def test_a_person_chats_as_a_customer_from_the_simulator_page(
    spec,
    user,
    demo_like,
    browser,
    simulator,
    celery_worker_process,
):
    channel = demo_like(spec)
    key = spec.get(KEYS.get(spec["kind"], ""), spec.get("address") or spec.get("app_id"))
    page = browser.new_page()
    page.goto(f"{simulator.url}/")
    value = f"{spec['kind']}|{key}"
    page.wait_for_selector(f'#channel option[value="{value}"]', state="attached")
    page.select_option("#channel", value)
    page.fill("#phone", user)
    page.dispatch_event("#phone", "change")

    page.fill("#text", "Where is my order?")
    page.click("#composer button[type=submit]")

    _wait_for(lambda: Message.objects.filter(channel=channel, direction="in").exists(), 20, "the customer's message")
    conversation = Conversation.objects.get(channel=channel)
    assert Message.objects.get(channel=channel, direction="in").text == "Where is my order?"

    message_send(conversation=conversation, kind="interactive", text="How can we help?", payload={"options": OPTIONS})
    page.get_by_role("button", name="A refund").click(timeout=20_000)

    chosen = lambda: Message.objects.filter(channel=channel, direction="in", kind="interactive").first()  # noqa: E731
    _wait_for(lambda: chosen() is not None, 20, "the customer's choice")
    assert (chosen().payload["reply_id"], chosen().text) == ("refund", "A refund")
    page.close()
