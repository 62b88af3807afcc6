"""The workflow engine: starts runs when their trigger fires, feeds them the customer's messages,
timers and callbacks, and applies what each step decides.

Everything a run does happens under its conversation's row lock (`select_for_update`), so two
workers handed messages of the same conversation take turns, and a message is taken once: the
conversation's `automation_cursor` is the last customer message the engine has seen. A run's
state (step, variables, what it waits for, its timer) is a row, so a run survives any restart;
timers are Celery tasks with an ETA, and beat's `workflows.timeouts` resumes any whose task was
lost. Calls out (an HTTP step, an escalation) happen after the transaction commits, and their
answer is applied under the lock again, only if the run still waits for it."""

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.analytics.services import event_record
from apps.conversations.models import Conversation, Message
from apps.core import netguard
from apps.core.exceptions import Conflict, DomainError, NotFound
from apps.workflows import steps
from apps.workflows.models import BotSettings, Run, RunLog, Trigger, Workflow, WorkflowVersion, callback_token
from apps.workflows.templating import localised, render

logger = logging.getLogger(__name__)

MAX_CHAIN = 5  # workflows starting workflows: a loop of them stops here
RUN_FIELDS = [
    "state",
    "step",
    "variables",
    "waiting",
    "timeout_at",
    "callback_token",
    "steps_taken",
    "outcome",
    "finished_at",
    "updated_at",
]


@dataclass
class Pending:
    """A call to make once the transaction has committed."""

    run_id: int
    step: str
    request: dict
    timeout_seconds: float


@dataclass
class Context:
    """What a step sees and may do: the run, its conversation, and the engine's helpers."""

    run: Run
    conversation: Conversation
    definition: dict
    now: datetime = field(default_factory=timezone.now)
    pending: list = field(default_factory=list)
    chained: str | None = None

    @property
    def workspace(self):
        return self.conversation.workspace

    @property
    def vars(self) -> dict:
        return self.run.variables

    @property
    def language(self) -> str:
        return self.vars.get("language") or self.workspace.default_language

    @property
    def region(self) -> str | None:
        return self.conversation.contact.country or None

    @property
    def sandbox(self) -> bool:
        return self.conversation.channel.kind == "sandbox"

    def set_var(self, name: str, value) -> None:
        self.run.variables[name] = value

    def template_context(self) -> dict:
        contact = self.conversation.contact
        name = contact.name or ""
        assignee = self.conversation.assignee
        return {
            "contact": {
                "id": contact.pk,
                "name": name,
                "first_name": name.split(" ")[0] if name else "",
                "phone": contact.phone,
                "email": contact.email,
                "language": contact.language,
                "lifecycle": contact.lifecycle_stage,
                "country": contact.country,
                "external_id": contact.external_id,
                "fields": contact.custom_fields,
            },
            "vars": self.vars,
            "order": self.vars.get("order") or {},
            "queue": self.vars.get("queue") or {},
            "team": self.vars.get("team") or {},
            "agent": {"name": _person(assignee.user) if assignee else ""},
            "workspace": {"name": self.workspace.name},
            "conversation": {"id": self.conversation.pk, "channel": self.conversation.channel.kind},
            "language": self.language,
        }

    def render(self, template: str) -> str:
        return render(template, self.template_context())

    def text(self, value) -> str:
        return self.render(localised(value, self.language, self.workspace.default_language))

    def send(self, text: str, *, options: list | None = None, button=None, media: dict | None = None) -> None:
        from apps.conversations.services.messages import message_send

        if not text and not options and not media:
            return
        kind, payload = Message.Kind.TEXT, {}
        if media and media.get("url"):
            # By link: the provider fetches it (WhatsApp's `link`, Telegram's URL); text is the caption.
            kind = Message.Kind.MEDIA
            payload = {"media_url": self.render(media["url"]), "mime_type": media.get("mime_type", "")}
            payload["filename"] = media.get("filename", "")
        elif options:
            kind, payload = Message.Kind.INTERACTIVE, {"options": options}
            if button:
                payload["button"] = self.text(button)[:20]
        try:
            message_send(
                conversation=self.conversation,
                text=text or ("" if media else "…"),
                kind=kind,
                payload=payload,
                sender_kind=Message.Sender.BOT,
            )
        except DomainError as error:  # the window closed, the channel's quota is spent
            self.log_line("send", "not sent", error.detail)

    def log_line(self, kind: str, outcome: str, detail: str = "") -> None:
        _log(self.run, self.run.step, kind, outcome, detail, self.conversation)

    def note(self, text: str) -> None:
        from apps.conversations.services.actions import _event

        if text.strip():
            _event(self.conversation, None, "bot_note", f"🤖 {text}", run_id=self.run.pk)

    # Steps that change the conversation or the contact ----------------------------------------

    def set_language(self, language: str) -> None:
        if not language:
            return
        self.set_var("language", language)
        Conversation.objects.filter(pk=self.conversation.pk).update(language=language)
        self.conversation.language = language
        contact = self.conversation.contact
        if contact.language != language:
            contact.language = language
            contact.save(update_fields=["language"])

    def update_contact(self, settings: dict) -> None:
        from apps.contacts.models import Tag
        from apps.contacts.services import contact_save, contact_tags_change

        contact = self.conversation.contact
        data: dict = {}
        for name, template in (settings.get("set") or {}).items():
            value = self.render(str(template))
            if name.startswith("fields."):
                data.setdefault("custom_fields", {})[name[7:]] = value
            elif name == "lifecycle":
                data["lifecycle_stage"] = value
            elif name in ("name", "email", "phone", "language", "country"):
                data[name] = value
        if data:
            try:
                contact_save(workspace_id=contact.workspace_id, contact=contact, data=data)
            except DomainError as error:
                self.log_line("update_contact", "refused", error.detail)
        workspace_id = self.conversation.workspace_id

        def tags(names):
            return [Tag.objects.get_or_create(workspace_id=workspace_id, name=str(n)[:60])[0] for n in names or []]

        if settings.get("add_tags") or settings.get("remove_tags"):
            contact_tags_change(
                contact=contact, add=tags(settings.get("add_tags")), remove=tags(settings.get("remove_tags"))
            )
        fields = {}
        if settings.get("priority") in Conversation.Priority.values:
            fields["priority"] = settings["priority"]
        if settings.get("category"):
            fields["category"] = str(settings["category"])[:60]
        if fields:
            Conversation.objects.filter(pk=self.conversation.pk).update(**fields)
            for name, value in fields.items():
                setattr(self.conversation, name, value)
        if settings.get("conversation_tags"):
            self.conversation.tags.add(*tags(settings["conversation_tags"]))
        if fields or settings.get("conversation_tags"):
            _publish_conversation(self.conversation)

    def team(self, name: str):
        from apps.workspaces.models import Team

        if not name:
            return None
        teams = Team.objects.filter(workspace_id=self.conversation.workspace_id)
        return teams.filter(name__iexact=name).first() or (teams.filter(pk=name).first() if name.isdigit() else None)

    def route(self, *, team_name: str, strategy: str, online_only: bool, respect_capacity: bool):
        from apps.workflows import routing

        team = self.team(team_name)
        if team is None:
            return None
        if self.sandbox:
            result = routing.RouteResult("assigned", None, None, None, False, None)
            self.note(f"Try-it: would route to team {team.name} ({strategy})")
        else:
            result = routing.conversation_route(
                conversation=self.conversation,
                team=team,
                strategy=strategy,
                online_only=online_only,
                respect_capacity=respect_capacity,
            )
        opens = result.opens_at.astimezone(self.workspace.tz).strftime("%a %H:%M") if result.opens_at else ""
        self.set_var("team", {"id": team.pk, "name": team.name, "opens_at": opens})
        self.set_var(
            "queue",
            {
                "position": result.position or 0,
                "wait_minutes": result.wait_minutes or 0,
                "busy": result.busy,
                "summary": f"{result.outcome} in {team.name}"
                + (f", number {result.position}" if result.position else ""),
            },
        )
        # Routing wrote the conversation under the same lock: read back what it changed.
        self.conversation.refresh_from_db(fields=["team", "assignee", "queued_at", "status"])
        return result

    def is_open(self, team_name: str) -> bool:
        from apps.workspaces.selectors import team_is_on_shift, workspace_is_open

        team = self.team(team_name)
        if team is not None:
            return team_is_on_shift(team=team, at=self.now)
        return workspace_is_open(workspace=self.workspace, at=self.now)

    def faq(self, text: str, *, threshold=None):
        from apps.workflows.matching import faq_match

        return faq_match(
            workspace_id=self.conversation.workspace_id, text=text, language=self.language, threshold=threshold
        )

    def count_resolved(self) -> None:
        self.set_var("resolved_by_bot", True)

    def record(self, kind: str, **data) -> None:
        """A fact for the analytics (an FAQ answer given or accepted)."""
        event_record(conversation=self.conversation, kind=kind, by="bot", **data)

    def order_find(self, value: str) -> dict | None:
        return order_variables(workspace=self.workspace, contact=self.conversation.contact, value=value)

    def escalation_data(self, *, with_callback: bool) -> dict:
        from django.conf import settings as django_settings

        data = {
            "conversation_id": self.conversation.pk,
            "contact": {"name": self.conversation.contact.name, "phone": self.conversation.contact.phone},
            "workflow": self.run.workflow.name,
            "variables": {k: v for k, v in self.vars.items() if k != "message"},
            "last_message": self.vars.get("message", ""),
        }
        if with_callback:
            if not self.run.callback_token:
                self.run.callback_token = callback_token()
            base = getattr(django_settings, "PUBLIC_URL", "").rstrip("/")
            data["callback_url"] = f"{base}/api/v1/workflow-callbacks/{self.run.callback_token}/"
        return data

    def set_pending(self, pending: bool) -> None:
        status = Conversation.Status.PENDING if pending else Conversation.Status.OPEN
        current = self.conversation.status
        if current == Conversation.Status.CLOSED or current == status:
            return
        if not pending and current != Conversation.Status.PENDING:
            return
        Conversation.objects.filter(pk=self.conversation.pk).update(status=status)
        self.conversation.status = status
        _publish_conversation(self.conversation)

    def close(self, *, category: str, summary: str) -> None:
        from apps.conversations.services.actions import conversation_close

        allowed = self.workspace.closing_categories
        if allowed and category not in allowed:
            category = ""
        try:
            conversation_close(
                conversation=self.conversation,
                actor=None,
                membership=None,
                category=category,
                summary=summary or "Resolved by the bot",
                from_run=self.run.pk,
            )
        except DomainError as error:
            self.log_line("close", "refused", error.detail)
            return
        self.conversation.status = Conversation.Status.CLOSED

    def csat_record(self, score: int, comment: str) -> None:
        from apps.conversations.services.actions import conversation_csat_record

        conversation_csat_record(conversation=self.conversation, score=score, comment=comment)

    def chain(self, name: str) -> bool:
        workflow = Workflow.objects.filter(
            workspace_id=self.conversation.workspace_id, name=name, enabled=True
        ).first()
        if workflow is None or self.vars.get("_chain", 0) >= MAX_CHAIN:
            return False
        self.chained = name
        return True


def order_variables(*, workspace, contact, value: str = "") -> dict | None:
    """An order as a bot's texts name it (`{{order.number}}`, `{{order.status}}`...): by its
    number, else the latest order of the customer with that phone, else the contact's latest."""
    from apps.contacts.models import Order
    from apps.contacts.services import _find_by_phone_or_email, order_payload

    orders = Order.objects.filter(workspace_id=workspace.pk)
    if value:
        order = orders.filter(external_id__iexact=value.lstrip("#")).first()
        if order is None and value.startswith("+"):
            owner = _find_by_phone_or_email(workspace, phone=value, email="")
            order = orders.filter(contact=owner).order_by("-placed_at", "-id").first() if owner else None
    else:
        order = orders.filter(contact=contact).order_by("-placed_at", "-id").first()
    if order is None:
        return None
    data = {key: item for key, item in order_payload(order).items() if isinstance(item, str | int | float | bool)}
    placed = order.placed_at.astimezone(workspace.tz).strftime("%d %b %Y") if order.placed_at else ""
    return {
        **data,
        "number": order.external_id,
        "status": str(order.get_status_display()),
        "status_code": order.status,
        "placed": placed,
    }


def _person(user) -> str:
    return (user.get_full_name() or user.username) if user else ""


def _publish_conversation(conversation: Conversation) -> None:
    from apps.conversations.services.messages import _publish_conversation as publish

    publish(conversation)


def _log(run: Run, step: str, kind: str, outcome: str, detail: str = "", conversation=None) -> None:
    """Each step a run takes goes to its run log (the admin, the drop-off figures) and to the
    conversation's timeline as a system event, so the agent who takes over sees what the bot did."""
    from apps.conversations.services.actions import _event

    RunLog.objects.create(
        workspace_id=run.workspace_id,
        run=run,
        workflow_id=run.workflow_id,
        version=run.version.number,
        step=step or "",
        kind=kind[:16],
        outcome=outcome[:40],
        detail=detail[:2000],
    )
    conversation = conversation or run.conversation
    text = f"🤖 {run.workflow.name} · {step or 'end'}: {outcome}" + (f" ({detail[:200]})" if detail else "")
    _event(conversation, None, "bot_step", text, run_id=run.pk, step=step, outcome=outcome[:40])


# Locks and lookups ---------------------------------------------------------------------------


def _locked_conversation(conversation_id: int) -> Conversation | None:
    return (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("contact", "channel", "workspace", "assignee__user")
        .filter(pk=conversation_id)
        .first()
    )


def _active_run(conversation: Conversation) -> Run | None:
    return (
        Run.objects.select_for_update(of=("self",))
        .select_related("version", "workflow")
        .filter(conversation=conversation, state__in=Run.ACTIVE)
        .first()
    )


def bot_settings(workspace_id: int) -> BotSettings:
    settings = BotSettings.objects.filter(workspace_id=workspace_id).first()
    return settings or BotSettings(workspace_id=workspace_id)


def _latest_version(workflow: Workflow) -> WorkflowVersion:
    version = workflow.versions.order_by("-number").first()
    if version is None:
        from apps.workflows.definition import workflow_publish

        version = workflow_publish(workflow=workflow)
    return version


# Starting --------------------------------------------------------------------------------------


def run_start(
    *,
    workflow: Workflow,
    conversation: Conversation,
    variables: dict | None = None,
    actor=None,
    replace: bool = False,
    allow_disabled: bool = False,
) -> Run:
    """Starts `workflow` on the conversation now (the API, an agent's shortcut, the try-it page).
    A conversation follows one workflow at a time: another one running is a Conflict unless
    `replace`, which cancels it."""
    if workflow.workspace_id != conversation.workspace_id:
        raise NotFound("No such workflow.")
    if not workflow.enabled and not allow_disabled:  # the try-it page plays drafts
        raise DomainError("This workflow is disabled.", code="workflow_disabled")
    run, pending = None, []
    with transaction.atomic():
        conversation = _locked_conversation(conversation.pk)
        active = _active_run(conversation)
        if active is not None:
            if not replace:
                raise Conflict(
                    f"The conversation already follows “{active.workflow.name}”; stop it first.", code="run_active"
                )
            _finish(active, Run.State.CANCELLED, f"replaced by {workflow.name}", publish=False)
        # Messages already in the conversation are not the new run's input.
        last = conversation.messages.filter(direction=Message.Direction.INBOUND).order_by("-id").first()
        if last is not None and last.id > conversation.automation_cursor:
            Conversation.objects.filter(pk=conversation.pk).update(automation_cursor=last.id)
        initial = {**(variables or {}), "started_by": getattr(actor, "username", "") or "api"}
        run = _start(workflow, conversation, initial, pending)
    _perform(pending)
    run.refresh_from_db()
    return run


def _start(
    workflow: Workflow, conversation: Conversation, variables: dict, pending: list, message=None, drive=True
) -> Run:
    version = _latest_version(workflow)
    language = (
        conversation.language
        or conversation.contact.language
        or _script_language(message.text if message is not None else "")
        or conversation.workspace.default_language
    )
    variables = {"language": language, **variables}
    if message is not None:
        variables["message"] = message.text or ""
    run = Run.objects.create(
        workspace_id=conversation.workspace_id,
        conversation=conversation,
        workflow=workflow,
        version=version,
        step=version.definition.get("start_step") or _first_step(version.definition),
        variables=variables,
    )
    Workflow.objects.filter(pk=workflow.pk).update(last_run_at=timezone.now())
    from apps.conversations.services.actions import _event

    _event(conversation, None, "bot_started", f"🤖 {workflow.name} started (v{version.number})", run_id=run.pk)
    _publish_conversation(conversation)  # the inbox shows the bot at work
    if drive:
        _drive(run, conversation, pending)
    return run


def _script_language(text: str) -> str:
    """A first guess from the letters a customer writes in (Cyrillic: Russian; Arabic script:
    Arabic), for a contact whose language nobody has set; a language step settles it."""
    letters = [ch for ch in text or "" if ch.isalpha()]
    if not letters:
        return ""
    if sum("\u0400" <= ch <= "\u04ff" for ch in letters) > len(letters) / 2:
        return "ru"
    if sum("\u0600" <= ch <= "\u06ff" for ch in letters) > len(letters) / 2:
        return "ar"
    return ""


def _first_step(definition: dict) -> str:
    steps_list = definition.get("steps") or []
    return steps_list[0]["key"] if steps_list else ""


def _trigger_matches(workflow: Workflow, conversation: Conversation, **facts) -> bool:
    settings = workflow.trigger_settings or {}
    channels = settings.get("channels") or []
    if channels and not {conversation.channel.kind, conversation.channel_id, str(conversation.channel_id)} & {
        c if isinstance(c, int) else str(c) for c in channels
    }:
        return False
    if workflow.trigger == Trigger.MESSAGE:
        return _message_matches(workflow, conversation, facts.get("text", ""))
    if workflow.trigger == Trigger.TAG_ADDED:
        return str(settings.get("tag", "")).lower() == str(facts.get("tag", "")).lower()
    if workflow.trigger == Trigger.ORDER_EVENT:
        statuses = settings.get("statuses") or []
        return not statuses or facts.get("status") in statuses
    return True


def _message_matches(workflow: Workflow, conversation: Conversation, text: str) -> bool:
    from apps.workflows.intents import normalise

    settings = workflow.trigger_settings or {}
    said = f" {normalise(text)} "
    if any(f" {normalise(str(word))} " in said for word in settings.get("keywords") or [] if normalise(str(word))):
        return True
    if settings.get("intent"):
        from apps.workflows.matching import faq_match

        decision = faq_match(workspace_id=conversation.workspace_id, text=text, language=conversation.language or None)
        return decision.intent == settings["intent"]
    return False


def _triggered(conversation: Conversation, trigger: str, **facts) -> Workflow | None:
    candidates = Workflow.objects.filter(workspace_id=conversation.workspace_id, trigger=trigger, enabled=True)
    for workflow in candidates.order_by("priority", "id"):
        if _trigger_matches(workflow, conversation, **facts):
            return workflow
    return None


# The customer's messages -----------------------------------------------------------------------


def conversation_advance(*, conversation_id: int, opened_message_id: int | None = None, message_id=None) -> int:
    """Feeds the conversation's new customer messages, oldest first, to its run, or starts the
    workflow they trigger. Returns how many messages were taken."""
    taken = 0
    while True:
        pending: list[Pending] = []
        with transaction.atomic():
            conversation = _locked_conversation(conversation_id)
            if conversation is None:
                return taken
            message = _next_message(conversation, opened_message_id or message_id)
            if message is None:
                return taken
            Conversation.objects.filter(pk=conversation.pk).update(automation_cursor=message.id)
            conversation.automation_cursor = message.id
            _take(conversation, message, opened=message.id == opened_message_id, pending=pending)
            taken += 1
        _perform(pending)


def _next_message(conversation: Conversation, kicked_id: int | None):
    inbound = conversation.messages.filter(direction=Message.Direction.INBOUND, id__gt=conversation.automation_cursor)
    if conversation.automation_cursor == 0 and kicked_id:
        # A conversation from before workflows existed: its old history is not new input.
        inbound = inbound.filter(id__gte=kicked_id)
    return inbound.order_by("id").first()


def _take(conversation: Conversation, message: Message, *, opened: bool, pending: list) -> None:
    run = _active_run(conversation)
    reply = steps.reply_of(message)
    if run is not None:
        run.variables["message"] = reply.text
        if reply.choice is None and _asks_for_a_person(conversation, reply):
            _handover(run, conversation, pending, reason="the customer asked for a person")
            return
        _feed(run, conversation, reply, pending)
        return
    if conversation.assignee_id is not None and not opened:
        return  # a person is on it
    if conversation.status == Conversation.Status.CLOSED:
        return
    workflow = (_triggered(conversation, Trigger.CONVERSATION_OPENED) if opened else None) or _triggered(
        conversation, Trigger.MESSAGE, text=reply.text
    )
    if workflow is None:
        return
    if reply.choice is None and _asks_for_a_person(conversation, reply):
        # "I need a person" as the very first words: the workflow starts and hands over at once.
        run = _start(workflow, conversation, {}, pending, message=message, drive=False)
        _handover(run, conversation, pending, reason="the customer asked for a person")
        return
    _start(workflow, conversation, {}, pending, message=message)


def _asks_for_a_person(conversation: Conversation, reply: steps.Reply) -> bool:
    from apps.workflows.intents import normalise

    said = f" {normalise(reply.text)} "
    if said.strip() == "":
        return False
    words = bot_settings(conversation.workspace_id).human_keywords or {}
    for keywords in words.values() if isinstance(words, dict) else [words]:
        for word in keywords or []:
            word = normalise(str(word))
            # Russian declines its nouns ("с человеком", "оператора"): a Cyrillic word matches
            # the words it begins; any other must match whole words.
            if word and (f" {word} " in said or (_cyrillic(word) and f" {word}" in said)):
                return True
    return False


def _cyrillic(word: str) -> bool:
    return any("\u0400" <= ch <= "\u04ff" for ch in word)


def _feed(run: Run, conversation: Conversation, reply: steps.Reply, pending: list) -> None:
    ctx = Context(run=run, conversation=conversation, definition=run.version.definition)
    step = _step(ctx, run.step)
    handler = getattr(steps, f"receive_{step['kind']}", None) if step else None
    if run.state != Run.State.WAITING or handler is None or run.waiting.get("for") in ("http", "timer"):
        run.save(update_fields=["variables", "updated_at"])
        return
    _apply(ctx, step, handler(ctx, step, reply), pending)


# Other events: closed, tagged, orders, timers, callbacks -------------------------------------


def conversation_event(*, conversation_id: int, trigger: str, details: dict) -> Run | None:
    """A conversation was closed or tagged, or its contact's order changed: starts the workflow
    that event triggers, if the conversation follows none."""
    pending: list[Pending] = []
    run = None
    with transaction.atomic():
        conversation = _locked_conversation(conversation_id)
        if conversation is None or _active_run(conversation) is not None:
            return None
        workflow = _triggered(conversation, trigger, **details)
        if workflow is None:
            return None
        variables = {}
        if trigger == Trigger.ORDER_EVENT and details.get("order"):
            number = details["order"].get("number", "")
            variables["order"] = (
                order_variables(workspace=conversation.workspace, contact=conversation.contact, value=number)
                or details["order"]
            )
        run = _start(workflow, conversation, variables, pending)
    _perform(pending)
    return run


def event_on_commit(*, conversation_id: int, trigger: str, details: dict | None = None) -> None:
    """Queues `conversation_event` after the caller's transaction commits, only if some enabled
    workflow of the workspace listens to this trigger (most events start nothing)."""
    from apps.workflows.tasks import event

    def queue():
        workspace_id = Conversation.objects.filter(pk=conversation_id).values_list("workspace_id", flat=True).first()
        if Workflow.objects.filter(workspace_id=workspace_id, trigger=trigger, enabled=True).exists():
            event.delay(conversation_id, trigger, details or {})

    transaction.on_commit(queue)


def contact_event_on_commit(*, contact_id: int, trigger: str, details: dict | None = None) -> None:
    """An event about a contact (a tag, an order) runs in the conversation they wrote in last."""
    from apps.workflows.tasks import event

    def queue():
        conversation = (
            Conversation.objects.filter(contact_id=contact_id).order_by("-last_message_at", "-id").only("pk").first()
        )
        if conversation is None:
            return
        listening = Workflow.objects.filter(workspace_id=conversation.workspace_id, trigger=trigger, enabled=True)
        if listening.exists():
            event.delay(conversation.pk, trigger, details or {})

    transaction.on_commit(queue)


def advance_on_commit(*, conversation_id: int, message_id: int, opened: bool) -> None:
    from apps.workflows.tasks import advance

    transaction.on_commit(lambda: advance.delay(conversation_id, message_id if opened else None))


def run_resume(*, run_id: int, now: datetime | None = None) -> None:
    """A run's timer: a wait ends, a question times out, a lost HTTP call counts as failed."""
    now = now or timezone.now()
    pending: list[Pending] = []
    with transaction.atomic():
        conversation_id = Run.objects.filter(pk=run_id).values_list("conversation_id", flat=True).first()
        conversation = _locked_conversation(conversation_id) if conversation_id else None
        if conversation is None:
            return
        run = _active_run(conversation)
        if run is None or run.pk != run_id or run.state != Run.State.WAITING:
            return
        if run.timeout_at is None or run.timeout_at > now + timedelta(seconds=1):
            return  # not due (an older timer of an earlier step)
        ctx = Context(run=run, conversation=conversation, definition=run.version.definition, now=now)
        step = _step(ctx, run.step)
        if step is None:
            _finish(run, Run.State.FAILED, "step missing")
            return
        if run.waiting.get("for") == "http":
            handler = getattr(steps, f"result_{step['kind']}")
            outcome = handler(ctx, step, {"ok": False, "error": "no answer (timed out or interrupted)"})
        else:
            handler = getattr(steps, f"timeout_{step['kind']}", steps.timeout_default)
            outcome = handler(ctx, step)
        _apply(ctx, step, outcome, pending)
    _perform(pending)


def runs_resume_due(*, now: datetime) -> int:
    due = Run.objects.filter(state=Run.State.WAITING, timeout_at__lte=now).values_list("pk", flat=True)[:500]
    count = 0
    for run_id in due:
        run_resume(run_id=run_id, now=now)
        count += 1
    return count


def run_callback(*, token: str, data: dict) -> Run:
    """The answer to an escalation (a seller, a delivery service): the run goes on."""
    pending: list[Pending] = []
    with transaction.atomic():
        found = (
            Run.objects.filter(callback_token=token, state=Run.State.WAITING)
            .values_list("pk", "conversation_id")
            .first()
            if token
            else None
        )
        if found is None:
            raise NotFound("No escalation waits for this answer.")
        conversation = _locked_conversation(found[1])
        run = _active_run(conversation)
        if run is None or run.pk != found[0] or run.waiting.get("for") != "callback":
            raise NotFound("No escalation waits for this answer.")
        ctx = Context(run=run, conversation=conversation, definition=run.version.definition)
        step = _step(ctx, run.step)
        run.callback_token = ""
        _apply(
            ctx, step, steps.callback_notify(ctx, step, data if isinstance(data, dict) else {"value": data}), pending
        )
    _perform(pending)
    return run


def run_cancel(*, run: Run, actor=None) -> Run:
    with transaction.atomic():
        conversation = _locked_conversation(run.conversation_id)
        active = _active_run(conversation)
        if active is None or active.pk != run.pk:
            return run
        _finish(active, Run.State.CANCELLED, f"stopped by {_person(actor) or 'Parley'}", publish=False)
        from apps.conversations.services.actions import _event

        _event(conversation, actor, "bot_stopped", f"{_person(actor) or 'Parley'}: stopped {active.workflow.name}")
        _publish_conversation(conversation)
        return active


def runs_stop(*, conversation: Conversation, actor=None, reason: str, keep_run_id: int | None = None) -> int:
    """A person took the conversation over (replied, assigned it, closed it): the bot steps back."""
    active = Run.objects.filter(conversation_id=conversation.pk, state__in=Run.ACTIVE)
    if keep_run_id is not None:
        active = active.exclude(pk=keep_run_id)
    if not active.exists():  # the usual answer, for every reply: no bot is running here
        return 0
    runs = list(active.select_for_update(of=("self",)).select_related("version", "workflow"))
    for run in runs:
        _finish(run, Run.State.CANCELLED, f"{reason} ({_person(actor) or 'Parley'})", publish=False)
    if runs:
        _publish_conversation(conversation)
    return len(runs)


def schedules_run(*, now: datetime) -> int:
    """Scheduled workflows that are due start on the conversations they target."""
    started = 0
    for workflow in Workflow.objects.filter(trigger=Trigger.SCHEDULE, enabled=True):
        if not _schedule_due(workflow, now):
            continue
        Workflow.objects.filter(pk=workflow.pk).update(last_run_at=now)
        for conversation_id in _schedule_targets(workflow, now):
            if conversation_event(conversation_id=conversation_id, trigger=Trigger.SCHEDULE, details={}) is not None:
                started += 1
    return started


def _schedule_due(workflow: Workflow, now: datetime) -> bool:
    settings = workflow.trigger_settings or {}
    last = workflow.last_run_at
    if settings.get("every_minutes"):
        return last is None or now - last >= timedelta(minutes=float(settings["every_minutes"])) - timedelta(seconds=5)
    if settings.get("daily_at"):
        local = now.astimezone(workflow.workspace.tz)
        hour, minute = (int(part) for part in str(settings["daily_at"]).split(":")[:2])
        slot = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return local >= slot and (last is None or last.astimezone(workflow.workspace.tz) < slot)
    return False


def _schedule_targets(workflow: Workflow, now: datetime) -> list[int]:
    settings = workflow.trigger_settings or {}
    targets = Conversation.objects.filter(workspace_id=workflow.workspace_id).exclude(runs__state__in=Run.ACTIVE)
    targets = targets.filter(status=settings.get("status", Conversation.Status.OPEN))
    if settings.get("tag"):
        targets = targets.filter(tags__name=settings["tag"])
    if settings.get("idle_minutes"):
        targets = targets.filter(last_message_at__lt=now - timedelta(minutes=float(settings["idle_minutes"])))
    if settings.get("channels"):
        kinds = [c for c in settings["channels"] if isinstance(c, str)]
        targets = targets.filter(
            Q(channel__kind__in=kinds) | Q(channel_id__in=[c for c in settings["channels"] if isinstance(c, int)])
        )
    return list(targets.order_by("id").values_list("pk", flat=True).distinct()[:500])


# The engine's loop -----------------------------------------------------------------------------


def _step(ctx: Context, key: str) -> dict | None:
    for step in ctx.definition.get("steps") or []:
        if step.get("key") == key:
            return step
    return None


def _drive(run: Run, conversation: Conversation, pending: list, ctx: Context | None = None) -> None:
    """Runs steps until the run waits, calls out or ends; within the step budget."""
    ctx = ctx or Context(run=run, conversation=conversation, definition=run.version.definition)
    budget = ctx.definition.get("max_steps") or run.workflow.max_steps or 60
    while run.state == Run.State.RUNNING:
        if run.steps_taken >= budget:
            _handover(run, conversation, pending, reason=f"step budget of {budget} spent")
            return
        step = _step(ctx, run.step)
        if step is None:
            _finish(run, Run.State.DONE, "finished" if not run.step else f"no step {run.step!r}")
            return
        run.steps_taken += 1
        handler = getattr(steps, f"enter_{step['kind']}", None)
        if handler is None:
            _finish(run, Run.State.FAILED, f"unknown step kind {step['kind']!r}")
            return
        _apply(ctx, step, handler(ctx, step), pending, drive=False)


def _apply(ctx: Context, step: dict, outcome, pending: list, drive: bool = True) -> None:
    run, conversation = ctx.run, ctx.conversation
    kind = step["kind"] if step else ""
    _log(run, run.step, kind, outcome.outcome, getattr(outcome, "detail", ""), conversation)
    if ctx.chained:
        name, ctx.chained = ctx.chained, None
        _finish(run, Run.State.DONE, f"continued in {name}", publish=False)
        workflow = Workflow.objects.get(workspace_id=conversation.workspace_id, name=name)
        _start(workflow, conversation, {**run.variables, "_chain": run.variables.get("_chain", 0) + 1}, pending)
        return
    if isinstance(outcome, steps.Go):
        run.state, run.waiting, run.timeout_at = Run.State.RUNNING, {}, None
        run.step = outcome.to or ""
        if drive:
            _drive(run, conversation, pending, ctx)
        return
    if isinstance(outcome, steps.Wait):
        run.state, run.waiting = Run.State.WAITING, outcome.waiting
        if outcome.minutes is not None:
            run.timeout_at = ctx.now + timedelta(minutes=float(outcome.minutes)) if outcome.minutes else None
        run.save(update_fields=RUN_FIELDS)
        _timer_on_commit(run)
        return
    if isinstance(outcome, steps.Call):
        run.state, run.waiting = Run.State.WAITING, {"for": "http"}
        run.timeout_at = ctx.now + timedelta(seconds=outcome.timeout_seconds + 60)
        run.save(update_fields=RUN_FIELDS)
        pending.append(Pending(run.pk, run.step, outcome.request, outcome.timeout_seconds))
        return
    if isinstance(outcome, steps.End):
        if outcome.state == Run.State.HANDED_OVER:
            _handover(
                run,
                conversation,
                pending,
                reason=outcome.detail or outcome.outcome,
                team_name=outcome.team,
                text=outcome.text,
                routed=outcome.routed,
            )
        else:
            _finish(run, outcome.state, outcome.outcome)


def _timer_on_commit(run: Run) -> None:
    if run.timeout_at is None:
        return
    from apps.workflows.tasks import resume

    run_id, eta = run.pk, run.timeout_at
    transaction.on_commit(lambda: resume.apply_async((run_id,), eta=eta))


def _finish(run: Run, state: str, outcome: str, *, publish: bool = True) -> None:
    run.state, run.outcome, run.finished_at = state, outcome[:200], timezone.now()
    run.waiting, run.timeout_at = {}, None
    run.save(update_fields=RUN_FIELDS)
    _log(run, run.step, "end", state, outcome)
    if publish:
        _publish_conversation(run.conversation)  # the inbox's bot badge goes


def _handover(
    run: Run, conversation: Conversation, pending: list, *, reason: str, team_name=None, text=None, routed=False
):
    """The customer goes to a person: told so, the context noted for the agent, routed to the
    step's team, the workflow's, or the workspace's default one. After a route step (`routed`)
    the conversation is already placed and the customer told: only the note is left to write."""
    from apps.workflows import routing

    settings = bot_settings(conversation.workspace_id)
    ctx = Context(run=run, conversation=conversation, definition=run.version.definition)
    _finish(run, Run.State.HANDED_OVER, reason, publish=False)
    event_record(conversation=conversation, kind="handover", by="bot", reason=reason)
    known = {k: v for k, v in run.variables.items() if k not in ("message", "language", "started_by", "queue", "team")}
    summary = ", ".join(f"{k}: {v}" for k, v in known.items() if not isinstance(v, dict | list))
    ctx.note(f"Handed over by {run.workflow.name} ({reason})" + (f". {summary}" if summary else ""))
    if routed:
        _publish_conversation(conversation)
        return
    ctx.send(ctx.text(text if text is not None else settings.handover_text))
    team = ctx.team(team_name or "") or run.workflow.handover_team or settings.fallback_team or conversation.team
    if team is not None and conversation.assignee_id is None and not ctx.sandbox:
        result = routing.conversation_route(conversation=conversation, team=team)
        conversation.refresh_from_db(fields=["team", "assignee", "queued_at", "status"])
        if result.outcome != "assigned":
            opens = (
                result.opens_at.astimezone(conversation.workspace.tz).strftime("%a %H:%M") if result.opens_at else ""
            )
            ctx.set_var("queue", {"position": result.position or 0, "wait_minutes": result.wait_minutes or 0})
            ctx.set_var("team", {"name": team.name, "opens_at": opens})
            key = "text_busy" if result.busy else ("text_queued" if result.outcome == "queued" else "text_closed")
            ctx.send(ctx.text(steps.DEFAULT_ROUTE_TEXTS[key]))
    run.save(update_fields=RUN_FIELDS)
    _publish_conversation(conversation)


# Calls out -------------------------------------------------------------------------------------


def _perform(pending: list) -> None:
    """The calls steps asked for, after commit; each answer is applied under the lock again."""
    while pending:
        call = pending.pop(0)
        response = _call(call.request, call.timeout_seconds)
        more: list[Pending] = []
        with transaction.atomic():
            conversation_id = Run.objects.filter(pk=call.run_id).values_list("conversation_id", flat=True).first()
            conversation = _locked_conversation(conversation_id)
            run = _active_run(conversation) if conversation else None
            if run is None or run.pk != call.run_id or run.step != call.step or run.waiting.get("for") != "http":
                continue  # the run moved on (cancelled, handed over) meanwhile
            ctx = Context(run=run, conversation=conversation, definition=run.version.definition)
            step = _step(ctx, run.step)
            run.state = Run.State.RUNNING
            _apply(ctx, step, getattr(steps, f"result_{step['kind']}")(ctx, step, response), more)
        pending.extend(more)


def _call(request: dict, timeout: float) -> dict:
    try:
        if request["kind"] == "http":
            return _http(request, timeout)
        return _notify(request, timeout)
    except (httpx.HTTPError, ValueError, OSError) as error:
        return {"ok": False, "error": f"{type(error).__name__}: {error}"[:500]}


def _http(request: dict, timeout: float) -> dict:
    body = request.get("body")
    kwargs = {"json": body} if isinstance(body, dict | list) else ({"content": body} if body else {})
    with netguard.client(timeout=timeout, follow_redirects=False) as client:
        response = client.request(request["method"], request["url"], headers=request.get("headers") or {}, **kwargs)
    try:
        data = response.json()
    except (json.JSONDecodeError, ValueError):
        data = None
    result = {"ok": response.is_success, "status": response.status_code, "json": data}
    if not response.is_success:
        result["error"] = f"HTTP {response.status_code}"
    return result


def _notify(request: dict, timeout: float) -> dict:
    via, text, data = request["via"], request["text"], request["data"]
    if via == "email":
        from django.core.mail import send_mail

        send_mail(
            f"Parley escalation: conversation #{data['conversation_id']}",
            f"{text}\n\n{json.dumps(data, indent=2, ensure_ascii=False)}",
            None,
            [request["to"]],
        )
        return {"ok": True}
    body = {"text": text} if via == "slack" else {"event": "workflow.escalation", "text": text, **data}
    with netguard.client(timeout=timeout, follow_redirects=False) as client:
        response = client.post(request["url"], json=body)
    return {"ok": response.is_success, "status": response.status_code, "error": f"HTTP {response.status_code}"}
