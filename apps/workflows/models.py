"""Workflows: what the bot does, step by step, per workspace.

A `Workflow` is a trigger and a graph of `Step`s that supervisors edit in the admin. Every save
publishes a `WorkflowVersion` (the whole graph as JSON); a `Run` is one conversation's trip
through one version, so a running conversation finishes on the version it started with even
when the workflow is edited meanwhile. `RunLog` keeps every step a run took (the admin's run
log, the analytics' drop-off per step). `FaqEntry` is what the bot answers free text with;
`BotSettings` holds a workspace's threshold, human-exit words and survey rules."""

import secrets

from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from apps.workspaces.models import WorkspaceScoped


class Trigger(models.TextChoices):
    CONVERSATION_OPENED = "conversation_opened", _("Conversation opened")
    MESSAGE = "message", _("Inbound message matches keywords or an intent")
    CONVERSATION_CLOSED = "conversation_closed", _("Conversation closed")
    TAG_ADDED = "tag_added", _("Tag added")
    ORDER_EVENT = "order_event", _("Order event")
    SHORTCUT = "shortcut", _("An agent's shortcut")
    API = "api", _("Incoming API call")
    SCHEDULE = "schedule", _("Schedule")


class StepKind(models.TextChoices):
    MESSAGE = "message", _("Send message")
    MENU = "menu", _("Menu")
    ASK = "ask", _("Ask a question")
    BRANCH = "branch", _("Branch")
    SET_LANGUAGE = "set_language", _("Set language")
    UPDATE_CONTACT = "update_contact", _("Update contact")
    ROUTE = "route", _("Route to a team")
    HOURS = "hours", _("Business hours / shift check")
    FAQ = "faq", _("FAQ answer")
    ORDER_LOOKUP = "order_lookup", _("Look up an order")
    HTTP = "http", _("HTTP request")
    NOTE = "note", _("Add note")
    NOTIFY = "notify", _("Notify / escalate")
    CLOSE = "close", _("Close conversation")
    WAIT = "wait", _("Wait")
    JUMP = "jump", _("Jump")
    START_WORKFLOW = "start_workflow", _("Start another workflow")
    HANDOVER = "handover", _("Hand over to a human")
    CSAT = "csat", _("Satisfaction survey")


class Workflow(WorkspaceScoped):
    name = models.CharField(_("name"), max_length=120)
    description = models.TextField(_("description"), blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    trigger = models.CharField(_("trigger"), max_length=24, choices=Trigger.choices)
    trigger_settings = models.JSONField(
        _("trigger settings"),
        default=dict,
        blank=True,
        help_text=_(
            'Which events start it, e.g. {"channels": ["whatsapp"]}, {"keywords": ["refund"]}, {"intent": '
            '"order_status"}, {"tag": "vip"}, {"statuses": ["shipped"]}, {"shortcut": "survey"}, '
            '{"every_minutes": 60, "idle_minutes": 1440, "status": "pending"}. See docs/workflows.md.'
        ),
    )
    priority = models.PositiveSmallIntegerField(
        _("priority"), default=100, help_text=_("When several workflows match, the lowest number starts.")
    )
    start_step = models.SlugField(
        _("first step"), max_length=40, blank=True, help_text=_("Key of the first step; empty for the first listed.")
    )
    max_steps = models.PositiveSmallIntegerField(
        _("step budget"),
        default=60,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text=_("A run that takes more steps than this hands over to a person: a bot never loops."),
    )
    handover_team = models.ForeignKey(
        "workspaces.Team",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("hand over to team"),
        help_text=_("Where a customer who asks for a person goes; empty for the workspace's default."),
    )
    version = models.PositiveIntegerField(_("published version"), default=0, editable=False)
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="workflow_unique_name")]
        indexes = [models.Index(fields=["workspace", "trigger", "enabled"], name="workflow_by_trigger")]
        ordering = ["priority", "name"]
        verbose_name = _("workflow")
        verbose_name_plural = _("workflows")

    def __str__(self) -> str:
        return self.name


class Step(WorkspaceScoped):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="steps")
    key = models.SlugField(_("key"), max_length=40, help_text=_("A short name other steps point to."))
    kind = models.CharField(_("kind"), max_length=16, choices=StepKind.choices)
    settings = models.JSONField(_("settings"), default=dict, blank=True)
    next = models.SlugField(_("then"), max_length=40, blank=True, help_text=_("The next step's key; empty ends."))
    position = models.PositiveIntegerField(_("position"), default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workflow", "key"], name="step_unique_key")]
        ordering = ["position", "id"]
        verbose_name = _("step")
        verbose_name_plural = _("steps")

    def __str__(self) -> str:
        return f"{self.key} ({self.get_kind_display()})"


class WorkflowVersion(WorkspaceScoped):
    """The workflow as it was published: what its runs follow."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        "workspaces.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workflow", "number"], name="workflow_version_unique")]
        ordering = ["-number"]
        verbose_name = _("workflow version")
        verbose_name_plural = _("workflow versions")

    def __str__(self) -> str:
        return f"{self.workflow} v{self.number}"


def callback_token() -> str:
    return secrets.token_urlsafe(24)


class Run(WorkspaceScoped):
    class State(models.TextChoices):
        RUNNING = "running", _("Running")
        WAITING = "waiting", _("Waiting")
        DONE = "done", _("Done")
        HANDED_OVER = "handed_over", _("Handed over")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    ACTIVE = (State.RUNNING, State.WAITING)

    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="runs")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="runs")
    version = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="runs")
    state = models.CharField(_("state"), max_length=12, choices=State.choices, default=State.RUNNING)
    step = models.SlugField(_("current step"), max_length=40, blank=True)
    variables = models.JSONField(_("variables"), default=dict, blank=True)
    waiting = models.JSONField(
        _("waiting for"), default=dict, blank=True, help_text=_("What the current step expects next.")
    )
    timeout_at = models.DateTimeField(_("times out at"), null=True, blank=True)
    callback_token = models.CharField(max_length=64, blank=True, editable=False)
    steps_taken = models.PositiveIntegerField(default=0)
    outcome = models.CharField(_("outcome"), max_length=200, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # A conversation follows one workflow at a time, however many workers start one.
            models.UniqueConstraint(
                fields=["conversation"], condition=Q(state__in=["running", "waiting"]), name="run_one_active"
            ),
        ]
        indexes = [
            models.Index(
                fields=["timeout_at"], condition=Q(state="waiting", timeout_at__isnull=False), name="run_timeouts"
            ),
            models.Index(fields=["callback_token"], condition=~Q(callback_token=""), name="run_by_callback"),
            models.Index(fields=["workflow", "-started_at"], name="run_by_workflow"),
        ]
        ordering = ["-started_at"]
        verbose_name = _("run")
        verbose_name_plural = _("runs")

    def __str__(self) -> str:
        return f"{self.workflow} on #{self.conversation_id} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE


class RunLog(WorkspaceScoped):
    """One step a run took, and how it ended: the run log in the admin and the drop-off figures."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="log")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField()
    step = models.CharField(max_length=40)
    kind = models.CharField(max_length=16)
    outcome = models.CharField(max_length=40)
    detail = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["workflow", "version", "step"], name="runlog_by_step")]
        ordering = ["at", "id"]
        verbose_name = _("run log entry")
        verbose_name_plural = _("run log")

    def __str__(self) -> str:
        return f"{self.step}: {self.outcome}"


class FaqEntry(WorkspaceScoped):
    """One intent's answer in one language, and the phrasings customers use for it; the matcher
    learns from these examples alone."""

    intent = models.SlugField(_("intent"), max_length=80, allow_unicode=True)
    language = models.CharField(_("language"), max_length=8)
    examples = ArrayField(
        models.CharField(max_length=500),
        verbose_name=_("example phrasings"),
        help_text=_("How customers ask it, one per line; ten or so work well."),
    )
    answer = models.TextField(_("answer"))
    follow_up = models.BooleanField(
        _('ask "did this help?"'), default=True, help_text=_("A 'no' hands the customer to a person.")
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "intent", "language"], name="faq_unique_intent_language")
        ]
        indexes = [models.Index(fields=["workspace", "-updated_at"], name="faq_recent")]
        ordering = ["intent", "language"]
        verbose_name = _("FAQ entry")
        verbose_name_plural = _("FAQ entries")

    def __str__(self) -> str:
        return f"{self.intent} [{self.language}]"


def default_human_keywords() -> dict:
    return {
        "en": ["operator", "agent", "human", "person", "talk to a person"],
        "ru": ["оператор", "человек", "живой человек", "менеджер"],
        "zh-hant": ["人工", "真人", "客服"],
        "zh-hans": ["人工", "真人", "客服"],
        "ar": ["موظف", "خدمة العملاء"],
    }


def default_handover_text() -> dict:
    return {
        "en": "Connecting you with a person. Please hold on.",
        "ru": "Соединяю с оператором, подождите, пожалуйста.",
        "zh-hant": "正在為您轉接人工客服，請稍候。",
        "zh-hans": "正在为您转接人工客服，请稍候。",
    }


class BotSettings(WorkspaceScoped):
    """A workspace's rules for every bot: how sure the FAQ matcher must be, the words that always
    reach a person, where those customers go, and when a survey score alarms a supervisor."""

    workspace = models.OneToOneField(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="bot_settings", verbose_name=_("workspace")
    )
    faq_threshold = models.FloatField(
        _("FAQ confidence threshold"),
        default=0.5,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=_("Below this the bot does not answer from the FAQ; it falls back to the menu or a person."),
    )
    human_keywords = models.JSONField(
        _("words that reach a person"),
        default=default_human_keywords,
        blank=True,
        help_text=_('Per language: {"en": ["operator", "agent"], "ru": ["оператор", "человек"]}.'),
    )
    handover_text = models.JSONField(
        _("hand-over message"), default=default_handover_text, blank=True, help_text=_("Per language.")
    )
    fallback_team = models.ForeignKey(
        "workspaces.Team",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("default team"),
        help_text=_("Where a customer handed over goes when the workflow names no team."),
    )
    csat_alert_below = models.PositiveSmallIntegerField(
        _("alert on ratings up to"),
        default=2,
        validators=[MinValueValidator(0), MaxValueValidator(5)],
        help_text=_("A rating this low or lower notifies the workspace's supervisors (0: never)."),
    )

    class Meta:
        verbose_name = _("bot settings")
        verbose_name_plural = _("bot settings")

    def __str__(self) -> str:
        return f"Bot settings of {self.workspace}"
