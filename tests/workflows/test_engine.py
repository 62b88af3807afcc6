"""The workflow engine, step by step, driven the way the worker drives it: a customer's message is
stored by the inbound pipeline, then `conversation_advance` feeds it to the conversation's run.
(The journeys through the simulator, a real worker and every channel are in test_journeys.py.)"""

import itertools
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from apps.connectors.base import InboundMessage
from apps.connectors.models import Channel
from apps.conversations.models import Conversation, Message, Notification
from apps.conversations.services.actions import conversation_close
from apps.conversations.services.messages import inbound_message_apply, message_send
from apps.core.exceptions import Conflict, NotFound
from apps.workflows import services
from apps.workflows.definition import workflow_import
from apps.workflows.models import BotSettings, FaqEntry, Run, RunLog
from apps.workspaces.models import AgentStatus, Role
from tests.factories import make_member, make_shift, make_team, make_workspace

pytestmark = pytest.mark.django_db

_ids = itertools.count(1)


@pytest.fixture
def workspace():
    return make_workspace(slug="grocer")


@pytest.fixture
def channel(workspace):
    return Channel.objects.create(workspace=workspace, kind="webchat", name="Shop chat")


def say(channel, text="", *, choice=None, sender="cust-1"):
    """The customer writes (or taps an option); the engine takes it as the worker would."""
    kind, payload = ("interactive", {"reply_id": choice, "title": text}) if choice else ("text", {})
    inbound = InboundMessage(
        provider_id=f"in-{next(_ids)}",
        sender_id=sender,
        timestamp=timezone.now(),
        kind=kind,
        text=text,
        sender_name="Amira Hassan",
        payload=payload,
    )
    before = Conversation.objects.filter(channel=channel).values_list("status", flat=True).first()
    message = inbound_message_apply(channel=channel, inbound=inbound)
    opened = before in (None, Conversation.Status.CLOSED) and message.conversation.status == "open"
    services.conversation_advance(
        conversation_id=message.conversation_id,
        opened_message_id=message.id if opened else None,
        message_id=message.id,
    )
    return message.conversation


def bot_said(conversation) -> list[Message]:
    return list(conversation.messages.filter(sender_kind=Message.Sender.BOT).order_by("id"))


def last_bot(conversation) -> Message:
    return bot_said(conversation)[-1]


MENU = {
    "name": "Support menu",
    "trigger": "conversation_opened",
    "handover_team": "Support",
    "steps": [
        {
            "key": "menu",
            "kind": "menu",
            "settings": {
                "text": {"en": "Hi {{contact.first_name}}! How can we help?", "ru": "Здравствуйте! Чем помочь?"},
                "options": [
                    {"id": "products", "title": {"en": "Product questions", "ru": "Вопрос о товаре"}, "next": "route"},
                    {"id": "status", "title": {"en": "Order status", "ru": "Статус заказа"}, "next": "ask_order"},
                ],
                "timeout_minutes": 30,
                "timeout": "bye",
            },
        },
        {
            "key": "ask_order",
            "kind": "ask",
            "settings": {"text": "Your order number or phone?", "input": "order_or_phone", "save_as": "lookup"},
            "next": "lookup",
        },
        {
            "key": "lookup",
            "kind": "order_lookup",
            "settings": {"from": "vars.lookup", "not_found": "unknown"},
            "next": "tell",
        },
        {"key": "tell", "kind": "message", "settings": {"text": "Order {{order.number}} is {{order.status}}."}},
        {"key": "unknown", "kind": "message", "settings": {"text": "We could not find that order."}, "next": "route"},
        {"key": "route", "kind": "route", "settings": {"team": "Support"}},
        {"key": "bye", "kind": "message", "settings": {"text": "Write any time!"}},
    ],
}


@pytest.fixture
def support(workspace):
    agent = make_member(workspace, Role.AGENT)
    AgentStatus.objects.update_or_create(
        membership=agent, defaults={"workspace": workspace, "status": "online", "capacity": 3}
    )
    team = make_team(workspace, name="Support", members=[agent])
    for day in range(7):
        make_shift(team, weekday=day, starts_at="00:00", ends_at="00:00")
    return team, agent


def test_a_new_conversation_gets_the_menu_in_the_customers_name(workspace, channel, support):
    workflow_import(workspace=workspace, definition=MENU)
    conversation = say(channel, "hello")
    menu = last_bot(conversation)
    assert menu.kind == "interactive"
    assert menu.text == "Hi Amira! How can we help?"
    assert [o["id"] for o in menu.payload["options"]] == ["products", "status"]
    run = Run.objects.get(conversation=conversation)
    assert (run.state, run.step, run.waiting["for"]) == ("waiting", "menu", "choice")


def test_a_tapped_option_routes_to_the_team_and_an_agent(workspace, channel, support):
    team, agent = support
    workflow_import(workspace=workspace, definition=MENU)
    conversation = say(channel, "hello")
    conversation = say(channel, "Product questions", choice="products")
    conversation.refresh_from_db()
    assert (conversation.team, conversation.assignee) == (team, agent)
    run = Run.objects.get(conversation=conversation)
    assert run.state == "handed_over"
    assert run.variables["menu"] == "products"


@pytest.mark.parametrize("typed", ["2", "order status", "Order Status", "my order status please"])
def test_an_option_can_be_typed_as_its_number_or_title(workspace, channel, support, typed):
    workflow_import(workspace=workspace, definition=MENU)
    conversation = say(channel, "hello")
    conversation = say(channel, typed)
    assert last_bot(conversation).text == "Your order number or phone?"


def test_order_status_answers_from_the_order_system(workspace, channel, support):
    from apps.contacts.services import order_upsert

    order_upsert(workspace_id=workspace.pk, data={"external_id": "NB-1042", "status": "shipped"})
    workflow_import(workspace=workspace, definition=MENU)
    conversation = say(channel, "hello")
    say(channel, "Order status", choice="status")
    say(channel, "the blue one")  # neither an order number nor a phone: asked again
    assert bot_said(conversation)[-2].text.startswith("Sorry")
    say(channel, "it's order nb-1042")
    assert last_bot(conversation).text == "Order NB-1042 is Shipped."
    assert Run.objects.get(conversation=conversation).state == "done"


def test_a_wrong_answer_is_asked_again_then_the_customer_goes_to_a_person(workspace, channel, support):
    _team, agent = support
    workflow_import(workspace=workspace, definition=MENU)
    conversation = say(channel, "hello")
    for _ in range(3):
        say(channel, "purple elephant")
    conversation.refresh_from_db()
    assert Run.objects.get(conversation=conversation).state == "handed_over"
    assert conversation.assignee == agent


@pytest.mark.parametrize("words", ["operator please", "Оператор", "хочу поговорить с человеком"])
def test_the_customer_reaches_a_person_at_any_step_in_english_or_russian(workspace, channel, support, words):
    _team, agent = support
    workflow_import(workspace=workspace, definition=MENU)
    conversation = say(channel, "hello")
    say(channel, "Order status", choice="status")
    say(channel, words)
    conversation.refresh_from_db()
    run = Run.objects.get(conversation=conversation)
    assert run.state == "handed_over"
    assert "asked for a person" in run.outcome
    assert conversation.assignee == agent
    note = conversation.messages.filter(kind="event", payload__action="bot_note").last()
    assert "Handed over by Support menu" in note.text


def test_a_menu_that_gets_no_answer_takes_its_timeout_branch(workspace, channel, support):
    workflow_import(workspace=workspace, definition=MENU)
    conversation = say(channel, "hello")
    run = Run.objects.get(conversation=conversation)
    services.run_resume(run_id=run.pk, now=timezone.now() + timedelta(minutes=5))  # not yet due
    assert Run.objects.get(pk=run.pk).step == "menu"
    services.runs_resume_due(now=timezone.now() + timedelta(minutes=31))  # beat's sweep
    assert last_bot(conversation).text == "Write any time!"
    assert Run.objects.get(pk=run.pk).state == "done"


def test_a_run_finishes_on_the_version_it_started_with(workspace, channel, support):
    workflow_import(workspace=workspace, definition=MENU)
    conversation = say(channel, "hello")
    changed = {**MENU, "steps": [{**MENU["steps"][0], "settings": {**MENU["steps"][0]["settings"], "text": "New!"}}]}
    changed["steps"] += MENU["steps"][1:]
    changed["steps"][-1] = {"key": "bye", "kind": "message", "settings": {"text": "Changed goodbye"}}
    workflow_import(workspace=workspace, definition=changed)
    services.runs_resume_due(now=timezone.now() + timedelta(minutes=31))
    assert last_bot(conversation).text == "Write any time!"


def test_a_duplicate_advance_takes_each_message_once(workspace, channel, support):
    workflow_import(workspace=workspace, definition=MENU)
    conversation = say(channel, "hello")
    for _ in range(3):
        services.conversation_advance(conversation_id=conversation.pk)
    assert len(bot_said(conversation)) == 1
    assert Run.objects.filter(conversation=conversation).count() == 1


def test_a_loop_stops_at_the_step_budget_and_hands_over(workspace, channel, support):
    looping = {
        "name": "Loop",
        "trigger": "conversation_opened",
        "max_steps": 10,
        "steps": [
            {"key": "a", "kind": "note", "settings": {"text": "a"}, "next": "b"},
            {"key": "b", "kind": "jump", "settings": {"to": "a"}},
        ],
    }
    workflow_import(workspace=workspace, definition=looping)
    conversation = say(channel, "hello")
    run = Run.objects.get(conversation=conversation)
    assert run.state == "handed_over"
    assert "budget" in run.outcome
    assert run.steps_taken == 10


def test_a_person_replying_stops_the_bot(workspace, channel, support):
    _team, agent = support
    workflow_import(workspace=workspace, definition=MENU)
    conversation = say(channel, "hello")
    message_send(conversation=conversation, author=agent.user, text="Hi, Nour here")
    assert Run.objects.get(conversation=conversation).state == "cancelled"
    say(channel, "2")  # no bot answers any more
    assert len(bot_said(conversation)) == 1


FAQ_BOT = {
    "name": "First line",
    "trigger": "conversation_opened",
    "steps": [
        {"key": "answer", "kind": "faq", "settings": {"not_matched": "sorry"}, "next": "done"},
        {"key": "sorry", "kind": "handover", "settings": {"text": "Let me find a colleague."}},
        {"key": "done", "kind": "close", "settings": {"summary": "Answered by FAQ: {{vars.intent}}"}},
    ],
}


def _faq(workspace):
    FaqEntry.objects.create(
        workspace=workspace,
        intent="refund_time",
        language="en",
        examples=["when will I get my money back", "how long does a refund take", "refund not received yet"],
        answer="Refunds reach your card within 5 to 7 working days.",
    )
    FaqEntry.objects.create(
        workspace=workspace,
        intent="refund_time",
        language="ru",
        examples=["когда вернут деньги", "сколько ждать возврат денег", "деньги не вернулись"],
        answer="Деньги вернутся на карту за 5–7 рабочих дней.",
    )


def test_the_faq_answers_asks_if_it_helped_and_closes(workspace, channel, support):
    _faq(workspace)
    workflow_import(workspace=workspace, definition=FAQ_BOT)
    conversation = say(channel, "When do I get my money back?")
    answer, follow_up = bot_said(conversation)
    assert answer.text.startswith("Refunds reach your card")
    assert follow_up.kind == "interactive"
    say(channel, "Yes, thanks", choice="yes")
    conversation.refresh_from_db()
    assert conversation.status == "closed"
    assert conversation.closing_summary == "Answered by FAQ: refund_time"


def test_the_faq_answers_in_russian_and_a_no_goes_to_a_person(workspace, channel, support):
    _faq(workspace)
    workflow_import(workspace=workspace, definition=FAQ_BOT)
    conversation = say(channel, "Когда мне вернут деньги?")
    answer, follow_up = bot_said(conversation)
    assert answer.text.startswith("Деньги вернутся")
    assert follow_up.payload["options"][1]["title"] == "Нет, нужен оператор"
    say(channel, "Нет, нужен оператор", choice="no")
    conversation.refresh_from_db()
    assert Run.objects.get(conversation=conversation).state == "handed_over"
    assert conversation.language == "" or conversation.language == "ru"


def test_an_unknown_question_falls_back_below_the_threshold(workspace, channel, support):
    _faq(workspace)
    workflow_import(workspace=workspace, definition=FAQ_BOT)
    conversation = say(channel, "Do you sell bicycles with a basket?")
    assert last_bot(conversation).text == "Let me find a colleague."
    run = Run.objects.get(conversation=conversation)
    assert run.state == "handed_over"


CSAT = {
    "name": "Survey",
    "trigger": "conversation_closed",
    "steps": [{"key": "rate", "kind": "csat", "settings": {}}],
}


def test_a_closed_conversation_asks_for_a_rating_stays_closed_and_alerts_on_a_low_score(workspace, channel, support):
    _team, agent = support
    supervisor = make_member(workspace, Role.SUPERVISOR)
    BotSettings.objects.create(workspace=workspace, csat_alert_below=2)
    workflow_import(workspace=workspace, definition=CSAT)
    conversation = say(channel, "my bread was stale")
    Conversation.objects.filter(pk=conversation.pk).update(assignee=agent)
    conversation.refresh_from_db()
    conversation_close(conversation=conversation, actor=agent.user, membership=agent)
    services.conversation_event(conversation_id=conversation.pk, trigger="conversation_closed", details={})
    ask = last_bot(conversation)
    assert ask.kind == "interactive" and len(ask.payload["options"]) == 5
    say(channel, "1 ⭐", choice="csat-1")
    say(channel, "Nobody answered for an hour")
    conversation.refresh_from_db()
    assert conversation.status == "closed"
    assert (conversation.csat_score, conversation.csat_comment) == (1, "Nobody answered for an hour")
    assert conversation.csat_agent == agent
    assert Notification.objects.filter(recipient=supervisor, kind="csat_low", conversation=conversation).count() == 1
    assert last_bot(conversation).text == "Thank you for your feedback!"


def test_every_step_is_logged_for_the_admin_and_the_drop_off_figures(workspace, channel, support):
    from apps.workflows.selectors import step_drop_off

    workflow_import(workspace=workspace, definition=MENU)
    conversation = say(channel, "hello")
    say(channel, "Product questions", choice="products")
    run = Run.objects.get(conversation=conversation)
    steps = list(RunLog.objects.filter(run=run).values_list("step", "outcome"))
    assert ("menu", "asked") in steps and ("menu", "chose products") in steps
    figures = {row["step"]: row for row in step_drop_off(workflow=run.workflow)}
    assert figures["menu"]["reached"] == 1


# Calls out: the order system's status call, an escalation that waits for its answer ---------


class _Recorder(BaseHTTPRequestHandler):
    received: list = []
    answer = {"status": "out for delivery", "eta": "today 18:00"}
    code = 200

    def do_GET(self):
        self._reply()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        _Recorder.received.append(json.loads(self.rfile.read(length) or b"{}"))
        self._reply()

    def _reply(self):
        body = json.dumps(_Recorder.answer).encode()
        self.send_response(_Recorder.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def order_system():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.received, _Recorder.code = [], 200
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _http_bot(url):
    return {
        "name": "Status call",
        "trigger": "conversation_opened",
        "steps": [
            {
                "key": "call",
                "kind": "http",
                "settings": {
                    "method": "GET",
                    "url": url + "/orders/status?contact={{contact.id}}",
                    "map": {"state": "status", "eta": "json.eta"},
                    "failure": "oops",
                },
                "next": "tell",
            },
            {"key": "tell", "kind": "message", "settings": {"text": "Your order is {{vars.state}}, {{vars.eta}}."}},
            {
                "key": "oops",
                "kind": "message",
                "settings": {"text": "Our order system is down ({{vars.http_error}})."},
            },
        ],
    }


def test_an_http_step_maps_the_json_answer_into_the_reply(workspace, channel, support, order_system):
    workflow_import(workspace=workspace, definition=_http_bot(order_system))
    conversation = say(channel, "where is my order")
    assert last_bot(conversation).text == "Your order is out for delivery, today 18:00."


def test_an_http_step_that_fails_takes_its_failure_branch(workspace, channel, support, order_system):
    _Recorder.code = 503
    workflow_import(workspace=workspace, definition=_http_bot(order_system))
    conversation = say(channel, "where is my order")
    assert last_bot(conversation).text == "Our order system is down (HTTP 503)."


def test_an_escalation_waits_pending_for_the_sellers_answer(workspace, channel, support, order_system):
    escalation = {
        "name": "Ask the seller",
        "trigger": "conversation_opened",
        "steps": [
            {
                "key": "seller",
                "kind": "notify",
                "settings": {
                    "via": "webhook",
                    "url": order_system + "/escalations",
                    "text": "Customer {{contact.name}} asks: {{vars.message}}",
                    "wait_for_reply": True,
                    "timeout_minutes": 120,
                    "timeout": "late",
                },
                "next": "answer",
            },
            {"key": "answer", "kind": "message", "settings": {"text": "The seller says: {{vars.reply.text}}"}},
            {"key": "late", "kind": "handover", "settings": {}},
        ],
    }
    workflow_import(workspace=workspace, definition=escalation)
    conversation = say(channel, "Is the blue kettle compatible with 110V?")
    conversation.refresh_from_db()
    assert conversation.status == "pending"
    sent = _Recorder.received[0]
    assert sent["text"] == "Customer Amira Hassan asks: Is the blue kettle compatible with 110V?"
    token = sent["callback_url"].rstrip("/").rsplit("/", 1)[1]
    services.run_callback(token=token, data={"text": "Yes, 110-240V."})
    conversation.refresh_from_db()
    assert conversation.status == "open"
    assert last_bot(conversation).text == "The seller says: Yes, 110-240V."
    with pytest.raises(NotFound):
        services.run_callback(token=token, data={"text": "again"})


# Branches, contact updates, languages, media, chained workflows --------------------------------


def test_branches_update_the_contact_and_send_media_in_the_chosen_language(workspace, channel, support):
    definition = {
        "name": "Languages",
        "trigger": "conversation_opened",
        "steps": [
            {
                "key": "pick",
                "kind": "menu",
                "settings": {
                    "text": "Language? / 語言？",
                    "options": [{"id": "en", "title": "English"}, {"id": "zh-hant", "title": "繁體中文"}],
                    "save_as": "lang",
                },
                "next": "set",
            },
            {"key": "set", "kind": "set_language", "settings": {"from": "vars.lang"}, "next": "tag"},
            {
                "key": "tag",
                "kind": "update_contact",
                "settings": {"add_tags": ["hk"], "set": {"fields.source": "bot"}, "priority": "high"},
                "next": "which",
            },
            {
                "key": "which",
                "kind": "branch",
                "settings": {
                    "rules": [
                        {"if": "language", "op": "equals", "value": "zh-hant", "next": "zh"},
                        {"if": "contact.tags", "op": "contains", "value": "vip", "next": "vip"},
                    ],
                    "else": "vip",
                },
            },
            {
                "key": "zh",
                "kind": "message",
                "settings": {
                    "text": {"en": "Our catalogue", "zh-hant": "我們的產品目錄"},
                    "media_url": "https://shop.example/catalogue.pdf",
                    "filename": "catalogue.pdf",
                    "mime_type": "application/pdf",
                },
                "next": "other",
            },
            {"key": "vip", "kind": "message", "settings": {"text": "VIP"}},
            {"key": "other", "kind": "start_workflow", "settings": {"workflow": "Goodbye"}},
        ],
    }
    goodbye = {
        "name": "Goodbye",
        "trigger": "api",
        "steps": [{"key": "bye", "kind": "message", "settings": {"text": {"en": "Bye", "zh-hant": "再見"}}}],
    }
    from apps.contacts.models import CustomFieldDefinition

    CustomFieldDefinition.objects.create(workspace=workspace, key="source", label="Source", type="text")
    workflow_import(workspace=workspace, definition=goodbye)
    workflow_import(workspace=workspace, definition=definition)
    conversation = say(channel, "hi")
    say(channel, "繁體中文")
    conversation.refresh_from_db()
    contact = conversation.contact
    assert (conversation.language, contact.language, conversation.priority) == ("zh-hant", "zh-hant", "high")
    assert list(contact.tags.values_list("name", flat=True)) == ["hk"]
    assert contact.custom_fields["source"] == "bot"
    media, bye = bot_said(conversation)[-2:]
    assert (media.kind, media.text, media.payload["media_url"]) == (
        "media",
        "我們的產品目錄",
        "https://shop.example/catalogue.pdf",
    )
    assert bye.text == "再見"
    assert list(Run.objects.filter(conversation=conversation).values_list("workflow__name", "state")) == [
        ("Goodbye", "done"),
        ("Languages", "done"),
    ] or sorted(Run.objects.filter(conversation=conversation).values_list("workflow__name", "state")) == [
        ("Goodbye", "done"),
        ("Languages", "done"),
    ]


# Triggers: keywords, tags, orders, schedules, the API -----------------------------------------


def test_a_keyword_starts_its_workflow_only_while_no_person_has_the_conversation(workspace, channel, support):
    _team, agent = support
    keyword = {
        "name": "Refunds",
        "trigger": "message",
        "trigger_settings": {"keywords": ["refund", "возврат"]},
        "steps": [{"key": "say", "kind": "message", "settings": {"text": "Refunds take 5 days."}}],
    }
    workflow_import(workspace=workspace, definition=keyword)
    conversation = say(channel, "hello")
    assert bot_said(conversation) == []
    say(channel, "I want a refund")
    assert last_bot(conversation).text == "Refunds take 5 days."
    Conversation.objects.filter(pk=conversation.pk).update(assignee=agent)
    say(channel, "refund again?")
    assert len(bot_said(conversation)) == 1


def test_a_tag_an_order_event_and_a_schedule_start_their_workflows(workspace, channel, support):
    from apps.contacts.models import Tag
    from apps.contacts.services import contact_tags_change, order_upsert

    conversation = say(channel, "hello")
    for name, trigger, settings in [
        ("VIP welcome", "tag_added", {"tag": "vip"}),
        ("Shipped", "order_event", {"statuses": ["shipped"]}),
        ("Nudge", "schedule", {"every_minutes": 60, "status": "open", "idle_minutes": 30}),
    ]:
        text = {"Shipped": "Order {{order.number}} is {{order.status}}!"}.get(name, name)
        workflow_import(
            workspace=workspace,
            definition={
                "name": name,
                "trigger": trigger,
                "trigger_settings": settings,
                "steps": [{"key": "say", "kind": "message", "settings": {"text": text}}],
            },
        )
    contact = conversation.contact
    with_tags = Tag.objects.create(workspace=workspace, name="vip")
    contact_tags_change(contact=contact, add=[with_tags])
    services.conversation_event(conversation_id=conversation.pk, trigger="tag_added", details={"tag": "vip"})
    assert last_bot(conversation).text == "VIP welcome"
    order_upsert(workspace_id=workspace.pk, data={"external_id": "A-7", "status": "shipped"}, contact=contact)
    services.conversation_event(
        conversation_id=conversation.pk,
        trigger="order_event",
        details={"status": "shipped", "order": {"number": "A-7"}},
    )
    assert last_bot(conversation).text == "Order A-7 is Shipped!"
    Conversation.objects.filter(pk=conversation.pk).update(last_message_at=timezone.now() - timedelta(hours=2))
    assert services.schedules_run(now=timezone.now()) == 1
    assert last_bot(conversation).text == "Nudge"
    assert services.schedules_run(now=timezone.now() + timedelta(minutes=1)) == 0  # not due again yet


def test_run_start_refuses_a_second_workflow_unless_replacing(workspace, channel, support):
    workflow_import(workspace=workspace, definition=MENU)
    other = workflow_import(
        workspace=workspace,
        definition={
            "name": "Other",
            "trigger": "shortcut",
            "trigger_settings": {"shortcut": "o"},
            "steps": [{"key": "a", "kind": "wait", "settings": {"minutes": 5}}],
        },
    )
    conversation = say(channel, "hello")
    with pytest.raises(Conflict):
        services.run_start(workflow=other, conversation=conversation)
    run = services.run_start(workflow=other, conversation=conversation, replace=True)
    assert run.state == "waiting"
    assert Run.objects.get(conversation=conversation, workflow__name="Support menu").state == "cancelled"


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("NB-1042", "NB-1042"),
        ("#nb-1042", "NB-1042"),
        ("заказ №48213977", "48213977"),
        ("my order number is 48213977 thanks", "48213977"),
        ("the blue one", None),
        ("12", None),
        ("orders 1234 and 5678", None),
    ],
)
def test_order_numbers_are_found_in_what_customers_type(typed, expected):
    from apps.workflows.steps import input_clean

    assert input_clean("order_number", typed) == expected


def test_a_first_message_asking_for_a_person_is_handed_over_without_the_menu(workspace, channel, support):
    _team, agent = support
    workflow_import(workspace=workspace, definition=MENU)
    conversation = say(channel, "I need to talk to an agent")
    conversation.refresh_from_db()
    assert conversation.assignee == agent
    assert [m.text for m in bot_said(conversation)] == ["Connecting you with a person. Please hold on."]
