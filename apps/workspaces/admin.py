from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.utils.translation import gettext_lazy as _

from apps.core.admin import WorkspaceScopedAdmin, WorkspaceScopedInline
from apps.core.exceptions import DomainError
from apps.workspaces import services
from apps.workspaces.models import (
    AgentStatus,
    ApiToken,
    Membership,
    Shift,
    ShiftException,
    Team,
    User,
    Workspace,
)


@admin.register(User)
class ParleyUserAdmin(UserAdmin):
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
                )
            except DomainError as error:
                messages.error(request, error.detail)
        for membership in formset.deleted_objects:
            try:
                services.membership_remove(actor=request.user, membership=membership)
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
                actor=request.user, workspace=obj.workspace, user=obj.user, role=obj.role
            )
        except DomainError as error:
            messages.error(request, error.detail)
            membership = Membership.objects.filter(workspace=obj.workspace, user=obj.user).first()
        obj.pk = membership.pk if membership else None

    def delete_model(self, request, obj):
        services.membership_remove(actor=request.user, membership=obj)

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
        token, raw = services.api_token_create(workspace=obj.workspace, name=obj.name, created_by=request.user)
        obj.pk = token.pk
        messages.warning(
            request,
            _("API token created. Copy it now; it will not be shown again: %(token)s") % {"token": raw},
        )

    @admin.action(description=_("Revoke the selected tokens"))
    def revoke(self, request, queryset):
        for token in queryset:
            services.api_token_revoke(token=token)
        messages.success(request, _("Revoked."))
