"""Broadcasts and campaigns: one message to many customers, paced, measured and respectful.

A `Segment` is a saved audience (conditions on contacts, evaluated as one SQL query). A
`Broadcast` sends one approved template to an audience (a segment, a tag, or an uploaded CSV)
now or at a time; each person it reaches is a `Recipient` row (its state, its message, why it
was skipped or failed, whether they replied or bought). A `Campaign` makes broadcasts on a
schedule (django-celery-beat crontab in the workspace's time zone) or on an event
(back in stock). `BroadcastSettings` holds a workspace's rules: stop words, the weekly cap,
quiet hours, the conversion window."""

from datetime import time

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from apps.workspaces.models import WorkspaceScoped


class Segment(WorkspaceScoped):
    name = models.CharField(_("name"), max_length=120)
    description = models.TextField(_("description"), blank=True)
    definition = models.JSONField(
        _("conditions"),
        default=dict,
        help_text=_(
            'e.g. {"match": "all", "conditions": [{"field": "tag", "op": "is", "value": "vip"}, '
            '{"field": "last_purchase_at", "op": "older_than_days", "value": 30}]}. See docs/segments.md.'
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="segment_unique_name")]
        ordering = ["name"]
        verbose_name = _("segment")
        verbose_name_plural = _("segments")

    def __str__(self) -> str:
        return self.name


def default_stop_words() -> list:
    return ["stop", "unsubscribe", "стоп", "отписаться", "إيقاف", "الغاء", "退訂", "退订"]


def default_start_words() -> list:
    return ["start", "subscribe", "старт", "подписаться", "订阅", "訂閱"]


def default_stop_confirmation() -> dict:
    return {
        "en": "You will no longer receive promotions from us here. Write START to subscribe again.",
        "ru": "Вы отписались от рассылок. Напишите СТАРТ, чтобы подписаться снова.",
        "ar": "لن تصلك عروضنا بعد الآن. أرسل START للاشتراك مجددًا.",
        "zh-hant": "您已取消訂閱推廣訊息。如需重新訂閱，請回覆 START。",
        "zh-hans": "您已取消订阅推广消息。如需重新订阅，请回复 START。",
    }


class BroadcastSettings(WorkspaceScoped):
    workspace = models.OneToOneField(
        "workspaces.Workspace",
        on_delete=models.CASCADE,
        related_name="broadcast_settings",
        verbose_name=_("workspace"),
    )
    stop_words = models.JSONField(
        _("stop words"),
        default=default_stop_words,
        blank=True,
        help_text=_("A customer's reply that is one of these opts them out of marketing on that channel."),
    )
    start_words = models.JSONField(
        _("start words"),
        default=default_start_words,
        blank=True,
        help_text=_("A customer's reply that is one of these opts them back in."),
    )
    stop_confirmation = models.JSONField(
        _("opt-out confirmation"), default=default_stop_confirmation, blank=True, help_text=_("Per language.")
    )
    weekly_cap = models.PositiveSmallIntegerField(
        _("marketing messages per contact per week"),
        default=3,
        help_text=_("A contact who already got this many marketing messages in the last 7 days is skipped."),
    )
    quiet_from = models.TimeField(_("quiet hours from"), default=time(21, 0))
    quiet_until = models.TimeField(_("quiet hours until"), default=time(9, 0))
    conversion_window_hours = models.PositiveIntegerField(
        _("conversion window (hours)"),
        default=72,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 60)],
        help_text=_("An order from a recipient within this time after delivery counts as a conversion."),
    )

    class Meta:
        verbose_name = _("broadcast settings")
        verbose_name_plural = _("broadcast settings")

    def __str__(self) -> str:
        return f"Broadcast settings of {self.workspace}"


class Campaign(WorkspaceScoped):
    """Broadcasts made again and again: on a crontab in the workspace's time zone ("we miss you"
    every day at 11:00, a weekly promotion), or on a restock (back in stock)."""

    class Kind(models.TextChoices):
        WE_MISS_YOU = "we_miss_you", _("We miss you (no purchase for a while)")
        PROMO = "promo", _("Promotion to a segment")
        BACK_IN_STOCK = "back_in_stock", _("Back in stock (contacts tagged waiting:<sku>)")

    name = models.CharField(_("name"), max_length=120)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    enabled = models.BooleanField(_("enabled"), default=True)
    channel = models.ForeignKey("connectors.Channel", on_delete=models.CASCADE, related_name="+")
    template = models.ForeignKey("connectors.MessageTemplate", on_delete=models.PROTECT, related_name="+")
    variables = models.JSONField(
        _("template variables"),
        default=list,
        blank=True,
        help_text=_(
            'One per template variable (header, body, then buttons): [{"field": "contact.first_name"}, {"value": "X"}]'
        ),
    )
    segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    settings = models.JSONField(
        _("settings"),
        default=dict,
        blank=True,
        help_text=_('We miss you: {"inactive_days": 30, "not_messaged_days": 14}.'),
    )
    # The schedule, in the workspace's time zone (crontab fields, as cron writes them).
    minute = models.CharField(_("minute"), max_length=60, default="0")
    hour = models.CharField(_("hour"), max_length=60, default="11")
    day_of_week = models.CharField(_("day of week"), max_length=60, default="*")
    day_of_month = models.CharField(_("day of month"), max_length=60, default="*")
    month_of_year = models.CharField(_("month"), max_length=60, default="*")
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="campaign_unique_name")]
        ordering = ["name"]
        verbose_name = _("campaign")
        verbose_name_plural = _("campaigns")

    def __str__(self) -> str:
        return self.name


def csv_path(instance, filename: str) -> str:
    return f"broadcasts/{instance.workspace_id}/{filename}"


class Broadcast(WorkspaceScoped):
    class State(models.TextChoices):
        DRAFT = "draft", _("Draft")
        SCHEDULED = "scheduled", _("Scheduled")
        RUNNING = "running", _("Running")
        PAUSED = "paused", _("Paused")
        COMPLETED = "completed", _("Completed")
        CANCELLED = "cancelled", _("Cancelled")

    class Audience(models.TextChoices):
        SEGMENT = "segment", _("A segment")
        TAG = "tag", _("Contacts with a tag")
        CSV = "csv", _("An uploaded CSV of phones")

    name = models.CharField(_("name"), max_length=160)
    channel = models.ForeignKey("connectors.Channel", on_delete=models.PROTECT, related_name="broadcasts")
    template = models.ForeignKey("connectors.MessageTemplate", on_delete=models.PROTECT, related_name="broadcasts")
    variables = models.JSONField(
        _("template variables"),
        default=list,
        blank=True,
        help_text=_(
            "One per template variable (header, body, then buttons), in order: "
            '{"field": "contact.first_name"}, {"value": "SPRING10"}, or (CSV) {"column": "promo"}.'
        ),
    )
    audience = models.CharField(_("audience"), max_length=8, choices=Audience.choices, default=Audience.SEGMENT)
    segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.PROTECT, related_name="broadcasts")
    tag = models.ForeignKey("contacts.Tag", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    audience_definition = models.JSONField(
        default=dict,
        blank=True,
        editable=False,
        help_text=_("The conditions actually sent to: the segment's when it started, with a campaign's own added."),
    )
    csv_file = models.FileField(_("CSV of recipients"), upload_to=csv_path, max_length=300, blank=True)
    scheduled_at = models.DateTimeField(_("send at"), null=True, blank=True)
    state = models.CharField(_("state"), max_length=10, choices=State.choices, default=State.DRAFT)
    paused_reason = models.CharField(
        _("why it paused"),
        max_length=300,
        blank=True,
        help_text=_("Set when the sender paused it itself (credentials, quality); empty for a pause by hand."),
    )
    campaign = models.ForeignKey(Campaign, null=True, blank=True, on_delete=models.SET_NULL, related_name="broadcasts")
    created_by = models.ForeignKey(
        "workspaces.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Audience resolution writes the recipients once; a broadcast resumed after a crash goes on
    # from its queued rows.
    audience_ready = models.BooleanField(default=False, editable=False)
    total = models.PositiveIntegerField(default=0, editable=False)
    claimed_at = models.DateTimeField(null=True, blank=True, editable=False, help_text=_("A sender's heartbeat."))

    class Meta:
        indexes = [
            models.Index(fields=["state", "scheduled_at"], name="broadcast_due"),
            models.Index(fields=["workspace", "-created_at"], name="broadcast_recent"),
        ]
        ordering = ["-created_at"]
        verbose_name = _("broadcast")
        verbose_name_plural = _("broadcasts")

    def __str__(self) -> str:
        return self.name


class Recipient(WorkspaceScoped):
    """One person a broadcast reaches (or skips, and why)."""

    class State(models.TextChoices):
        QUEUED = "queued", _("Queued")
        SKIPPED = "skipped", _("Skipped")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        DELIVERED = "delivered", _("Delivered")
        READ = "read", _("Read")
        FAILED = "failed", _("Failed")

    broadcast = models.ForeignKey(Broadcast, on_delete=models.CASCADE, related_name="recipients")
    contact = models.ForeignKey("contacts.Contact", on_delete=models.CASCADE, related_name="+")
    # The person, not the row: two contacts sharing a phone get a broadcast once.
    dedupe_key = models.CharField(max_length=64)
    parameters = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    reason = models.CharField(max_length=200, blank=True, help_text=_("Why it was skipped or failed."))
    message = models.OneToOneField(
        "conversations.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="broadcast_recipient"
    )
    queued_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    replied_at = models.DateTimeField(null=True, blank=True)
    converted_at = models.DateTimeField(null=True, blank=True)
    order = models.ForeignKey("contacts.Order", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["broadcast", "dedupe_key"], name="recipient_once_per_person"),
        ]
        indexes = [
            models.Index(fields=["broadcast", "state", "id"], name="recipient_by_state"),
            # "Was this contact messaged lately?" (weekly cap, we-miss-you's not-messaged window).
            models.Index(fields=["contact", "-sent_at"], condition=Q(sent_at__isnull=False), name="recipient_recent"),
        ]
        ordering = ["id"]
        verbose_name = _("recipient")
        verbose_name_plural = _("recipients")

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.broadcast_id}: {self.state}"
