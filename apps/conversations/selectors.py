from django.db.models import Q, QuerySet

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


# The inbox -----------------------------------------------------------------------------------

INBOX_VIEWS = ("mine", "unassigned", "team", "all")
SEARCH_MESSAGE_LIMIT = 500


def inbox_view_filter(queryset: QuerySet[Conversation], *, view: str, membership) -> QuerySet[Conversation]:
    """Mine, Unassigned, My teams, All. An API token (no membership) sees All."""
    if view == "mine":
        return queryset.filter(assignee=membership) if membership else queryset.none()
    if view == "unassigned":
        return queryset.filter(assignee__isnull=True)
    if view == "team":
        return queryset.filter(team__in=membership.teams.all()) if membership else queryset.none()
    return queryset


def conversation_search(queryset: QuerySet[Conversation], *, workspace_id: int, query: str) -> QuerySet[Conversation]:
    """By contact name (word prefixes), phone (last digits or the whole number), email, or the
    words of a message. Contacts' personal data is encrypted, so names, phones and emails are
    matched through their blind tokens (apps/contacts/services.search_tokens_for); message text
    through PostgreSQL full-text search on the indexed `simple` vector."""
    from django.contrib.postgres.search import SearchQuery, SearchVector

    from apps.contacts.models import Contact
    from apps.contacts.services import search_tokens_for_query

    query = query.strip()[:200]
    if not query:
        return queryset
    tokens = search_tokens_for_query(query)
    contacts = (
        Contact.objects.filter(workspace_id=workspace_id, search_tokens__contains=tokens).values("pk")
        if tokens
        else Contact.objects.none().values("pk")
    )
    matching_messages = (
        Message.objects.annotate(search=SearchVector("text", config="simple"))
        .filter(workspace_id=workspace_id, search=SearchQuery(query, config="simple", search_type="websearch"))
        .order_by("-created_at")
        .values("conversation_id")[:SEARCH_MESSAGE_LIMIT]
    )
    return queryset.filter(Q(contact__in=contacts) | Q(pk__in=matching_messages))


def with_last_message(queryset: QuerySet[Conversation]) -> QuerySet[Conversation]:
    """Each row's newest message (not system events) as {text, kind, direction, sender_kind}, in
    the same query: one index probe per row on message_timeline."""
    from django.db.models import OuterRef, Subquery
    from django.db.models.functions import JSONObject, Left

    newest = (
        Message.objects.filter(conversation=OuterRef("pk"))
        .exclude(kind=Message.Kind.EVENT)
        .order_by("-created_at", "-id")
        .values(
            preview=JSONObject(text=Left("text", 140), kind="kind", direction="direction", sender_kind="sender_kind")
        )[:1]
    )
    return queryset.annotate(last_message=Subquery(newest))
