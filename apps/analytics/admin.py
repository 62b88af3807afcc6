"""Analytics in the admin: each workspace's reporting settings (service-level targets, the
scheduled export), and the event log, read-only, to see what a conversation's numbers came from."""

import re

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from apps.analytics.models import Event, Settings
from apps.core.admin import WorkspaceScopedAdmin


class SettingsForm(forms.ModelForm):
    class Meta:
        model = Settings
        fields = (
            *("workspace", "service_level_seconds", "email_service_level_seconds"),
            *("export_enabled", "export_every_minutes", "export_format", "export_prefix"),
        )

    def clean_export_prefix(self):
        prefix = self.cleaned_data["export_prefix"].strip().strip("/")
        if not re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", prefix) or ".." in prefix.split("/"):
            raise ValidationError(_("A folder path of letters, digits, '.', '_' and '-', e.g. exports/parley."))
        return prefix


@admin.register(Settings)
class SettingsAdmin(WorkspaceScopedAdmin):
    """One per workspace; a workspace without one has the defaults and no scheduled export."""

    form = SettingsForm

    list_display = (
        *("__str__", "service_level_seconds", "email_service_level_seconds"),
        *("export_enabled", "export_every_minutes", "export_format", "last_export_at"),
    )
    list_select_related = ("workspace",)
    fieldsets = [
        (None, {"fields": ("workspace",)}),
        (
            _("Service level"),
            {
                "fields": ("service_level_seconds", "email_service_level_seconds"),
                "description": _("The share of conversations whose first response came within the target."),
            },
        ),
        (
            _("Scheduled export"),
            {
                "fields": (
                    "export_enabled",
                    "export_every_minutes",
                    "export_format",
                    "export_prefix",
                    "last_export_at",
                ),
                "description": _(
                    "Every so often, the conversations closed since the previous file are written to "
                    "<prefix>/<workspace>/conversations-<UTC time>.csv (or .xlsx) in the export storage "
                    "(a local folder, or the S3-compatible bucket ANALYTICS_EXPORT_BUCKET). See docs/reports.md."
                ),
            },
        ),
    ]

    def get_readonly_fields(self, request, obj=None):
        return ("workspace", "last_export_at") if obj is not None else ("last_export_at",)

    def has_add_permission(self, request):
        # One per workspace: only where one is missing.
        return (
            super().has_add_permission(request) and self.administered(request).filter(analytics_settings=None).exists()
        )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "workspace":
            field.queryset = field.queryset.filter(analytics_settings=None)
        return field


@admin.register(Event)
class EventAdmin(WorkspaceScopedAdmin):
    """The log the numbers are folded from, for inspection: nothing here is edited by hand
    (`manage.py analytics_rebuild` recomputes everything from it)."""

    list_display = ("id", "conversation_id", "kind", "at", "by", "author", "agent", "team", "value", "folded")
    list_filter = (("workspace", admin.RelatedOnlyFieldListFilter), "kind", "by", "folded")
    list_select_related = ("author__user", "agent__user", "team")
    search_fields = ("=conversation__id",)
    ordering = ("-id",)
    show_full_result_count = False  # the log is long; counting it all on every page is not worth it
    readonly_fields = [field.name for field in Event._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
