import hashlib
import zoneinfo
from datetime import time

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.core.crypto import EncryptedTextField
from apps.core.netguard import validate_outbound_url

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Role(models.TextChoices):
    OWNER = "owner", _("Owner")
    SUPERVISOR = "supervisor", _("Supervisor")
    AGENT = "agent", _("Agent")


ADMIN_ROLES = frozenset({Role.OWNER, Role.SUPERVISOR})
# An API token acts for the workspace's back office, with a supervisor's reach.
INTEGRATION_ROLE = "integration"


class User(AbstractUser):
    language = models.CharField(
        _("language"),
        max_length=8,
        choices=settings.LANGUAGES,
        blank=True,
        help_text=_("The interface language; empty follows the browser."),
    )

    class Meta:
        db_table = "auth_user_parley"

    @property
    def display_name(self) -> str:
        return self.get_full_name() or self.username


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(_("%(value)s is not a known time zone."), params={"value": value})


def default_business_hours() -> dict:
    return {day: [["09:00", "18:00"]] if day not in ("sat", "sun") else [] for day in WEEKDAYS}


def validate_business_hours(value) -> None:
    """{"mon": [["09:00", "18:00"]], ...}: each weekday a list of opening intervals."""
    if not isinstance(value, dict) or set(value) - set(WEEKDAYS):
        raise ValidationError(_("Business hours must map weekdays (mon…sun) to intervals."))
    for day, intervals in value.items():
        if not isinstance(intervals, list):
            raise ValidationError(_("%(day)s: a list of [start, end] intervals."), params={"day": day})
        for interval in intervals:
            try:
                start, end = (time.fromisoformat(part) for part in interval)
            except (TypeError, ValueError):
                raise ValidationError(
                    _("%(day)s: %(interval)s is not a [HH:MM, HH:MM] pair."),
                    params={"day": day, "interval": interval},
                ) from None
            if start >= end:
                raise ValidationError(_("%(day)s: an interval must end after it starts."), params={"day": day})


class Workspace(models.Model):
    name = models.CharField(_("name"), max_length=120)
    slug = models.SlugField(_("slug"), max_length=60, unique=True)
    timezone = models.CharField(_("time zone"), max_length=64, default="UTC", validators=[validate_timezone])
    default_language = models.CharField(_("default language"), max_length=8, default="en")
    business_hours = models.JSONField(
        _("business hours"),
        default=default_business_hours,
        validators=[validate_business_hours],
        help_text=_('Opening intervals per weekday in the workspace time zone, e.g. {"mon": [["09:00", "18:00"]]}.'),
    )
    # Service-level targets for a customer waiting on a reply: the inbox turns amber, then red.
    reply_warning_minutes = models.PositiveIntegerField(
        _("reply warning after (minutes)"),
        default=5,
        help_text=_("A customer waiting longer than this is shown in amber."),
    )
    reply_breach_minutes = models.PositiveIntegerField(
        _("reply target (minutes)"),
        default=15,
        help_text=_("A customer waiting longer than this is shown in red: the target is missed."),
    )
    closing_categories = ArrayField(
        models.CharField(max_length=60),
        default=list,
        blank=True,
        verbose_name=_("closing categories"),
        help_text=_("What a closed conversation was about, chosen when closing (comma-separated)."),
    )
    order_lookup_url = models.URLField(
        _("order lookup URL"),
        max_length=500,
        blank=True,
        validators=[validate_outbound_url],
        help_text=_(
            "Optional: the order system's address for a customer's current orders, with {external_id}, "
            "{phone} or {email} in it, e.g. https://shop.example/api/orders?customer={external_id}. "
            "Parley calls it live (3 s at most) when an operator opens the Orders panel."
        ),
    )
    order_lookup_token = EncryptedTextField(
        _("order lookup token"), blank=True, help_text=_("Sent as 'Authorization: Bearer <token>'. Stored encrypted.")
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("workspace")
        verbose_name_plural = _("workspaces")

    def __str__(self) -> str:
        return self.name

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class WorkspaceScoped(models.Model):
    """Every tenant row carries its workspace, so one filter scopes every query."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", verbose_name=_("workspace"))

    class Meta:
        abstract = True


class Membership(WorkspaceScoped):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(_("role"), max_length=16, choices=Role.choices, default=Role.AGENT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="membership_unique_user")]
        ordering = ["workspace", "user__username"]
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.get_role_display()})"

    @property
    def is_admin(self) -> bool:
        return self.role in ADMIN_ROLES


class Team(WorkspaceScoped):
    name = models.CharField(_("name"), max_length=80)
    members = models.ManyToManyField(Membership, related_name="teams", blank=True, verbose_name=_("members"))
    languages = ArrayField(
        models.CharField(max_length=8),
        default=list,
        blank=True,
        verbose_name=_("languages"),
        help_text=_("Language codes this team answers in, e.g. en, ru, ar."),
    )
    categories = ArrayField(
        models.CharField(max_length=60),
        default=list,
        blank=True,
        verbose_name=_("categories"),
        help_text=_("Conversation categories this team handles, e.g. orders, complaints."),
    )
    # The queue: when nobody is free, routed conversations wait here; past these figures it is
    # "peak load" and the bot tells customers the expected wait.
    queue_busy_length = models.PositiveIntegerField(
        _("busy when the queue is longer than"), default=10, help_text=_("Conversations waiting.")
    )
    queue_busy_wait_minutes = models.PositiveIntegerField(
        _("busy when the expected wait exceeds (minutes)"), default=15
    )
    average_handle_minutes = models.PositiveIntegerField(
        _("average handling time (minutes)"),
        default=6,
        help_text=_("Used to estimate a queued customer's wait: position times this, divided by the agents on shift."),
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="team_unique_name")]
        ordering = ["name"]
        verbose_name = _("team")
        verbose_name_plural = _("teams")

    def __str__(self) -> str:
        return self.name


class Shift(WorkspaceScoped):
    """A team's weekly working hours, in the workspace's time zone. A shift that ends at or
    before it starts runs past midnight into the next day."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="shifts")
    weekday = models.PositiveSmallIntegerField(
        _("weekday"), choices=[(i, day.title()) for i, day in enumerate(WEEKDAYS)]
    )
    starts_at = models.TimeField(_("starts at"))
    ends_at = models.TimeField(_("ends at"))

    class Meta:
        ordering = ["team", "weekday", "starts_at"]
        verbose_name = _("shift")
        verbose_name_plural = _("shifts")

    def __str__(self) -> str:
        return f"{self.team} {WEEKDAYS[self.weekday]} {self.starts_at:%H:%M}-{self.ends_at:%H:%M}"


class ShiftException(WorkspaceScoped):
    """A holiday or special day: the team is closed, or works other hours, on that date."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="shift_exceptions")
    date = models.DateField(_("date"))
    closed = models.BooleanField(_("closed all day"), default=True)
    starts_at = models.TimeField(_("starts at"), null=True, blank=True)
    ends_at = models.TimeField(_("ends at"), null=True, blank=True)
    reason = models.CharField(_("reason"), max_length=120, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "date"], name="shift_exception_unique_day")]
        ordering = ["date"]
        verbose_name = _("shift exception")
        verbose_name_plural = _("shift exceptions")

    def __str__(self) -> str:
        state = self.reason or ("closed" if self.closed else "special hours")
        return f"{self.team} {self.date}: {state}"

    def clean(self):
        if not self.closed and (self.starts_at is None or self.ends_at is None):
            raise ValidationError(_("Give the hours of the day, or mark it closed."))


class AgentStatus(WorkspaceScoped):
    class Status(models.TextChoices):
        ONLINE = "online", _("Online")
        AWAY = "away", _("Away")
        OFFLINE = "offline", _("Offline")

    membership = models.OneToOneField(Membership, on_delete=models.CASCADE, related_name="agent_status")
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.OFFLINE)
    capacity = models.PositiveSmallIntegerField(
        _("capacity"),
        default=5,
        help_text=_("The most open conversations this agent takes at once."),
    )
    changed_at = models.DateTimeField(_("status changed at"), auto_now_add=True)
    last_assigned_at = models.DateTimeField(
        _("last assigned at"), null=True, blank=True, help_text=_("Round-robin routing picks who waited longest.")
    )
    last_seen_at = models.DateTimeField(_("last seen at"), null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "status"], name="agent_status_by_state")]
        verbose_name = _("agent status")
        verbose_name_plural = _("agent statuses")

    def __str__(self) -> str:
        return f"{self.membership.user}: {self.status}"


class ApiToken(WorkspaceScoped):
    """A workspace's credential for its back office. Only a SHA-256 of the token is stored: the
    token is 256 random bits, so a fast hash is enough and keeps every API call one index hit."""

    PREFIX = "prl_"

    name = models.CharField(_("name"), max_length=80)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(_("starts with"), max_length=12, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @staticmethod
    def hash(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditEntry(models.Model):
    """Who did what, when and from where: sign-ins, exports, erasures, a contact's data viewed,
    and changes to workflows, channels, API tokens and roles. Written by `services.audit_record`
    in the transaction of the act itself; never edited. It names people by id (a contact is
    "Contact #42"), so erasing a person leaves the log true without keeping their data."""

    class Action(models.TextChoices):
        SIGN_IN = "sign_in", _("signed in")
        SIGN_IN_FAILED = "sign_in_failed", _("sign-in failed")
        VIEW = "view", _("viewed")
        EXPORT = "export", _("exported")
        ERASE = "erase", _("erased")
        CREATE = "create", _("created")
        CHANGE = "change", _("changed")
        DELETE = "delete", _("deleted")
        REVOKE = "revoke", _("revoked")
        PURGE = "purge", _("purged by retention")

    # Null for a failed sign-in by a name no workspace knows; a workspace's own rows go with it.
    workspace = models.ForeignKey(
        Workspace, null=True, blank=True, on_delete=models.CASCADE, related_name="+", verbose_name=_("workspace")
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("who"),
    )
    # Kept as written, so the log still says who once the account is deleted.
    actor_label = models.CharField(_("who (as recorded)"), max_length=150, blank=True)
    action = models.CharField(_("action"), max_length=16, choices=Action.choices)
    object_type = models.CharField(_("object type"), max_length=40, blank=True)
    object_id = models.CharField(_("object id"), max_length=64, blank=True)
    object_repr = models.CharField(_("object"), max_length=200, blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)
    ip = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    at = models.DateTimeField(_("at"), auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "-at"], name="audit_by_workspace")]
        ordering = ["-at", "-id"]
        verbose_name = _("audit log entry")
        verbose_name_plural = _("audit log")

    def __str__(self) -> str:
        target = f" {self.object_type} {self.object_repr}".rstrip() if self.object_type else ""
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_label or '—'} {self.action}{target}"


class PrivacySettings(models.Model):
    """A workspace's data protection choices. Apart from `Workspace` so the privacy work adds
    a table rather than widening the row every request reads."""

    workspace = models.OneToOneField(
        Workspace, on_delete=models.CASCADE, related_name="privacy", verbose_name=_("workspace")
    )
    retention_days = models.PositiveIntegerField(
        _("keep closed conversations' content for (days)"),
        null=True,
        blank=True,
        help_text=_(
            "After this many days closed, a conversation's messages lose their text, data and files "
            "(the messages stay counted). Empty keeps everything."
        ),
    )
    purged_until = models.DateTimeField(
        _("purged up to"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("Conversations closed before this moment have had their content removed."),
    )

    class Meta:
        verbose_name = _("privacy settings")
        verbose_name_plural = _("privacy settings")

    def __str__(self) -> str:
        return f"{self.workspace} privacy"
