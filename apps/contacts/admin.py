import json

from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.admin.utils import unquote
from django.contrib.contenttypes.models import ContentType
from django.http import FileResponse, Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _

from apps.contacts import privacy
from apps.contacts.models import Contact, ContactIdentity, CustomFieldDefinition, Order, StockEvent, Tag
from apps.contacts.services import contact_index, contact_merge, contact_set_email, contact_set_phone
from apps.core.admin import WorkspaceScopedAdmin, WorkspaceScopedInline
from apps.core.exceptions import DomainError
from apps.workspaces.models import AuditEntry
from apps.workspaces.services import audit_record


class IdentityInline(WorkspaceScopedInline):
    model = ContactIdentity
    fields = ("channel", "external_id", "display_name", "reachable")
    readonly_fields = ("channel", "external_id", "display_name")
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Contact)
class ContactAdmin(WorkspaceScopedAdmin):
    # Name, phone and email are encrypted, so the list cannot be searched by them in SQL; the
    # inbox search (blind indexes) is where people are found by phone or email.
    list_display = ("__str__", "workspace", "lifecycle_stage", "country", "created_at", "last_seen_at")
    list_filter = ("lifecycle_stage", ("workspace", admin.RelatedOnlyFieldListFilter))
    search_fields = ("external_id",)
    filter_horizontal = ("tags",)
    readonly_fields = ("merged_into", "created_at", "last_seen_at", "erased_at")
    inlines = [IdentityInline]
    actions = ["merge_into_oldest"]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        response = super().change_view(request, object_id, form_url, extra_context)
        if response.status_code == 200:
            # The page shows the person's name, phone, email and identities: a view, whether it
            # was opened or shown again with a form error after a POST (a save redirects).
            audit_record(
                action=AuditEntry.Action.VIEW, obj=self.get_object(request, unquote(object_id)), request=request
            )
        return response

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        return [
            path("<path:object_id>/export/", wrap(self.export_view), name="contacts_contact_export"),
            path("<path:object_id>/erase/", wrap(self.erase_view), name="contacts_contact_erase"),
            *super().get_urls(),
        ]

    def _visible(self, request, object_id) -> Contact:
        contact = self.get_object(request, unquote(object_id))
        if contact is None:
            raise Http404
        return contact

    def export_view(self, request, object_id):
        """Everything Parley holds about the person, as a ZIP (JSON and their files)."""
        contact = self._visible(request, object_id)
        archive = privacy.contact_export(contact=contact, actor=request.user, request=request)
        return FileResponse(archive, as_attachment=True, filename=privacy.contact_export_filename(contact))

    def erase_view(self, request, object_id):
        """A confirmation page; its POST erases the person (see privacy.contact_erase)."""
        contact = self._visible(request, object_id)
        if request.method == "POST":
            try:
                counts = privacy.contact_erase(contact=contact, actor=request.user, request=request)
            except DomainError as error:
                messages.error(request, error.detail)
            else:
                messages.success(
                    request,
                    _(
                        "Contact #%(id)s erased: %(messages)d messages and %(files)d files in %(conversations)d "
                        "conversations emptied, %(identities)d channel identities removed."
                    )
                    % {"id": contact.pk, **counts},
                )
            return redirect(reverse("admin:contacts_contact_change", args=[contact.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": contact,
            "title": _("Erase contact #%(id)s") % {"id": contact.pk},
        }
        return TemplateResponse(request, "admin/contacts/contact/erase_confirm.html", context)

    # The admin's own history names an object by str(), which for a contact is their name: these
    # write it by id, and also put saves and deletions in the audit log.
    def log_addition(self, request, obj, message):
        audit_record(action=AuditEntry.Action.CREATE, obj=obj, details=_changes(message), request=request)
        return _log_entry(request, obj, ADDITION, message)

    def log_change(self, request, obj, message):
        audit_record(action=AuditEntry.Action.CHANGE, obj=obj, details=_changes(message), request=request)
        return _log_entry(request, obj, CHANGE, message)

    def log_deletions(self, request, queryset):
        for contact in queryset:
            audit_record(action=AuditEntry.Action.DELETE, obj=contact, request=request)
        return [_log_entry(request, contact, DELETION, "") for contact in queryset]

    @admin.action(description=_("Merge the selected contacts into the oldest of them"))
    def merge_into_oldest(self, request, queryset):
        contacts = list(queryset.filter(merged_into__isnull=True).order_by("created_at"))
        if len(contacts) < 2:
            messages.error(request, _("Select at least two contacts to merge."))
            return
        survivor = contacts[0]
        try:
            for duplicate in contacts[1:]:
                survivor = contact_merge(survivor=survivor, duplicate=duplicate)
                audit_record(
                    action=AuditEntry.Action.CHANGE, obj=survivor, details={"merged": duplicate.pk}, request=request
                )
        except DomainError as error:
            messages.error(request, error.detail)
            return
        messages.success(
            request, _("Merged %(count)d contacts into %(name)s.") % {"count": len(contacts), "name": survivor}
        )

    def save_model(self, request, obj, form, change):
        if "phone" in form.changed_data:
            contact_set_phone(obj, obj.phone)
        if "email" in form.changed_data:
            contact_set_email(obj, obj.email)
        contact_index(obj)
        super().save_model(request, obj, form, change)


def _changes(message) -> dict:
    return {"changes": message} if message else {}


def _log_entry(request, contact: Contact, flag: int, message) -> LogEntry:
    return LogEntry.objects.create(
        user_id=request.user.pk,
        content_type_id=ContentType.objects.get_for_model(Contact).pk,
        object_id=str(contact.pk),
        object_repr=contact.audit_repr,
        action_flag=flag,
        change_message=json.dumps(message) if isinstance(message, list) else message,
    )


@admin.register(Tag)
class TagAdmin(WorkspaceScopedAdmin):
    list_display = ("name", "workspace", "color")
    list_filter = (("workspace", admin.RelatedOnlyFieldListFilter),)


@admin.register(CustomFieldDefinition)
class CustomFieldAdmin(WorkspaceScopedAdmin):
    list_display = ("label", "key", "type", "workspace")
    list_filter = (("workspace", admin.RelatedOnlyFieldListFilter),)


@admin.register(Order)
class OrderAdmin(WorkspaceScopedAdmin):
    list_display = ("external_id", "contact", "status", "total", "currency", "placed_at", "workspace")
    list_filter = ("status", ("workspace", admin.RelatedOnlyFieldListFilter))
    search_fields = ("external_id", "tracking_number")
    raw_id_fields = ("contact",)
    readonly_fields = ("history",)


@admin.register(StockEvent)
class StockEventAdmin(WorkspaceScopedAdmin):
    list_display = ("sku", "in_stock", "quantity", "restocked", "created_at", "workspace")
    list_filter = ("in_stock", "restocked", ("workspace", admin.RelatedOnlyFieldListFilter))
    search_fields = ("sku",)
