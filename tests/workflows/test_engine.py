"""The workflow engine, step by step, driven the way the worker drives it: a customer's message is
stored by the inbound pipeline, then `conversation_advance` feeds it to the conversation's run.
(The journeys through the simulator, a real worker and every channel are in test_journeys.py.)"""

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.connectors.base import InboundMessage
from apps.connectors.models import Channel
from apps.conversations.models import Conversation, Message, Notification
from apps.conversations.services.actions import conversation_close
from apps.conversations.services.messages import inbound_message_apply, message_send
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
        conversation_id=message.conversation_id, opened_message_id=message.id if opened else None, message_id=message.id
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
        {"key": "lookup", "kind": "order_lookup", "settings": {"from": "vars.lookup", "not_found": "unknown"}, "next": "tell"},
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
    say(channel, "it's nb-1042")  # not an order number alone: asked again
    assert bot_said(conversation)[-2].text.startswith("Sorry")
    say(channel, "#NB-1042")
    assert last_bot(conversation).text == "Order NB-1042 is Shipped."
    assert Run.objects.get(conversation=conversation).state == "done"


def test_a_wrong_answer_is_asked_again_then_the_customer_goes_to_a_person(workspace, channel, support):
    team, agent = support
    workflow_import(workspace=workspace, definition=MENU)
    conversation = say(channel, "hello")
    for _ in range(3):
        say(channel, "purple elephant")
    conversation.refresh_from_db()
    assert Run.objects.get(conversation=conversation).state == "handed_over"
    assert conversation.assignee == agent


@pytest.mark.parametrize("words", ["operator please", "Оператор", "хочу поговорить с человеком"])
def test_the_customer_reaches_a_person_at_any_step_in_english_or_russian(workspace, channel, support, words):
    team, agent = support
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
    team, agent = support
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
    team, agent = support
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
    team, agent = support
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
