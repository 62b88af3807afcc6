from django.db.models import QuerySet

from apps.conversations.models import Attachment, Conversation, Message
from apps.workspaces.models import Membership


def attachment_get_for_member(*, user, attachment_uuid) -> Attachment | None:
    workspaces = Membership.objects.filter(user=user).values("workspace_id")
    return Attachment.objects.filter(uuid=attachment_uuid, workspace_id__in=workspaces).first()


def conversation_list(*, workspace) -> QuerySet[Conversation]:
    return Conversation.objects.filter(workspace=workspace).select_related("contact", "channel", "assignee__user")


def message_timeline(*, conversation: Conversation) -> QuerySet[Message]:
    return (
        Message.objects.filter(conversation=conversation)
        .select_related("channel")
        .prefetch_related("attachments")
        .order_by("created_at", "id")
    )
