from django import forms
from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from apps.connectors.models import Channel
from apps.core.admin import WorkspaceScopedAdmin


class ChannelForm(forms.ModelForm):
    credentials = forms.JSONField(
        required=False,
        help_text=_("Secrets, stored encrypted. WhatsApp: access_token, app_secret, phone_number_id, waba_id."),
    )

    class Meta:
        model = Channel
        fields = ("workspace", "kind", "name", "enabled", "credentials", "settings", "rate_limit_per_second")


@admin.register(Channel)
class ChannelAdmin(WorkspaceScopedAdmin):
    form = ChannelForm
    list_display = ("name", "kind", "workspace", "enabled", "webhook_url")
    list_filter = ("kind", ("workspace", admin.RelatedOnlyFieldListFilter))
    readonly_fields = ("uuid", "webhook_url", "verify_token")
