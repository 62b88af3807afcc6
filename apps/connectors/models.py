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
