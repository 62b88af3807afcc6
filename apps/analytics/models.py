"""Analytics: the numbers supervisors steer by, without ever scanning messages.

The services write an `Event` for every fact of a conversation's life (opened, a message in or
out and by whom, assigned, categorised, closed, reopened, rated, queued, a bot's hand-over or FAQ
answer) in the same transaction as the fact itself. A folder (`services.events_fold`, every few
seconds by beat) turns a conversation's events into its `Cycle` rows (one per open → close: the
per-conversation stats row the export and the medians read) and adds what changed to the
`Daily` rollups (workspace × day × agent × team × channel × category × language), which is all a
dashboard over months sums. `manage.py analytics_rebuild` recomputes cycles and rollups from
the events alone and must arrive at the same numbers (tests/analytics prove it).
docs/metrics.md defines every number."""

from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from apps.workspaces.models import WorkspaceScoped

# Upper bounds (seconds) of the response and resolution buckets; the last bucket is "over 1 h".
BUCKETS = (30, 120, 300, 600, 1800, 3600)
BUCKET_LABELS = ("< 30 s", "30 s–2 min", "2–5 min", "5–10 min", "10–30 min", "30–60 min", "> 1 h")


def bucket_of(seconds: int) -> int:
    for index, bound in enumerate(BUCKETS):
        if seconds < bound:
            return index
    return len(BUCKETS)


class Event(WorkspaceScoped):
    """One fact of a conversation's life, written by the service that made it happen. `agent`
    and `team` are the conversation's assignee and team once the fact happened (for a message
    or note by a person, `author` is who wrote it)."""

    class Kind(models.TextChoices):
        OPENED = "opened", _("opened")
        MESSAGE_IN = "message_in", _("customer message")
        MESSAGE_OUT = "message_out", _("message to the customer")
        NOTE = "note", _("internal note")
        ASSIGNED = "assigned", _("assigned")
        CATEGORISED = "categorised", _("categorised")
        QUEUED = "queued", _("queued")
        CLOSED = "closed", _("closed")
        REOPENED = "reopened", _("reopened")
        RATED = "rated", _("rated")
        HANDOVER = "handover", _("bot handed over")
        FAQ_ANSWERED = "faq_answered", _("FAQ answered")
        FAQ_ACCEPTED = "faq_accepted", _("FAQ answer helped")

    class By(models.TextChoices):
        CONTACT = "contact", _("customer")
        AGENT = "agent", _("person")
        BOT = "bot", _("bot")
        SYSTEM = "system", _("automatic")

    conversation = models.ForeignKey(
        "conversations.Conversation", on_delete=models.CASCADE, related_name="analytics_events"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    at = models.DateTimeField(default=timezone.now)
    by = models.CharField(max_length=8, choices=By.choices, blank=True)
    author = models.ForeignKey(
        "workspaces.Membership", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent = models.ForeignKey(
        "workspaces.Membership", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    team = models.ForeignKey("workspaces.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    value = models.IntegerField(null=True, blank=True, help_text=_("A rating's score."))
    data = models.JSONField(default=dict, blank=True)
    folded = models.BooleanField(default=False, help_text=_("Already in the cycles and rollups."))

    class Meta:
        indexes = [
            models.Index(fields=["conversation", "at", "id"], name="analytics_event_timeline"),
            models.Index(fields=["id"], condition=Q(folded=False), name="analytics_event_unfolded"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.conversation_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class AgentPresence(WorkspaceScoped):
    """An agent's status change (online / away / offline): who was there, hour by hour."""

    membership = models.ForeignKey("workspaces.Membership", on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=8)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["workspace", "at"], name="analytics_presence_at")]


class Cycle(WorkspaceScoped):
    """One conversation from (re)opening to closing: the stats row of "a conversation" in every
    report and in the export. Made only by the folder, from the events."""

    class Source(models.TextChoices):
        INBOUND = "inbound", _("customer wrote")
        OUTBOUND = "outbound", _("we wrote first")
        BROADCAST = "broadcast", _("reply to a broadcast")

    conversation = models.ForeignKey(
        "conversations.Conversation", on_delete=models.CASCADE, related_name="analytics_cycles"
    )
    number = models.PositiveIntegerField(help_text=_("1 for the first opening, 2 after the first reopening…"))
    contact_id = models.BigIntegerField()
    channel = models.ForeignKey("connectors.Channel", on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=10, choices=Source.choices)
    team = models.ForeignKey("workspaces.Team", null=True, on_delete=models.SET_NULL, related_name="+")
    assignee = models.ForeignKey("workspaces.Membership", null=True, on_delete=models.SET_NULL, related_name="+")
    assignees = ArrayField(models.BigIntegerField(), default=list, help_text=_("Everyone it was assigned to."))
    category = models.CharField(max_length=60, blank=True)
    language = models.CharField(max_length=8, blank=True)
    opened_at = models.DateTimeField()
    first_message_at = models.DateTimeField(null=True, help_text=_("The customer's first message."))
    first_assigned_at = models.DateTimeField(null=True)
    first_response_at = models.DateTimeField(null=True)
    first_response_seconds = models.IntegerField(null=True)
    assigned_response_seconds = models.IntegerField(null=True, help_text=_("First assignment → first response."))
    responder = models.ForeignKey("workspaces.Membership", null=True, on_delete=models.SET_NULL, related_name="+")
    responses = models.IntegerField(default=0)
    response_seconds = models.BigIntegerField(default=0)
    closed_at = models.DateTimeField(null=True)
    resolution_seconds = models.IntegerField(null=True)
    closed_by = models.CharField(max_length=8, blank=True)
    closer = models.ForeignKey("workspaces.Membership", null=True, on_delete=models.SET_NULL, related_name="+")
    summary = models.TextField(blank=True)
    csat = models.PositiveSmallIntegerField(null=True)
    rated_at = models.DateTimeField(null=True, help_text=_("When the (last) rating came."))
    csat_agent = models.ForeignKey("workspaces.Membership", null=True, on_delete=models.SET_NULL, related_name="+")
    messages_in = models.IntegerField(default=0)
    messages_out = models.IntegerField(default=0)
    messages_bot = models.IntegerField(default=0)
    notes = models.IntegerField(default=0)
    handle_seconds = models.IntegerField(default=0)
    queue_seconds = models.IntegerField(null=True)
    bot = models.BooleanField(default=False, help_text=_("A bot spoke in it."))
    handed_over = models.BooleanField(default=False)
    contained = models.BooleanField(default=False, help_text=_("Closed without a person."))
    came_back = models.BooleanField(
        default=False, help_text=_("Closed, and the customer opened another cycle (any channel) within 7 days.")
    )
    contribution = models.JSONField(default=list, help_text=_("What this cycle adds to the daily rollups."))
    resume = models.JSONField(
        null=True,
        editable=False,
        help_text=_("The last cycle of its conversation: where the folder stopped, to go on from there."),
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["conversation", "number"], name="analytics_cycle_unique")]
        indexes = [
            models.Index(fields=["workspace", "opened_at"], name="analytics_cycle_opened"),
            models.Index(fields=["workspace", "closed_at"], name="analytics_cycle_closed"),
            models.Index(fields=["workspace", "contact_id", "opened_at"], name="analytics_cycle_contact"),
        ]


def zeros_buckets():
    return [0] * (len(BUCKETS) + 1)


def zeros_scores():
    return [0] * 5


def zeros_hours():
    return [0] * 24


class Counters(models.Model):
    """What a rollup row adds up; every counter is additive, so any range and any filter is a SUM."""

    opened = models.IntegerField(default=0)
    reopened = models.IntegerField(default=0)
    closed = models.IntegerField(default=0)
    contained = models.IntegerField(default=0)
    messages_in = models.IntegerField(default=0)
    messages_out = models.IntegerField(default=0)
    messages_bot = models.IntegerField(default=0)
    notes = models.IntegerField(default=0)
    assigned = models.IntegerField(default=0)
    transfers = models.IntegerField(default=0)
    first_responses = models.IntegerField(default=0)
    first_response_seconds = models.BigIntegerField(default=0)
    first_response_buckets = ArrayField(models.IntegerField(), default=zeros_buckets)
    assigned_responses = models.IntegerField(default=0)
    assigned_response_seconds = models.BigIntegerField(default=0)
    responses = models.IntegerField(default=0)
    response_seconds = models.BigIntegerField(default=0)
    resolution_seconds = models.BigIntegerField(default=0)
    resolution_buckets = ArrayField(models.IntegerField(), default=zeros_buckets)
    handle_seconds = models.BigIntegerField(default=0)
    csat_count = models.IntegerField(default=0)
    csat_sum = models.IntegerField(default=0)
    csat_scores = ArrayField(models.IntegerField(), default=zeros_scores, help_text=_("How many 1s … 5s."))
    bot_conversations = models.IntegerField(default=0)
    handovers = models.IntegerField(default=0)
    faq_answered = models.IntegerField(default=0)
    faq_accepted = models.IntegerField(default=0)
    queued = models.IntegerField(default=0)
    queue_waits = models.IntegerField(default=0)
    queue_wait_seconds = models.BigIntegerField(default=0)
    opened_by_hour = ArrayField(models.IntegerField(), default=zeros_hours, help_text=_("Local hours 0–23."))

    class Meta:
        abstract = True


class Daily(WorkspaceScoped, Counters):
    """The sums of one workspace-local day for one agent, team, channel, category and language.
    Every counter is additive, so any range and any filter is a SUM over these rows."""

    # No database constraint on these: a rollup outlives the member, team or channel it counts
    # (a deleted channel's conversations go, last year's numbers stay), and the folder subtracts
    # exactly what it once added, whatever has been deleted since.
    day = models.DateField()
    agent = models.ForeignKey(
        "workspaces.Membership", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    team = models.ForeignKey(
        "workspaces.Team", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    channel = models.ForeignKey(
        "connectors.Channel", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    category = models.CharField(max_length=60, blank=True)
    language = models.CharField(max_length=8, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "day", "agent", "team", "channel", "category", "language"],
                name="analytics_daily_unique",
                nulls_distinct=False,
            )
        ]
        indexes = [models.Index(fields=["workspace", "day"], name="analytics_daily_day")]

    def __str__(self) -> str:
        return f"{self.day} agent {self.agent_id} team {self.team_id} channel {self.channel_id}"


class DailyTotal(WorkspaceScoped, Counters):
    """The same sums for the whole workspace, one row a day: what a dashboard without filters
    reads (ninety rows for ninety days, not one per agent × team × channel × category × language).
    The folder keeps it equal to the `Daily` rows' sums."""

    day = models.DateField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "day"], name="analytics_dailytotal_unique")]

    def __str__(self) -> str:
        return f"{self.day} (all)"


SCALAR_COUNTERS = tuple(
    f.name
    for f in Counters._meta.local_fields
    if isinstance(f, models.IntegerField | models.BigIntegerField) and not f.is_relation and f.name != "id"
)
ARRAY_COUNTERS = {"first_response_buckets": 7, "resolution_buckets": 7, "csat_scores": 5, "opened_by_hour": 24}


class Settings(WorkspaceScoped):
    """A workspace's reporting rules: the service level's targets and the scheduled export."""

    workspace = models.OneToOneField(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="analytics_settings"
    )
    service_level_seconds = models.PositiveIntegerField(
        _("first response target, chat (seconds)"),
        default=30,
        validators=[MinValueValidator(1)],
        help_text=_("Service level: the share of conversations answered within this."),
    )
    email_service_level_seconds = models.PositiveIntegerField(
        _("first response target, email (seconds)"), default=4 * 3600, validators=[MinValueValidator(1)]
    )
    export_enabled = models.BooleanField(_("scheduled export"), default=False)
    export_every_minutes = models.PositiveIntegerField(
        _("export every (minutes)"), default=30, validators=[MinValueValidator(5), MaxValueValidator(24 * 60)]
    )
    export_format = models.CharField(
        _("export format"), max_length=4, choices=[("csv", "CSV"), ("xlsx", "XLSX")], default="csv"
    )
    export_prefix = models.CharField(
        _("export folder"),
        max_length=200,
        default="exports",
        help_text=_("Where in the export storage (a local folder or an S3-compatible bucket) files are written."),
    )
    last_export_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("analytics settings")
        verbose_name_plural = _("analytics settings")

    def __str__(self) -> str:
        return str(self.workspace)

    def target_for(self, channel_kind: str) -> int:
        return self.email_service_level_seconds if channel_kind == "email" else self.service_level_seconds
