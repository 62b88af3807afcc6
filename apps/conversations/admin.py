from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from apps.conversations.models import Conversation, InboundEvent, Message, QuickReply
from apps.conversations.services import inbound_event_replay
from apps.core.admin import WorkspaceScopedAdmin


@admin.register(Conversation)
class ConversationAdmin(WorkspaceScopedAdmin):
    list_display = ("id", "contact", "channel", "status", "assignee", "team", "last_message_at")
    list_filter = ("status", ("workspace", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("contact", "channel", "assignee__user", "team")
    raw_id_fields = ("contact",)

    def has_add_permission(self, request):
        return False


@admin.register(Message)
class MessageAdmin(WorkspaceScopedAdmin):
    list_display = ("id", "conversation", "direction", "kind", "state", "error_code", "created_at")
    list_filter = ("direction", "state", "kind", ("workspace", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("conversation",)
    raw_id_fields = ("conversation", "reply_to", "author")
    readonly_fields = [f.name for f in Message._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(InboundEvent)
class InboundEventAdmin(WorkspaceScopedAdmin):
    """Webhook deliveries as they arrived; a failed one shows its error and can be replayed."""

    list_display = ("id", "channel", "state", "attempts", "received_at", "error")
    list_filter = ("state", ("workspace", admin.RelatedOnlyFieldListFilter))
    readonly_fields = ("channel", "state", "attempts", "error", "received_at", "processed_at", "headers", "body")
    actions = ["replay"]

    def has_add_permission(self, request):
        return False

    @admin.action(description=_("Replay the selected deliveries"))
    def replay(self, request, queryset):
        for event in queryset:
            inbound_event_replay(event=event)
        messages.success(request, _("Queued for processing again."))


@admin.register(QuickReply)
class QuickReplyAdmin(WorkspaceScopedAdmin):
    """Canned answers: operators type `/shortcut` in the reply box. Variables:
    {{contact.first_name}}, {{contact.name}}, {{agent.name}}, {{agent.first_name}}."""

    list_display = ("shortcut", "text", "team", "workspace")
    list_filter = (("workspace", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("shortcut", "text")
