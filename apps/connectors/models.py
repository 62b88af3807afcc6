import re
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.core.crypto import EncryptedJSONField
from apps.workspaces.models import WorkspaceScoped


class ChannelKind(models.TextChoices):
    WHATSAPP = "whatsapp", "WhatsApp"
    WEBCHAT = "webchat", _("Web chat")


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
