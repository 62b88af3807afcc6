"""The admin site and the one mixin that scopes every tenant ModelAdmin to the workspaces the
signed-in person administers (supervisor or owner); only a superuser sees across workspaces."""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.contrib.admin.utils import unquote
from django.db import models
from django.http import Http404
from django.utils.translation import gettext_lazy as _


class ParleyAdminSite(admin.AdminSite):
    site_header = _("Parley administration")
    site_title = _("Parley")
    index_title = _("Configuration")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from apps.workspaces.forms import AdminLoginForm

        self.login_form = AdminLoginForm

    def has_permission(self, request):
        from apps.workspaces.selectors import workspaces_administered_by

        user = request.user
        if not (user.is_active and user.is_authenticated):
            return False
        return user.is_superuser or workspaces_administered_by(user).exists()


class ParleyAdminConfig(AdminConfig):
    default_site = "apps.core.admin.ParleyAdminSite"


def scoped_choices(request, model, administered):
    """What a foreign key to `model` may offer a non-superuser in the admin: rows of the
    workspaces they administer; people only if they are members of one (user accounts are made
    by superusers, so nobody else needs to pick a stranger, and the list of everyone's accounts
    would tell one tenant who works for the others). None: the model is not a tenant's."""
    from django.contrib.auth import get_user_model

    from apps.workspaces.models import Workspace

    queryset = model._default_manager.all()
    if request.user.is_superuser:
        return queryset
    if model is Workspace:
        return administered
    if model is get_user_model():
        return queryset.filter(memberships__workspace__in=administered).distinct()
    if any(field.name == "workspace" for field in model._meta.fields):
        return queryset.filter(workspace__in=administered)
    return None


class WorkspaceScopedAdmin(admin.ModelAdmin):
    """Rows, choices in foreign keys, and object pages are limited to the person's workspaces;
    any other object's page answers 404, as if it did not exist."""

    workspace_lookup = "workspace"
    superuser_only_add = False
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # a bare host means https

    def administered(self, request):
        if not hasattr(request, "_administered_workspaces"):
            from apps.workspaces.selectors import workspaces_administered_by

            request._administered_workspaces = workspaces_administered_by(request.user)
        return request._administered_workspaces

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(**{f"{self.workspace_lookup}__in": self.administered(request)}).distinct()

    def _allowed(self, request) -> bool:
        return request.user.is_active and (request.user.is_superuser or self.administered(request).exists())

    def has_module_permission(self, request):
        return self._allowed(request)

    def has_view_permission(self, request, obj=None):
        return self._allowed(request)

    def has_change_permission(self, request, obj=None):
        return self._allowed(request)

    def has_delete_permission(self, request, obj=None):
        return self._allowed(request)

    def has_add_permission(self, request):
        return request.user.is_superuser if self.superuser_only_add else self._allowed(request)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        queryset = scoped_choices(request, db_field.related_model, self.administered(request))
        if queryset is not None:
            kwargs["queryset"] = queryset
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        queryset = scoped_choices(request, db_field.related_model, self.administered(request))
        if queryset is not None:
            kwargs["queryset"] = queryset
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def _require_visible(self, request, object_id):
        if object_id and self.get_object(request, unquote(object_id)) is None:
            raise Http404

    def change_view(self, request, object_id, form_url="", extra_context=None):
        self._require_visible(request, object_id)
        return super().change_view(request, object_id, form_url, extra_context)

    def delete_view(self, request, object_id, extra_context=None):
        self._require_visible(request, object_id)
        return super().delete_view(request, object_id, extra_context)

    def history_view(self, request, object_id, extra_context=None):
        self._require_visible(request, object_id)
        return super().history_view(request, object_id, extra_context)


class WorkspaceScopedInline(admin.TabularInline):
    """Inline rows take the workspace of their parent, so nobody picks it by hand."""

    exclude = ("workspace",)
    extra = 0

    # The parent's admin is already scoped; an inline only ever shows on its pages.
    def has_view_permission(self, request, obj=None):
        return request.user.is_active

    def has_change_permission(self, request, obj=None):
        return request.user.is_active

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active

    def has_add_permission(self, request, obj=None):
        return request.user.is_active

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        from apps.workspaces.selectors import workspaces_administered_by

        queryset = scoped_choices(request, db_field.related_model, workspaces_administered_by(request.user))
        if queryset is not None:
            kwargs["queryset"] = queryset
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
