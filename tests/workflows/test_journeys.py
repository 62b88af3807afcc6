"""The four demo journeys, end to end through every real part: the customer writes on the channel
simulator, which posts the provider's webhook to a live daphne; a real Celery worker stores the
message and runs the workflow imported from the demo's own fixture file (fixtures/workflows/);
the bot's messages leave through the channel's connector and are read back from the simulator's
outbox in that provider's interactive format; the customer taps or types; the conversation ends
up with the right team's available agent.

Also here: a waiting run outlives a restart of the worker, a menu's timeout fires, and a customer
reaches a person in Russian and in English whatever the bot was doing. The engine itself, step by
step and in-process, is in test_engine.py."""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings

from apps.connectors.providers.telegram import webhook_secret
from apps.contacts.services import contact_resolve, contact_save, order_upsert
from apps.conversations.models import Conversation, Message
from apps.conversations.services.actions import conversation_close
from apps.workflows.definition import definitions_parse, workflows_import
from apps.workflows.models import FaqEntry, Run, WorkflowVersion
from apps.workspaces import services as workspaces
from apps.workspaces.models import AgentStatus, Membership, Role
from tests.conftest import BIN, _spawn, _stop, _wait_for
from tests.connectors import telegram_payloads as tg
from tests.connectors.email_payloads import make_email_channel
from tests.connectors.messenger_payloads import PSID, make_meta_channel
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_member, make_shift, make_team

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

FIXTURES = Path(settings.BASE_DIR) / "fixtures"
DEADLINE = 20  # seconds for one hop: webhook, worker, engine, connector, simulator
PHONE_NUMBER_ID = "1000001"  # make_whatsapp_channel's
CUSTOMER_PHONE = "201001234567"
MAIL = "care@lumen-electronics.example"
CUSTOMER_MAIL = "ka.yan@example.hk"


# Polling -------------------------------------------------------------------------------------


def wait_until(what: str, probe, timeout: float = DEADLINE):
    """Polls `probe` until it answers something truthy, and returns that; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def assigned(conversation_id: int) -> Conversation:
    def probe():
        conversation = Conversation.objects.select_related("assignee__user", "team").get(pk=conversation_id)
        return conversation if conversation.assignee_id else None

    return wait_until("the conversation to be assigned", probe)


def conversation_of(channel) -> Conversation:
    return wait_until("the conversation", lambda: Conversation.objects.filter(channel=channel).first())


# The workspaces: teams on shift all day, agents at their desks --------------------------------


@dataclass
class Shop:
    workspace: object
    agents: dict = field(default_factory=dict)  # team name → its agent at their desk
    channel: object = None
    supervisor: object = None


def workspace(slug: str, *, language: str = "en", timezone_name: str = "UTC"):
    return workspaces.workspace_create(
        name=slug.title(), slug=slug, timezone_name=timezone_name, default_language=language
    )


def agent(ws, *, online: bool = True, capacity: int = 3) -> Membership:
    member = make_member(ws, Role.AGENT)
    AgentStatus.objects.filter(membership=member).update(status="online" if online else "offline", capacity=capacity)
    return member


def team(ws, name: str, *members: Membership):
    made = make_team(ws, name=name, members=list(members))
    for weekday in range(7):
        make_shift(made, weekday=weekday, starts_at="00:00", ends_at="00:00")
    return made


def import_journey(ws, file: str) -> None:
    """The demo's workflow file, imported as load_demo imports it: the fixtures are what is tested."""
    data = json.loads((FIXTURES / "workflows" / file).read_text())
    workflows_import(workspace=ws, definitions=definitions_parse(data))


def load_faq(ws, file: str) -> None:
    entries = json.loads((FIXTURES / "faq" / file).read_text())
    FaqEntry.objects.bulk_create(FaqEntry(workspace=ws, **entry) for entry in entries)


# Channels on the simulator --------------------------------------------------------------------


def webhook(live_server_process, channel, query: str = "") -> str:
    return f"{live_server_process.url}/webhooks/{channel.uuid}/{query}"


def whatsapp(ws, simulator, live_server_process):
    channel = make_whatsapp_channel(ws, base_url=simulator.url)
    simulator.register(channel, webhook_url=webhook(live_server_process, channel))
    return channel


def whatsapp_says(simulator, text: str = "", *, reply: dict | None = None) -> None:
    body = {"phone_number_id": PHONE_NUMBER_ID, "from": CUSTOMER_PHONE, "name": "Amira Hassan", "wait": True}
    body |= {"type": "interactive", "reply": reply} if reply else {"type": "text", "text": text}
    assert simulator.post("/_simulator/inbound", body)["status"] == 200


def whatsapp_sent(simulator) -> list[dict]:
    """What Parley sent the customer (Graph API message bodies), read receipts left out."""
    calls = simulator.get("/_simulator/outbox", phone_number_id=PHONE_NUMBER_ID)
    return [call["body"] for call in calls if call["body"].get("type") in ("text", "interactive")]


def whatsapp_text(body: dict) -> str:
    return body["text"]["body"] if body["type"] == "text" else body["interactive"]["body"]["text"]


def whatsapp_waits_for(simulator, fragment: str) -> dict:
    def probe():
        return next((body for body in whatsapp_sent(simulator) if fragment in whatsapp_text(body)), None)

    return wait_until(f"WhatsApp message with {fragment!r}", probe)


def telegram(ws, simulator, live_server_process):
    channel = tg.make_telegram_channel(ws, base_url=simulator.url)
    simulator.post(
        "/_simulator/channels",
        {
            "kind": "telegram",
            "bot_token": tg.BOT_TOKEN,
            "username": "journeys_bot",
            "name": channel.name,
            "webhook_url": webhook(live_server_process, channel),
            "secret_token": webhook_secret(channel),
        },
    )
    return channel


def telegram_says(simulator, text: str = "", *, choice: str | None = None, name: str = "Amira Nasser") -> None:
    body = {"kind": "telegram", "channel": tg.BOT_TOKEN, "user": str(tg.USER_ID), "name": name, "wait": True}
    body |= {"type": "choice", "choice": {"id": choice}} if choice else {"type": "text", "text": text}
    assert simulator.post("/_simulator/inbound", body)["status"] == 200


def telegram_waits_for(simulator, fragment: str) -> dict:
    def probe():
        calls = simulator.get("/_simulator/outbox", kind="telegram", channel=tg.BOT_TOKEN)
        sent = [call["body"] for call in calls if call.get("method") == "sendMessage"]
        return next((body for body in sent if fragment in body.get("text", "")), None)

    return wait_until(f"Telegram message with {fragment!r}", probe)


def messenger(ws, simulator, live_server_process):
    channel = make_meta_channel(ws, "messenger", base_url=simulator.url)
    simulator.post(
        "/_simulator/channels",
        {
            "kind": "messenger",
            "name": channel.name,
            "page_id": channel.credentials["page_id"],
            "page_access_token": channel.credentials["page_access_token"],
            "app_secret": channel.credentials["app_secret"],
            "verify_token": channel.verify_token,
            "webhook_url": webhook(live_server_process, channel),
        },
    )
    return channel


def messenger_says(simulator, channel, text: str = "", *, choice: tuple[str, str] | None = None) -> None:
    body = {"kind": "messenger", "channel": channel.credentials["page_id"], "user": PSID, "wait": True}
    body |= {"type": "choice", "choice": {"id": choice[0], "title": choice[1]}} if choice else {"text": text}
    assert simulator.post("/_simulator/inbound", {"type": "text", **body})["status"] == 200


def messenger_waits_for(simulator, channel, fragment: str) -> dict:
    def probe():
        calls = simulator.get("/_simulator/outbox", kind="messenger", channel=channel.credentials["page_id"])
        sent = [call["body"]["message"] for call in calls if (call.get("body") or {}).get("message")]
        return next((message for message in sent if fragment in message.get("text", "")), None)

    return wait_until(f"Messenger message with {fragment!r}", probe)


def mailbox(ws, simulator, live_server_process):
    ports = simulator.get("/_simulator/mail/servers", kind="email")
    channel = make_email_channel(ws, address=MAIL, from_name="Lumen Electronics", smtp_port=ports["smtp_port"])
    simulator.post(
        "/_simulator/channels",
        {
            "kind": "email",
            "address": MAIL,
            "name": "Lumen Electronics",
            "mode": "webhook",
            "smtp_password": "smtp-secret",
            "imap_password": "imap-secret",
            "webhook_url": webhook(live_server_process, channel, f"?key={channel.verify_token}"),
        },
    )
    return channel


def mail_says(simulator, text: str) -> None:
    body = {"kind": "email", "channel": MAIL, "user": CUSTOMER_MAIL, "name": "Wong Ka Yan", "text": text}
    assert simulator.post("/_simulator/inbound", {**body, "wait": True})["status"] == 200


def mail_waits_for(simulator, fragment: str) -> str:
    def probe():
        mails = simulator.get("/_simulator/outbox", kind="email", channel=MAIL)
        return next((mail["text"] for mail in mails if fragment in mail.get("text", "")), None)

    return wait_until(f"an email with {fragment!r}", probe)


# Journey 1: grocery group-buying, customer support (WhatsApp) ----------------------------------


@pytest.fixture
def grocery(live_server_process, celery_worker_process, simulator):
    """Nile Basket's support workspace: three teams, each with an agent at their desk (Products
    also has one who is offline), the welcome menu and the survey, a customer with an order."""
    ws = workspace("grocery", timezone_name="Africa/Cairo")
    away = agent(ws, online=False)
    agents = {"Products": agent(ws), "Complaints": agent(ws), "Orders": agent(ws)}
    for name, member in agents.items():
        team(ws, name, member, *([away] if name == "Products" else []))
    supervisor = make_member(ws, Role.SUPERVISOR)
    import_journey(ws, "grocery_support.json")
    amira = contact_save(workspace_id=ws.pk, data={"name": "Amira Hassan", "phone": "+20 100 123 4567"})
    order_upsert(
        workspace_id=ws.pk,
        data={"external_id": "NB-1042", "status": "shipped", "tracking_url": "https://track.example/NB-1042"},
        contact=amira,
    )
    return Shop(ws, agents, whatsapp(ws, simulator, live_server_process), supervisor)


def test_the_grocery_menu_is_a_whatsapp_list_and_a_product_question_reaches_an_agent_who_is_rated(grocery, simulator):
    channel, agents, supervisor = grocery.channel, grocery.agents, grocery.supervisor

    whatsapp_says(simulator, "Hi")

    menu = whatsapp_waits_for(simulator, "welcome to Nile Basket")
    assert menu["interactive"]["type"] == "list"  # four options: more than WhatsApp's three buttons
    rows = menu["interactive"]["action"]["sections"][0]["rows"]
    assert [row["id"] for row in rows] == ["products", "complaint", "order", "status"]
    assert rows[0]["title"] == "Product questions"

    whatsapp_says(simulator, reply={"type": "list_reply", "id": "products", "title": "Product questions"})

    conversation = assigned(conversation_of(channel).pk)
    assert (conversation.team.name, conversation.assignee) == ("Products", agents["Products"])
    name = conversation.assignee.user.get_full_name() or conversation.assignee.user.username
    whatsapp_waits_for(simulator, f"{name} from our products team will answer you here")

    conversation_close(conversation=conversation, actor=agents["Products"].user, membership=agents["Products"])

    survey = whatsapp_waits_for(simulator, f"How would you rate your chat with {name}?")
    assert survey["interactive"]["type"] == "list"  # five ratings
    whatsapp_says(simulator, reply={"type": "list_reply", "id": "csat-2", "title": "2 ⭐⭐"})
    whatsapp_waits_for(simulator, "Anything you'd like to tell us?")
    whatsapp_says(simulator, "The eggs were fine but the basket came late")
    whatsapp_waits_for(simulator, "Thank you for your feedback")
    conversation.refresh_from_db()
    assert (conversation.status, conversation.csat_score, conversation.csat_agent) == ("closed", 2, agents["Products"])
    assert conversation.csat_comment == "The eggs were fine but the basket came late"
    assert supervisor.notifications.filter(kind="csat_low", conversation=conversation).exists()


def test_order_status_asks_for_the_number_and_answers_from_the_order_system(grocery, simulator):
    channel, agents = grocery.channel, grocery.agents
    whatsapp_says(simulator, "hello")
    whatsapp_waits_for(simulator, "welcome to Nile Basket")

    whatsapp_says(simulator, reply={"type": "list_reply", "id": "status", "title": "Order status"})
    whatsapp_waits_for(simulator, "Please send your order number")
    whatsapp_says(simulator, "my order number? hmm")
    whatsapp_waits_for(simulator, "doesn't look like an order number")
    whatsapp_says(simulator, "#nb-1042")

    status = whatsapp_waits_for(simulator, "Order NB-1042")
    assert "Shipped" in whatsapp_text(status) and "https://track.example/NB-1042" in whatsapp_text(status)
    more = whatsapp_waits_for(simulator, "Anything else I can help with?")
    assert more["interactive"]["type"] == "button"  # three options: reply buttons
    assert [b["reply"]["title"] for b in more["interactive"]["action"]["buttons"]] == [
        "No, that's all",
        "Talk to someone",
        "Main menu",
    ]
    whatsapp_says(simulator, reply={"type": "button_reply", "id": "person", "title": "Talk to someone"})

    conversation = assigned(conversation_of(channel).pk)
    assert (conversation.team.name, conversation.assignee) == ("Orders", agents["Orders"])


def test_a_waiting_menu_outlives_a_restart_of_the_worker(grocery, simulator, restartable_worker):
    whatsapp_says(simulator, "hi")
    whatsapp_waits_for(simulator, "welcome to Nile Basket")
    run = wait_until("the run to wait", lambda: Run.objects.filter(state="waiting").first())

    restartable_worker.restart()

    run.refresh_from_db()
    assert (run.state, run.step, run.waiting["for"]) == ("waiting", "menu", "choice")
    whatsapp_says(simulator, "4")  # the menu's fourth option, typed
    whatsapp_waits_for(simulator, "Please send your order number")
    whatsapp_says(simulator, "+20 100 123 4567")
    whatsapp_waits_for(simulator, "Order NB-1042")
    run.refresh_from_db()
    assert (run.step, run.variables["lookup"]) == ("after_status", "+201001234567")


def test_a_menu_nobody_answers_takes_its_timeout_branch(grocery, simulator):
    ws, channel = grocery.workspace, grocery.channel
    # The published menu waits an hour; this one times out after two seconds, so the worker's own
    # timer task (queued with an ETA when the menu went out) fires during the test.
    version = WorkflowVersion.objects.get(workflow__workspace=ws, workflow__name="Welcome menu")
    menu = next(step for step in version.definition["steps"] if step["key"] == "menu")
    menu["settings"]["timeout_minutes"] = 0.03
    version.save(update_fields=["definition"])

    whatsapp_says(simulator, "hi")
    whatsapp_waits_for(simulator, "welcome to Nile Basket")

    whatsapp_waits_for(simulator, "No rush — whenever you're ready")
    conversation = wait_until(
        "the conversation to close", lambda: Conversation.objects.filter(channel=channel, status="closed").first()
    )
    assert conversation.closing_summary == "No topic chosen; closed by the bot after an hour"
    assert Run.objects.get(workflow__name="Welcome menu").state == "done"


# Journey 2: operations, suppliers and couriers (Telegram) --------------------------------------


def test_a_courier_taps_once_on_telegram_and_goes_straight_to_the_least_busy_dispatcher(
    live_server_process, celery_worker_process, simulator
):
    ws = workspace("operations", timezone_name="Africa/Cairo")
    busy, free = agent(ws), agent(ws)
    team(ws, "Couriers", busy, free)
    team(ws, "Suppliers", agent(ws))
    import_journey(ws, "operations_partners.json")
    channel = telegram(ws, simulator, live_server_process)
    other = contact_resolve(channel=channel, external_id="5550001", name="Another courier")
    Conversation.objects.create(workspace=ws, contact=other, channel=channel, assignee=busy, status="open")

    telegram_says(simulator, "Salam, pickup at the Maadi hub")

    menu = telegram_waits_for(simulator, "Are you a supplier or a courier?")
    keyboard = menu["reply_markup"]["inline_keyboard"]
    assert keyboard == [
        [{"text": "🏭 Supplier", "callback_data": "supplier"}],
        [{"text": "🛵 Courier", "callback_data": "courier"}],
    ]

    telegram_says(simulator, choice="courier")

    conversation = assigned(Conversation.objects.exclude(contact=other).get(channel=channel).pk)
    assert (conversation.team.name, conversation.assignee) == ("Couriers", free)
    telegram_waits_for(simulator, "from dispatch is with you")
    asked = Message.objects.filter(conversation=conversation, sender_kind="bot", kind="interactive").count()
    assert asked == 1  # the menu; a courier is asked nothing else


# Journey 3: electronics retailer, three languages (Messenger, email) ---------------------------


@pytest.fixture
def electronics(live_server_process, celery_worker_process, simulator):
    ws = workspace("electronics", timezone_name="Asia/Hong_Kong")
    care, repairs, sales = agent(ws), agent(ws), agent(ws)
    team(ws, "Customer care", care)
    team(ws, "Repairs", repairs)
    team(ws, "Business sales", sales)
    import_journey(ws, "electronics_retailer.json")
    load_faq(ws, "electronics.json")
    return Shop(ws, {"Customer care": care, "Repairs": repairs, "Business sales": sales})


def test_a_messenger_customer_picks_traditional_chinese_and_a_repair_reaches_a_technician(
    electronics, simulator, live_server_process
):
    ws, agents = electronics.workspace, electronics.agents
    channel = messenger(ws, simulator, live_server_process)
    messenger_says(simulator, channel, "hi")

    languages = messenger_waits_for(simulator, channel, "Please choose your language")
    assert [(r["title"], r["payload"]) for r in languages["quick_replies"]] == [
        ("English", "en"),
        ("繁體中文", "zh-hant"),
        ("简体中文", "zh-hans"),
    ]
    messenger_says(simulator, channel, choice=("zh-hant", "繁體中文"))

    topics = messenger_waits_for(simulator, channel, "請問今天有甚麼可以幫到您？")
    assert [r["title"] for r in topics["quick_replies"]][:4] == [
        "查詢常見問題",
        "門市及營業時間",
        "保養及退貨",
        "維修服務",
    ]
    messenger_says(simulator, channel, choice=("repair", "維修服務"))
    messenger_waits_for(simulator, channel, "請告訴我們需要維修的產品")
    messenger_says(simulator, channel, "iPhone 15 Pro 個 mon 裂咗，觸控失靈")

    conversation = assigned(conversation_of(channel).pk)
    assert (conversation.team.name, conversation.assignee) == ("Repairs", agents["Repairs"])
    messenger_waits_for(simulator, channel, "維修中心的")
    assert conversation.contact.language == "zh-hant"
    assert "repair" in set(conversation.tags.values_list("name", flat=True))


def test_an_email_customer_gets_numbered_menus_and_a_simplified_chinese_faq_answer(
    electronics, simulator, live_server_process
):
    ws = electronics.workspace
    channel = mailbox(ws, simulator, live_server_process)
    mail_says(simulator, "您好")

    languages = mail_waits_for(simulator, "Please choose your language")
    assert "1. English\n2. 繁體中文\n3. 简体中文" in languages
    mail_says(simulator, "3")

    topics = mail_waits_for(simulator, "请问今天有什么可以帮您？")
    assert "1. 查询常见问题" in topics and "4. 维修服务" in topics
    mail_says(simulator, "1")
    mail_waits_for(simulator, "请输入您的问题")
    mail_says(simulator, "保修期是多久？")

    mail_waits_for(simulator, "所有产品均享有原厂保修")
    follow_up = mail_waits_for(simulator, "这个回答对您有帮助吗？")
    assert "1. 是，谢谢" in follow_up
    run = Run.objects.get(conversation__channel=channel)
    assert (run.variables["language"], run.variables["intent"]) == ("zh-hans", "warranty")


# Journey 4: marketplace first line, free text in Russian and English (Telegram, WhatsApp) --------


@pytest.fixture
def marketplace(live_server_process, celery_worker_process, simulator):
    ws = workspace("marketplace", language="ru", timezone_name="Europe/Moscow")
    support, delivery = agent(ws), agent(ws)
    team(ws, "Поддержка", support)
    team(ws, "Доставка", delivery)
    import_journey(ws, "marketplace_first_line.json")
    load_faq(ws, "marketplace.json")
    return Shop(ws, {"Поддержка": support, "Доставка": delivery})


def test_a_russian_question_is_answered_from_the_order_system_and_the_customer_reaches_a_person(
    marketplace, simulator, live_server_process
):
    ws, agents = marketplace.workspace, marketplace.agents
    channel = telegram(ws, simulator, live_server_process)
    marina = contact_resolve(channel=channel, external_id=str(tg.USER_ID), name="Марина Соколова")
    order_upsert(workspace_id=ws.pk, data={"external_id": "48213977", "status": "shipped"}, contact=marina)

    telegram_says(simulator, "Здравствуйте! Где мой заказ?", name="Марина Соколова")

    telegram_waits_for(simulator, "Сейчас посмотрю ваш заказ")
    telegram_waits_for(simulator, "Заказ № 48213977 уже в пути")
    telegram_waits_for(simulator, "Могу помочь чем-то ещё?")
    telegram_says(simulator, "а когда вернут деньги за отменённую куртку?")
    telegram_waits_for(simulator, "Деньги возвращаются тем же способом")
    follow_up = telegram_waits_for(simulator, "Это ответ на ваш вопрос?")
    assert [row[0]["text"] for row in follow_up["reply_markup"]["inline_keyboard"]] == [
        "Да, спасибо",
        "Нет, нужен оператор",
    ]

    telegram_says(simulator, "Соедините меня с человеком, пожалуйста")

    conversation = assigned(conversation_of(channel).pk)
    assert (conversation.team.name, conversation.assignee) == ("Поддержка", agents["Поддержка"])
    telegram_waits_for(simulator, "Соединяю с оператором")
    run = Run.objects.get(conversation=conversation)
    assert (run.state, run.outcome) == ("handed_over", "the customer asked for a person")
    note = conversation.messages.filter(kind="event", payload__action="bot_note").last()
    assert "intent: refund_timing" in note.text  # the context the agent starts from


def test_an_english_question_is_answered_in_english_and_operator_reaches_a_person(
    marketplace, simulator, live_server_process
):
    ws, agents = marketplace.workspace, marketplace.agents
    channel = whatsapp(ws, simulator, live_server_process)

    whatsapp_says(simulator, "Hi, how do I return a jacket that doesn't fit?")

    whatsapp_waits_for(simulator, "You can return an item within 14 days")
    follow_up = whatsapp_waits_for(simulator, "Did this answer your question?")
    assert [b["reply"]["title"] for b in follow_up["interactive"]["action"]["buttons"]] == [
        "Yes, thanks",
        "No, a person please",
    ]
    whatsapp_says(simulator, "operator please")

    conversation = assigned(conversation_of(channel).pk)
    assert (conversation.team.name, conversation.assignee) == ("Поддержка", agents["Поддержка"])
    whatsapp_waits_for(simulator, "Connecting you with a person")
    assert Run.objects.get(conversation=conversation).variables["language"] == "en"


# Engine edges the journeys found --------------------------------------------------------------------


def bot_texts(conversation_id: int) -> list[str]:
    messages = Message.objects.filter(conversation_id=conversation_id, sender_kind="bot").order_by("id")
    return list(messages.values_list("text", flat=True))


def run_finished(conversation_id: int) -> Run:
    return wait_until(
        "the run to end",
        lambda: Run.objects.filter(conversation_id=conversation_id).exclude(state__in=Run.ACTIVE).first(),
    )


def test_a_customer_queued_by_a_route_step_stays_in_that_teams_queue(grocery, simulator):
    channel, agents = grocery.channel, grocery.agents
    AgentStatus.objects.filter(membership=agents["Products"]).update(status="offline")
    whatsapp_says(simulator, "hi")
    whatsapp_waits_for(simulator, "welcome to Nile Basket")

    whatsapp_says(simulator, reply={"type": "list_reply", "id": "products", "title": "Product questions"})

    whatsapp_waits_for(simulator, "You're number 1 in line")
    conversation = Conversation.objects.get(pk=run_finished(conversation_of(channel).pk).conversation_id)
    assert (conversation.team.name, conversation.assignee_id) == ("Products", None)
    assert conversation.queued_at is not None


def test_a_customer_given_to_an_agent_is_told_so_once(grocery, simulator):
    channel = grocery.channel
    whatsapp_says(simulator, "hi")
    whatsapp_waits_for(simulator, "welcome to Nile Basket")

    whatsapp_says(simulator, reply={"type": "list_reply", "id": "order", "title": "Place an order"})

    conversation = assigned(conversation_of(channel).pk)
    run_finished(conversation.pk)
    assert bot_texts(conversation.pk)[1:] == [
        f"Great! {conversation.assignee.user.username} will take your order. Send us the items you'd like, the "
        "quantities and your delivery area."
    ]


def test_a_tapped_no_after_a_delivery_answer_goes_to_the_delivery_team(marketplace, simulator, live_server_process):
    ws, agents = marketplace.workspace, marketplace.agents
    channel = telegram(ws, simulator, live_server_process)
    telegram_says(simulator, "Как поменять адрес доставки?")
    telegram_waits_for(simulator, "Это ответ на ваш вопрос?")

    telegram_says(simulator, choice="no")

    conversation = assigned(conversation_of(channel).pk)
    assert (conversation.team.name, conversation.assignee) == ("Доставка", agents["Доставка"])


def test_a_first_message_asking_for_a_person_hands_over_at_once(grocery, simulator):
    channel = grocery.channel

    whatsapp_says(simulator, "I need to talk to a person please")

    conversation = conversation_of(channel)
    wait_until("the bot's first answer", lambda: bot_texts(conversation.pk))
    assert "Connecting you with a person" in bot_texts(conversation.pk)[0]


# A worker that can be restarted ---------------------------------------------------------------


class RestartableWorker:
    """The suite's Celery worker, which a test may stop and replace with a fresh process (as a
    deploy or a crash does); the replacement serves the rest of the session."""

    def __init__(self, process, env, logs):
        self.process, self.env, self.logs, self.replaced = process, env, logs, False

    def restart(self) -> None:
        _stop(self.process)  # SIGTERM: the worker finishes its task and exits
        log = self.logs.mktemp("celery-restarted") / "worker.log"
        command = [str(BIN / "celery"), "--app", "config", "worker", "--pool", "solo", "--loglevel", "INFO"]
        command += ["--without-gossip", "--without-mingle", "--queues", self.env["CELERY_QUEUE"]]
        self.process, self.replaced = _spawn(command, self.env, log), True
        _wait_for(lambda: " ready." in log.read_text(), 60, "the restarted celery worker", log)

    def stop(self) -> None:
        if self.replaced:
            _stop(self.process)


@pytest.fixture(scope="session")
def restartable_worker(celery_worker_process, live_env, tmp_path_factory):
    worker = RestartableWorker(celery_worker_process, live_env, tmp_path_factory)
    yield worker
    worker.stop()
