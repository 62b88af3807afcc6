from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from apps.connectors.base import ProviderError
from apps.connectors.models import Channel, ChannelKind, MessageTemplate, WebhookDelivery, WebhookSubscription
from apps.connectors.services import channel_activate, webhook_replay, webhook_subscriptions_changed
from apps.core.admin import WorkspaceScopedAdmin


class ChannelForm(forms.ModelForm):
    credentials = forms.JSONField(
        required=False,
        help_text=_(
            "Secrets, stored encrypted. WhatsApp: access_token, app_secret, phone_number_id, waba_id. "
            "Messenger / Instagram: page_access_token, app_secret, page_id. Telegram: bot_token. "
            "WeChat: app_id, app_secret, token. Email: smtp_password, imap_password. Custom: secret. "
            "See docs/channels/."
        ),
    )
    settings = forms.JSONField(
        required=False,
        help_text=_(
            "Not secret. Every provider: base_url (its API, or the simulator). Web chat: allowed_origins "
            '(["https://shop.example"]; empty allows any site), title, greeting, color, and prechat '
            '({"enabled": true, "fields": ["name", "email", "phone"], "required": ["email"]}). '
            "Email: address, from_name, smtp_host, smtp_port, smtp_username, smtp_security, and for "
            "polling imap_host, imap_port, imap_username, imap_security, imap_folder. Custom: outbound_url, "
            "allow_private_media_urls (true to fetch the app's files from private addresses)."
        ),
    )

    class Meta:
        model = Channel
        fields = ("workspace", "kind", "name", "enabled", "credentials", "settings", "rate_limit_per_second")


@admin.register(Channel)
class ChannelAdmin(WorkspaceScopedAdmin):
    form = ChannelForm
    list_display = ("name", "kind", "workspace", "enabled", "webhook_url")
    list_filter = ("kind", ("workspace", admin.RelatedOnlyFieldListFilter))
    readonly_fields = ("uuid", "webhook_url", "verify_token", "embed_code")
    actions = ["activate"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        self._activate(request, obj)

    @admin.action(description=_("Connect the selected channels with their providers again"))
    def activate(self, request, queryset):
        for channel in queryset:
            self._activate(request, channel)

    def _activate(self, request, channel) -> None:
        """Telegram learns the webhook address here; a refusal is shown, the channel kept."""
        try:
            channel_activate(channel=channel)
        except ProviderError as error:
            messages.error(
                request,
                _("%(channel)s was saved, but %(provider)s refused to connect it: %(detail)s (%(code)s)")
                % {
                    "channel": channel.name,
                    "provider": channel.get_kind_display(),
                    "detail": error.detail,
                    "code": error.code,
                },
            )

    @admin.display(description=_("web chat embed code"))
    def embed_code(self, channel):
        if channel.kind != ChannelKind.WEBCHAT or not channel.pk:
            return "-"
        return format_html(
            "<code>{}</code><br>{}",
            channel.embed_code,
            _(
                "For signed-in customers, set window.parleySettings = {customerId, customerHash} before it; "
                "customerHash is the hex HMAC-SHA256 of customerId keyed with the webhook verify token."
            ),
        )


@admin.register(MessageTemplate)
class MessageTemplateAdmin(WorkspaceScopedAdmin):
    """The provider-approved templates operators may send once the customer-service window has
    closed (the inbox offers them), and campaigns use."""

    list_display = ("name", "language", "channel", "category", "status", "workspace")
    list_filter = ("status", "category", ("workspace", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "body")


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(WorkspaceScopedAdmin):
    list_display = ("url", "workspace", "enabled", "consecutive_failures", "created_at")
    list_filter = ("enabled", ("workspace", admin.RelatedOnlyFieldListFilter))
    readonly_fields = ("secret", "consecutive_failures", "disabled_reason")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        webhook_subscriptions_changed(workspace_id=obj.workspace_id)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(WorkspaceScopedAdmin):
    """Every event sent to a subscription, with the receiver's last answer; replay from here."""

    list_display = ("event", "subscription", "state", "attempts", "last_status_code", "created_at")
    list_filter = ("state", "event", ("workspace", admin.RelatedOnlyFieldListFilter))
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ["replay"]

    def has_add_permission(self, request):
        return False

    @admin.action(description=_("Replay the selected deliveries"))
    def replay(self, request, queryset):
        for delivery in queryset:
            webhook_replay(delivery=delivery)
        messages.success(request, _("Queued to be sent again."))
