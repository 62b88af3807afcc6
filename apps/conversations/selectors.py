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

INBOX_VIEWS = ("mine", "unassigned", "team", "queue", "all")
# What the inbox list never shows, of the contact and channel it joins.
LIST_DEFERRED = (
    "contact__phone",
    "contact__email",
    "contact__search_tokens",
    "contact__custom_fields",
    "contact__marketing_consent",
    "channel__credentials",
    "channel__settings",
    "closing_summary",
    "csat_comment",
)


def inbox_view_filter(queryset: QuerySet[Conversation], *, view: str, membership) -> QuerySet[Conversation]:
    """Mine, Unassigned, My teams, Queue (waiting in a team's queue for a free agent), All. An API
    token (no membership) sees All. The list orders the queue with `ordering=queued_at`."""
    if view == "mine":
        return queryset.filter(assignee=membership) if membership else queryset.none()
    if view == "unassigned":
        return queryset.filter(assignee__isnull=True)
    if view == "team":
        return queryset.filter(team__in=membership.teams.all()) if membership else queryset.none()
    if view == "queue":
        queued = queryset.filter(queued_at__isnull=False, assignee__isnull=True)
        return queued.exclude(status=Conversation.Status.CLOSED)
    return queryset


def with_tag(queryset: QuerySet[Conversation], *, tag_id: int) -> QuerySet[Conversation]:
    """Conversations carrying a tag, as a semi-join the planner can probe row by row while it
    reads the newest conversations in index order."""
    from django.db.models import Exists, OuterRef

    through = Conversation.tags.through
    return queryset.filter(Exists(through.objects.filter(conversation_id=OuterRef("pk"), tag_id=tag_id)))


def conversation_search(queryset: QuerySet[Conversation], *, workspace_id: int, query: str) -> QuerySet[Conversation]:
    """By contact name (word prefixes), phone (last digits or the whole number), email, or the
    words of a message. Contacts' personal data is encrypted, so names, phones and emails are
    matched through their blind tokens (apps/contacts/services.search_tokens_for, GIN-indexed,
    with the workspace's own token among them so the index intersects both);
    message text through PostgreSQL full-text search on the indexed `simple` vector.

    Both are correlated semi-joins on the conversation (EXISTS), not lists computed up front: for
    a common word PostgreSQL walks the newest conversations and checks each one's few messages
    through `message_timeline`, stopping at the page's 50; for a rare one it takes the matches
    from the GIN index."""
    from django.contrib.postgres.search import SearchQuery, SearchVector
    from django.db.models import Exists, OuterRef

    from apps.contacts.models import Contact
    from apps.contacts.services import search_tokens_for_query

    query = query.strip()[:200]
    if not query:
        return queryset
    by_text = Exists(
        Message.objects.annotate(search=SearchVector("text", config="simple")).filter(
            conversation_id=OuterRef("pk"),
            search=SearchQuery(query, config="simple", search_type="websearch"),
        )
    )
    tokens = search_tokens_for_query(query, workspace_id=workspace_id)
    if not tokens:
        return queryset.filter(by_text)
    by_contact = Q(contact__in=Contact.objects.filter(search_tokens__contains=tokens).values("pk"))
    return queryset.filter(by_contact | by_text)


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


def with_tag_ids(queryset: QuerySet[Conversation]) -> QuerySet[Conversation]:
    """Each row's tag ids as an array in the same query (instead of a prefetch per page)."""
    from django.contrib.postgres.expressions import ArraySubquery
    from django.db.models import OuterRef

    through = Conversation.tags.through
    return queryset.annotate(
        tag_id_list=ArraySubquery(through.objects.filter(conversation_id=OuterRef("pk")).values("tag_id"))
    )


def with_bot(queryset: QuerySet[Conversation]) -> QuerySet[Conversation]:
    """Each row's bot (the name of the workflow it follows now, or null) in the same query: one
    probe per row on the index of active runs (run_one_active)."""
    from django.db.models import OuterRef, Subquery

    from apps.workflows.models import Run

    active = Run.objects.filter(conversation_id=OuterRef("pk"), state__in=Run.ACTIVE).values("workflow__name")[:1]
    return queryset.annotate(active_bot=Subquery(active))


def conversation_active_bot(*, conversation_id: int) -> str | None:
    from apps.workflows.models import Run

    active = Run.objects.filter(conversation_id=conversation_id, state__in=Run.ACTIVE)
    return active.values_list("workflow__name", flat=True).first()


def contact_conversations(*, contact) -> QuerySet[Conversation]:
    return with_bot(
        with_last_message(
            Conversation.objects.filter(workspace_id=contact.workspace_id, contact=contact)
            .select_related("contact", "channel")
            .prefetch_related("tags")
            .order_by("-last_message_at", "-id")
        )
    )


def contact_timeline(*, contact) -> QuerySet[Message]:
    """The person's messages on every channel, for the inbox's thread."""
    return (
        Message.objects.filter(workspace_id=contact.workspace_id, conversation__contact=contact)
        .select_related("channel")
        .prefetch_related("attachments")
    )


def conversation_get(*, workspace_id: int, pk: int) -> Conversation | None:
    return Conversation.objects.filter(workspace_id=workspace_id, pk=pk).first()


def inbox_bootstrap(*, context, user) -> dict:
    """Everything the inbox page needs before its first request: who I am, my colleagues, teams,
    tags, channels, quick replies, approved templates, unread notifications, the bots an agent may
    start from the conversation's header. Loaded once with the page; kept current by the websocket."""
    from apps.connectors.models import Channel, MessageTemplate
    from apps.contacts.models import Tag
    from apps.conversations.models import Notification, QuickReply
    from apps.conversations.payloads import notification_event
    from apps.workflows.selectors import shortcut_workflows
    from apps.workspaces.models import Team

    workspace, membership = context.workspace, context.membership
    members = Membership.objects.filter(workspace=workspace).select_related("user", "agent_status").order_by("id")
    teams = Team.objects.filter(workspace=workspace).prefetch_related("members").order_by("name")
    my_teams = [team.pk for team in teams if membership in team.members.all()]
    quick_replies = QuickReply.objects.filter(workspace=workspace).filter(Q(team__isnull=True) | Q(team__in=my_teams))
    templates = MessageTemplate.objects.filter(workspace=workspace, status=MessageTemplate.Status.APPROVED)
    notifications = Notification.objects.filter(recipient=membership, read_at__isnull=True)[:50]
    shortcuts = shortcut_workflows(workspace_id=workspace.pk)
    return {
        "me": {
            "user_id": user.pk,
            "membership_id": membership.pk,
            "name": user.display_name,
            "username": user.username,
            "role": membership.role,
            "is_supervisor": membership.is_admin,
            "status": getattr(getattr(membership, "agent_status", None), "status", "offline"),
            "team_ids": my_teams,
        },
        "workspace": {
            "id": workspace.pk,
            "slug": workspace.slug,
            "name": workspace.name,
            "reply_warning_minutes": workspace.reply_warning_minutes,
            "reply_breach_minutes": workspace.reply_breach_minutes,
            "closing_categories": workspace.closing_categories,
        },
        "members": [
            {
                "id": m.pk,
                "user_id": m.user_id,
                "name": m.user.display_name,
                "username": m.user.username,
                "role": m.role,
                "status": getattr(getattr(m, "agent_status", None), "status", "offline"),
            }
            for m in members
        ],
        "teams": [{"id": t.pk, "name": t.name, "categories": t.categories, "languages": t.languages} for t in teams],
        "tags": [{"id": t.pk, "name": t.name, "color": t.color} for t in Tag.objects.filter(workspace=workspace)],
        "channels": [_channel_for_inbox(c) for c in Channel.objects.filter(workspace=workspace)],
        "quick_replies": [{"id": q.pk, "shortcut": q.shortcut, "text": q.text} for q in quick_replies],
        "templates": [
            {
                "id": t.pk,
                "channel_id": t.channel_id,
                "name": t.name,
                "language": t.language,
                "body": t.body,
                "variable_count": t.variable_count,
                "variables": [variable.label for variable in t.variables],
            }
            for t in templates
        ],
        "notifications": [notification_event(n) for n in notifications],
        "workflows": [{"id": w.pk, "name": w.name, "shortcut": _shortcut_of(w.trigger_settings)} for w in shortcuts],
    }


def _shortcut_of(trigger_settings) -> str:
    shortcut = trigger_settings.get("shortcut") if isinstance(trigger_settings, dict) else None
    return shortcut if isinstance(shortcut, str) else ""


def _channel_for_inbox(channel) -> dict:
    from apps.connectors.registry import connector_for

    connector = connector_for(channel)
    return {
        "id": channel.pk,
        "name": channel.name,
        "kind": channel.kind,
        "reply_window_hours": connector.reply_window_hours,
        # A person's reply may go later than the window (Messenger's HUMAN_AGENT tag).
        "human_reply_window_hours": connector.human_reply_window_hours,
        "templates": connector.templates,
    }
