import re
import secrets
import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.core.crypto import EncryptedJSONField, EncryptedTextField
from apps.workspaces.models import WorkspaceScoped


class ChannelKind(models.TextChoices):
    WHATSAPP = "whatsapp", "WhatsApp"
    WEBCHAT = "webchat", _("Web chat")
    MESSENGER = "messenger", "Messenger"
    INSTAGRAM = "instagram", "Instagram"
    TELEGRAM = "telegram", "Telegram"
    WECHAT = "wechat", "WeChat"
    EMAIL = "email", _("Email")
    CUSTOM = "custom", _("Custom (your app)")
    SANDBOX = "sandbox", _("Try-it sandbox: nothing leaves Parley")


def _verify_token() -> str:
    return secrets.token_urlsafe(24)


class Channel(WorkspaceScoped):
    """One number, page, bot, account or widget a workspace talks through.

    `credentials` (access tokens, app secrets) are encrypted at rest; `settings` holds what is
    not secret, including `base_url`, the provider API's address: the real one in production,
    the channel simulator in tests and the demo.
    """

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(_("kind"), max_length=16, choices=ChannelKind.choices)
    name = models.CharField(_("name"), max_length=120)
    credentials = EncryptedJSONField(_("credentials"), default=dict, blank=True)
    verify_token = models.CharField(_("webhook verify token"), max_length=64, default=_verify_token)
    settings = models.JSONField(_("settings"), default=dict, blank=True)
    rate_limit_per_second = models.PositiveIntegerField(
        _("messages per second"),
        default=80,
        help_text=_("The provider's throughput for this channel."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("channel")
        verbose_name_plural = _("channels")

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    @property
    def webhook_url(self) -> str:
        return f"{settings.PUBLIC_URL.rstrip('/')}/webhooks/{self.uuid}/"

    @property
    def widget_url(self) -> str:
        return f"{settings.PUBLIC_URL.rstrip('/')}/widget/{self.uuid}.js"

    @property
    def embed_code(self) -> str:
        """The one tag a shop adds to its pages (web chat)."""
        return f'<script src="{self.widget_url}" async></script>'


class MessageTemplate(WorkspaceScoped):
    """A provider-approved message template (WhatsApp's, Messenger's tagged messages…): the only
    thing a business may send outside the customer-service window. The body numbers its
    variables `{{1}}`, `{{2}}` as WhatsApp does."""

    class Category(models.TextChoices):
        MARKETING = "marketing", _("Marketing")
        UTILITY = "utility", _("Utility")
        AUTHENTICATION = "authentication", _("Authentication")

    class Status(models.TextChoices):
        APPROVED = "approved", _("Approved")
        PENDING = "pending", _("Pending review")
        REJECTED = "rejected", _("Rejected")
        PAUSED = "paused", _("Paused")

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="templates")
    name = models.SlugField(_("name"), max_length=512, help_text=_("The name the provider knows it by."))
    language = models.CharField(_("language"), max_length=15, default="en", help_text=_("e.g. en, en_US, ru, ar"))
    category = models.CharField(_("category"), max_length=16, choices=Category.choices, default=Category.UTILITY)
    body = models.TextField(_("body"), help_text=_("With numbered variables: Hi {{1}}, your order {{2}} has shipped."))
    example = models.JSONField(_("example values"), default=list, blank=True, help_text=_('e.g. ["Amira", "#1001"]'))
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.APPROVED)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "name", "language"], name="template_unique_per_language")
        ]
        ordering = ["name", "language"]
        verbose_name = _("message template")
        verbose_name_plural = _("message templates")

    def __str__(self) -> str:
        return f"{self.name} ({self.language})"

    @property
    def variable_count(self) -> int:
        numbers = [int(n) for n in re.findall(r"\{\{\s*(\d+)\s*\}\}", self.body)]
        return max(numbers, default=0)

    def render(self, parameters: list[str]) -> str:
        return re.sub(
            r"\{\{\s*(\d+)\s*\}\}",
            lambda m: parameters[int(m.group(1)) - 1] if int(m.group(1)) <= len(parameters) else m.group(0),
            self.body,
        )


WEBHOOK_EVENTS = (
    "message.created",
    "message.status",
    "conversation.opened",
    "conversation.assigned",
    "conversation.closed",
    "contact.created",
    "contact.updated",
    "csat.submitted",
    "order.updated",
)


def _webhook_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


class WebhookSubscription(WorkspaceScoped):
    """An outside system (the order system, a CRM) told of what happens in Parley: signed POSTs
    to its URL for the events it chose."""

    url = models.URLField(_("URL"), max_length=500)
    events = ArrayField(
        models.CharField(max_length=40, choices=[(e, e) for e in WEBHOOK_EVENTS]), verbose_name=_("events")
    )
    secret = EncryptedTextField(_("signing secret"), default=_webhook_secret)
    description = models.CharField(_("description"), max_length=200, blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    disabled_reason = models.TextField(_("why it was disabled"), blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "enabled"], name="webhook_by_workspace")]
        ordering = ["-created_at"]
        verbose_name = _("webhook subscription")
        verbose_name_plural = _("webhook subscriptions")

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(WorkspaceScoped):
    """One event for one subscription: retried with backoff for up to 24 hours, every attempt's
    answer kept, replayable from the admin."""

    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Gave up")

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event = models.CharField(max_length=40)
    payload = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_response = models.TextField(blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_delivery_due")]
        ordering = ["-created_at"]
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")

    def __str__(self) -> str:
        return f"{self.event} → {self.subscription_id} ({self.state})"
