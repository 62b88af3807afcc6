from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from apps.contacts.models import Contact, ContactIdentity, CustomFieldDefinition, Order, StockEvent, Tag
from apps.contacts.services import contact_index, contact_merge, contact_set_email, contact_set_phone
from apps.core.admin import WorkspaceScopedAdmin, WorkspaceScopedInline
from apps.core.exceptions import DomainError


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
    readonly_fields = ("merged_into", "created_at", "last_seen_at")
    inlines = [IdentityInline]
    actions = ["merge_into_oldest"]

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
