import csv
import json

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from apps.core.admin import WorkspaceScopedAdmin, WorkspaceScopedInline
from apps.core.exceptions import DomainError
from apps.workspaces import services
from apps.workspaces.models import (
    AgentStatus,
    ApiToken,
    AuditEntry,
    Membership,
    PrivacySettings,
    Role,
    Shift,
    ShiftException,
    Team,
    User,
    Workspace,
)


class AuditedAdmin(admin.ModelAdmin):
    """Mix into a ModelAdmin whose saves and deletions belong in the audit log (workflows,
    channels, webhook subscriptions, people's accounts): Django's admin calls these three after
    every save and before every deletion, whichever form, inline or action made it, so no save
    path is missed."""

    def audit_repr(self, obj) -> str:
        """How the entry names the object; "" for its `audit_repr` or str(). Override where
        str() could carry a secret (a URL with a token in its query)."""
        return ""

    def log_addition(self, request, obj, message):
        self._audit(request, obj, AuditEntry.Action.CREATE, message)
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        self._audit(request, obj, AuditEntry.Action.CHANGE, message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):
        for obj in queryset:
            self._audit(request, obj, AuditEntry.Action.DELETE, "")
        return super().log_deletions(request, queryset)

    def _audit(self, request, obj, action: str, message) -> None:
        services.audit_record(
            action=action,
            obj=obj,
            object_repr=self.audit_repr(obj),
            details=_change_details(message),
            request=request,
        )


def _change_details(message) -> dict:
    """The admin's change message names the fields and inline rows that changed, not their values."""
    return {"changes": message} if message else {}


@admin.register(User)
class ParleyUserAdmin(AuditedAdmin, UserAdmin):
    """Superusers only. Audited: making someone a superuser or staff, or setting their password,
    is a change of role (the entry names the fields, never the password; it has no workspace,
    so only superusers read it)."""

    fieldsets = (*UserAdmin.fieldsets, (_("Preferences"), {"fields": ("language",)}))


class MembershipInline(WorkspaceScopedInline):
    model = Membership
    exclude = ()  # its foreign key to the workspace is the inline's own link
    fields = ("user", "role")


@admin.register(Workspace)
class WorkspaceAdmin(WorkspaceScopedAdmin):
    workspace_lookup = "id"
    superuser_only_add = True
    list_display = ("name", "slug", "timezone", "default_language", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [MembershipInline]

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "timezone" in form.changed_data:
            from apps.broadcasts.campaigns import workspace_campaigns_reschedule

            workspace_campaigns_reschedule(workspace_id=obj.pk)  # "11:00" stays 11:00 in the new zone

    def save_formset(self, request, form, formset, change):
        for membership in formset.save(commit=False):
            try:
                services.membership_set_role(
                    actor=request.user,
                    workspace=form.instance,
                    user=membership.user,
                    role=membership.role,
                    request=request,
                )
            except DomainError as error:
                messages.error(request, error.detail)
        for membership in formset.deleted_objects:
            try:
                services.membership_remove(actor=request.user, membership=membership, request=request)
            except DomainError as error:
                messages.error(request, error.detail)


class AgentStatusInline(WorkspaceScopedInline):
    model = AgentStatus
    fields = ("status", "capacity", "last_seen_at")
    readonly_fields = ("last_seen_at",)
    can_delete = False
    max_num = 1


@admin.register(Membership)
class MembershipAdmin(WorkspaceScopedAdmin):
    list_display = ("user", "workspace", "role", "status")
    list_filter = (("workspace", admin.RelatedOnlyFieldListFilter), "role")
    search_fields = ("user__username", "user__first_name", "user__last_name", "user__email")
    list_select_related = ("user", "workspace", "agent_status")
    inlines = [AgentStatusInline]

    @admin.display(description=_("status"))
    def status(self, obj):
        return getattr(getattr(obj, "agent_status", None), "status", "—")

    def save_model(self, request, obj, form, change):
        try:
            membership = services.membership_set_role(
                actor=request.user, workspace=obj.workspace, user=obj.user, role=obj.role, request=request
            )
        except DomainError as error:
            messages.error(request, error.detail)
            membership = Membership.objects.filter(workspace=obj.workspace, user=obj.user).first()
        obj.pk = membership.pk if membership else None

    def delete_model(self, request, obj):
        services.membership_remove(actor=request.user, membership=obj, request=request)

    def delete_queryset(self, request, queryset):
        for membership in queryset:  # through the service: the owner rule and the audit log hold here too
            try:
                services.membership_remove(actor=request.user, membership=membership, request=request)
            except DomainError as error:
                messages.error(request, error.detail)

    def save_formset(self, request, form, formset, change):
        for status in formset.save(commit=False):
            status.workspace_id = form.instance.workspace_id
            status.save()


class ShiftInline(WorkspaceScopedInline):
    model = Shift
    fields = ("weekday", "starts_at", "ends_at")


class ShiftExceptionInline(WorkspaceScopedInline):
    model = ShiftException
    fields = ("date", "closed", "starts_at", "ends_at", "reason")


class TeamAdminForm(forms.ModelForm):
    class Meta:
        model = Team
        fields = ("workspace", "name", "members", "languages", "categories")

    def clean(self):
        cleaned = super().clean()
        workspace = cleaned.get("workspace")
        strangers = [m for m in cleaned.get("members", []) if workspace and m.workspace_id != workspace.id]
        if strangers:
            self.add_error("members", _("Members must belong to the team's workspace."))
        return cleaned


@admin.register(Team)
class TeamAdmin(WorkspaceScopedAdmin):
    form = TeamAdminForm
    list_display = ("name", "workspace", "member_count", "languages", "categories")
    list_filter = (("workspace", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("name",)
    filter_horizontal = ("members",)
    inlines = [ShiftInline, ShiftExceptionInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("members")

    @admin.display(description=_("members"))
    def member_count(self, obj):
        return len(obj.members.all())

    def save_formset(self, request, form, formset, change):
        for row in formset.save(commit=False):
            row.workspace_id = form.instance.workspace_id
            row.save()
        for row in formset.deleted_objects:
            row.delete()


class ApiTokenAdminForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ("workspace", "name")


@admin.register(ApiToken)
class ApiTokenAdmin(WorkspaceScopedAdmin):
    form = ApiTokenAdminForm
    list_display = ("name", "workspace", "hint", "created_at", "last_used_at", "revoked_at")
    list_filter = (("workspace", admin.RelatedOnlyFieldListFilter),)
    readonly_fields = ("hint", "created_by", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "workspace", "name") if obj else ()

    def save_model(self, request, obj, form, change):
        if change:
            return
        token, raw = services.api_token_create(
            workspace=obj.workspace, name=obj.name, created_by=request.user, request=request
        )
        obj.pk = token.pk
        messages.warning(
            request,
            _("API token created. Copy it now; it will not be shown again: %(token)s") % {"token": raw},
        )

    @admin.action(description=_("Revoke the selected tokens"))
    def revoke(self, request, queryset):
        for token in queryset:
            services.api_token_revoke(token=token, actor=request.user, request=request)
        messages.success(request, _("Revoked."))

    def delete_model(self, request, obj):
        services.audit_record(action=AuditEntry.Action.DELETE, obj=obj, request=request)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for token in queryset:
            services.audit_record(action=AuditEntry.Action.DELETE, obj=token, request=request)
        super().delete_queryset(request, queryset)


class OwnersOnlyAdmin(WorkspaceScopedAdmin):
    """Scoped to the workspaces the person owns: supervisors do not even see the entry."""

    def administered(self, request):
        if not hasattr(request, "_owned_workspaces"):
            request._owned_workspaces = Workspace.objects.filter(
                memberships__user=request.user, memberships__role=Role.OWNER
            )
        return request._owned_workspaces


@admin.register(PrivacySettings)
class PrivacySettingsAdmin(AuditedAdmin, OwnersOnlyAdmin):
    """The retention period decides what gets purged: owners set it, and who did is audited."""

    list_display = ("workspace", "retention_days", "purged_until")
    readonly_fields = ("purged_until",)

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "workspace") if obj is not None else self.readonly_fields


class AuditActorFilter(admin.SimpleListFilter):
    title = _("who")
    parameter_name = "actor"

    def lookups(self, request, model_admin):
        people = (
            model_admin.get_queryset(request)
            .exclude(actor_label="")
            .values_list("actor_label", flat=True)
            .distinct()
            .order_by("actor_label")
        )
        return [(label, label) for label in people[:200]]

    def queryset(self, request, queryset):
        return queryset.filter(actor_label=self.value()) if self.value() else queryset


@admin.register(AuditEntry)
class AuditEntryAdmin(OwnersOnlyAdmin):
    """The audit log: owners read their workspaces' entries, filter and export them; nobody edits
    them (a superuser sees every workspace and the failed sign-ins of unknown names)."""

    list_display = ("at", "actor_label", "action", "object_type", "object_repr", "workspace", "ip")
    list_filter = (
        "action",
        "object_type",
        AuditActorFilter,
        ("at", admin.DateFieldListFilter),
        ("workspace", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("workspace",)
    search_fields = ("actor_label", "object_id", "object_repr")
    date_hierarchy = "at"
    actions = ["export_csv"]
    readonly_fields = (
        "at",
        "workspace",
        "actor",
        "actor_label",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "details",
        "ip",
    )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description=_("Export the selected entries as CSV"), permissions=["view"])
    def export_csv(self, request, queryset):
        """Streams the entries ticked (or, with "select all", every entry the filters left)."""
        rows = queryset.select_related("workspace").order_by("-at", "-id").iterator(chunk_size=2000)
        writer = csv.writer(_Echo())
        header = ["at", "workspace", "who", "action", "object type", "object id", "object", "details", "ip"]
        lines = (writer.writerow(row) for row in _with_header(header, (_audit_row(entry) for entry in rows)))
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
        name = f"audit-log-{timezone.now():%Y%m%d-%H%M%S}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


class _Echo:
    def write(self, value):
        return value


def _with_header(header, rows):
    yield header
    yield from rows


def _audit_row(entry: AuditEntry) -> list:
    return [
        entry.at.isoformat(),
        entry.workspace.slug if entry.workspace else "",
        entry.actor_label,
        entry.action,
        entry.object_type,
        entry.object_id,
        _csv_safe(entry.object_repr),
        _csv_safe(json.dumps(entry.details, ensure_ascii=False)) if entry.details else "",
        entry.ip or "",
    ]


def _csv_safe(value: str) -> str:
    """A spreadsheet runs a cell that starts with = + - @ as a formula; the text a user typed
    (a failed sign-in's name) must not."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
