"""The supervisor dashboard in a real browser (Debian's chromium through Playwright) against a
live daphne: four weeks and a year of history played through the real services (the inbound
pipeline, assignment, replies, the bot, close, ratings) with each step's events set to its
moment and folded, so every picture has something to show. It takes the README's screenshots
(docs/screenshots/analytics-*.png when PARLEY_SCREENSHOTS=docs/screenshots), drills from a
chart into the conversations behind it, and sees the live panel follow the websocket."""

import itertools
import random
from datetime import datetime, time, timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from apps.analytics.models import AgentPresence, Event
from apps.analytics.services import event_record, events_fold_all
from apps.connectors.base import InboundMessage
from apps.connectors.models import Channel
from apps.conversations.models import Conversation, Message
from apps.conversations.services.actions import conversation_assign, conversation_close, conversation_csat_record
from apps.conversations.services.messages import inbound_message_apply, message_send
from apps.workspaces import services
from apps.workspaces.models import Role
from tests.browser.conftest import SCREENSHOTS
from tests.conftest import _wait_for, client_for
from tests.factories import make_member, make_team, make_workspace

pytestmark = [pytest.mark.live, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

_ids = itertools.count(1)
CATEGORIES = ("order status", "refund", "delivery", "product question")


class Clock:
    """Sets the events the last step wrote to the moment it happened."""

    def __init__(self):
        self.seen = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def at(self, moment: datetime) -> None:
        Event.objects.filter(pk__gt=self.seen).update(at=moment)
        self.seen = Event.objects.order_by("-id").values_list("id", flat=True).first() or self.seen


def write(channel, sender: str, text: str, name: str) -> Conversation:
    inbound = InboundMessage(
        provider_id=f"hist-{next(_ids)}",
        sender_id=sender,
        timestamp=timezone.now(),
        kind="text",
        text=text,
        sender_name=name,
    )
    return inbound_message_apply(channel=channel, inbound=inbound).conversation


def fresh(conversation) -> Conversation:
    return Conversation.objects.get(pk=conversation.pk)


def play_conversation(clock, rng, shop, start: datetime, sender: str) -> None:
    """One customer's conversation: maybe a bot first (contained or handed over), then a
    person answers, maybe a second exchange, a close and a rating."""
    _workspace, (chat, whatsapp), agents, teams, _supervisor = shop
    channel = rng.choice((chat, whatsapp, whatsapp))
    conversation = write(channel, sender, "Where is my order?", f"Customer {sender}")
    clock.at(start)
    t = start
    if rng.random() < 0.25:
        message_send(conversation=fresh(conversation), text="I can help with that!", sender_kind=Message.Sender.BOT)
        event_record(conversation=conversation, kind="faq_answered", by="bot", intent="order_status")
        clock.at(t + timedelta(seconds=3))
        if rng.random() < 0.55:
            event_record(conversation=conversation, kind="faq_accepted", by="bot", intent="order_status")
            clock.at(t + timedelta(seconds=40))
            conversation_close(
                conversation=fresh(conversation), actor=None, membership=None, from_run=1, category=CATEGORIES[0]
            )
            clock.at(t + timedelta(seconds=60))
            return
        event_record(conversation=conversation, kind="handover", by="bot")
        clock.at(t + timedelta(seconds=50))
        t += timedelta(seconds=50)
    agent = rng.choice(agents)
    team = teams[0] if agent in teams[0].members.all() else teams[1]
    t += timedelta(seconds=rng.randint(2, 90))
    conversation_assign(conversation=fresh(conversation), actor=None, membership=None, assignee=agent, team=team)
    clock.at(t)
    t += timedelta(seconds=min(int(rng.lognormvariate(3.1, 1.2)), 5400))
    message_send(conversation=fresh(conversation), author=agent.user, text="Let me check that for you.")
    clock.at(t)
    if rng.random() < 0.6:
        t += timedelta(seconds=rng.randint(30, 600))
        write(channel, sender, "Thanks! And the invoice?", f"Customer {sender}")
        clock.at(t)
        t += timedelta(seconds=rng.randint(20, 400))
        message_send(conversation=fresh(conversation), author=agent.user, text="Sent to your email.")
        clock.at(t)
    if t > timezone.now() - timedelta(hours=2) or rng.random() < 0.08:
        return  # still open
    t += timedelta(seconds=rng.randint(60, 4 * 3600))
    category = rng.choice(CATEGORIES)
    conversation_close(conversation=fresh(conversation), actor=agent.user, membership=agent, category=category)
    clock.at(t)
    if rng.random() < 0.55:
        score = rng.choices((1, 2, 3, 4, 5), weights=(4, 4, 10, 30, 52))[0]
        conversation_csat_record(conversation=fresh(conversation), score=score)
        clock.at(t + timedelta(minutes=2))


def local_moment(rng, tz, day) -> datetime:
    hour = rng.choices(
        range(24), weights=[1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 14, 13, 11, 12, 13, 13, 12, 10, 8, 7, 6, 4, 2, 1]
    )[0]
    return datetime.combine(day, time(hour, rng.randint(0, 59)), tzinfo=tz)


def play_history(shop, *, days: int = 28, per_day: int = 9, months: int = 11) -> None:
    """`days` of recent history, a thinner trickle over the `months` before, agents' presence."""
    workspace, _channels, agents, _teams, _supervisor = shop
    rng, clock, tz = random.Random(9), Clock(), workspace.tz
    today = timezone.now().astimezone(tz).date()
    moments = []
    for offset in range(days, 0, -1):
        day = today - timedelta(days=offset)
        weekend = day.weekday() >= 5
        moments += [local_moment(rng, tz, day) for _n in range(per_day // 2 if weekend else per_day)]
    for offset in range(days + 1, days + 30 * months):
        if rng.random() < 0.18:
            moments.append(local_moment(rng, tz, today - timedelta(days=offset)))
    senders = [f"2010{n:07d}" for n in range(len(moments))]
    for n, start in enumerate(sorted(moments)):
        returning = n > 10 and rng.random() < 0.12
        play_conversation(clock, rng, shop, start, rng.choice(senders[: n - 5]) if returning else senders[n])
    for agent in agents:
        for offset in range(days, 0, -1):
            day = today - timedelta(days=offset)
            if day.weekday() < 5 or agent == agents[0]:
                on = datetime.combine(day, time(rng.choice((8, 9))), tzinfo=tz)
                AgentPresence.objects.create(workspace=workspace, membership=agent, status="online", at=on)
                off = on + timedelta(hours=rng.choice((7, 8, 9)))
                AgentPresence.objects.create(workspace=workspace, membership=agent, status="offline", at=off)
    events_fold_all()


@pytest.fixture
def shop(live_server_process):
    workspace = make_workspace(slug="nile-basket", name="Nile Basket", timezone="Africa/Cairo")
    workspace.closing_categories = list(CATEGORIES)
    workspace.save(update_fields=["closing_categories"])
    supervisor = make_member(workspace, Role.SUPERVISOR)
    agents = [make_member(workspace, Role.AGENT) for _n in range(4)]
    for member, first in zip([supervisor, *agents], ("Salma", "Nour", "Karim", "Omar", "Laila"), strict=True):
        member.user.first_name = first
        member.user.save(update_fields=["first_name"])
    teams = [
        make_team(workspace, name="Orders", members=agents[:2]),
        make_team(workspace, name="Returns", members=agents[2:]),
    ]
    chat = Channel.objects.create(workspace=workspace, kind="webchat", name="Shop chat")
    whatsapp = Channel.objects.create(workspace=workspace, kind="webchat", name="WhatsApp +20 100")
    return workspace, (chat, whatsapp), agents, teams, supervisor


def dashboard_page(browser, live, user, query=""):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    cookie = client_for(user).cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live.url}])
    page = context.new_page()
    page.goto(f"{live.url}/analytics/{query}")
    page.wait_for_selector("#live-panel[data-socket=online]")
    return page


def shoot(page, name: str, selector: str | None = None) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = page.locator(selector).first if selector else page
    target.screenshot(path=str(SCREENSHOTS / name))


def test_a_supervisor_sees_the_month_drills_into_slow_replies_and_watches_the_floor_live(
    live_server_process, shop, browser
):
    workspace, (chat, _whatsapp), agents, _teams, supervisor = shop
    play_history(shop)
    today = timezone.now().astimezone(workspace.tz).date()
    query = f"?from={today - timedelta(days=13)}&to={today}"
    page = dashboard_page(browser, live_server_process, supervisor.user, query)
    assert page.locator(".kpi[data-metric=opened] strong").inner_text() != "0"
    assert page.locator("svg").count() >= 10
    shoot(page, "analytics-dashboard.png")
    page.screenshot(path=str(SCREENSHOTS / "analytics-full-page.png"), full_page=True)
    shoot(page, "analytics-heatmap.png", "figure.wide")
    page.locator("section.card[aria-label=Agents]").scroll_into_view_if_needed()
    shoot(page, "analytics-agents.png", "section.card[aria-label=Agents]")

    # The slowest first responses: the "> 1 h" bar of the distribution opens those conversations.
    links = page.eval_on_selector_all("figure.chart a", "all => all.map(a => a.getAttribute('xlink:href'))")
    buckets = [link for link in links if link and "metric=first_response" in link and "bucket=" in link]
    assert len(buckets) == 7
    for href in reversed(buckets):  # the slowest bucket that has any
        response = page.goto(f"{live_server_process.url}{href}")
        assert response.status == 200
        if page.locator("table.cycles tbody tr[data-cycle]").count():
            break
    shoot(page, "analytics-drilldown.png")
    link = page.locator("table.cycles tbody tr[data-cycle] a").first.get_attribute("href")
    assert link.startswith("/inbox/?c=")

    # The live panel follows the floor: a customer writes and an agent goes online.
    page = dashboard_page(browser, live_server_process, supervisor.user, query)
    before = int(page.locator("[data-live=waiting]").inner_text())
    write(chat, "2019999999", "Is anyone there?", "Late customer")
    services.agent_status_set(membership=agents[3], status="online")
    _wait_for(lambda: int(page.locator("[data-live=waiting]").inner_text()) > before, 10, "the live panel")
    page.wait_for_selector("[data-live=agents] td:has-text('Laila')")
    shoot(page, "analytics-live.png", "#live-panel")
