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


# A filter that most conversations pass is best checked row by row while the newest conversations
# are read in index order (the page's 50 are found after a few hundred probes); one that few pass
# is best answered from its own index as a short list of ids. PostgreSQL's estimates cannot tell
# the two apart here (a tag's rows spread over a million conversations of twenty workspaces; words
# that always come together, "broken eggs", counted as independent), so these filters measure
# which case they are in and say so in the SQL: a list of ids, or a correlated EXISTS with
# OFFSET 0, which PostgreSQL keeps as a per-row probe instead of hashing every match first.
FEW = 500  # up to this many matches: a list of ids
COMMON_WORD_SHARE = 0.005  # a word in at least this share of messages is "common" (pg_stats)


TAGGED = "SELECT 1 FROM conversations_conversation_tags t WHERE t.conversation_id = conversations_conversation.id"
SAYS = (
    "SELECT 1 FROM conversations_message m WHERE m.conversation_id = conversations_conversation.id AND "
    "to_tsvector('simple'::regconfig, COALESCE(m.text, '')) @@ websearch_to_tsquery('simple'::regconfig, %s)"
)


def _per_row(sql: str, params: list):
    from django.db.models import BooleanField
    from django.db.models.expressions import RawSQL

    return RawSQL(f"EXISTS ({sql} OFFSET 0)", params, output_field=BooleanField())  # noqa: S611 (constants above)


def with_tag(queryset: QuerySet[Conversation], *, tag_id: int) -> QuerySet[Conversation]:
    """Conversations carrying a tag: the ids when the tag is rare, else a probe per row."""
    through = Conversation.tags.through
    tagged = list(through.objects.filter(tag_id=tag_id).values_list("conversation_id", flat=True)[: FEW + 1])
    if len(tagged) <= FEW:
        return queryset.filter(pk__in=tagged)
    return queryset.filter(_per_row(f"{TAGGED} AND t.tag_id = %s", [tag_id]))


_word_shares_cache: dict = {}  # {"until": monotonic time, "shares": {word: share}}


def _word_shares() -> dict[str, float]:
    """How common each of the most common words of messages is (PostgreSQL's statistics of the
    text-search index), cached for ten minutes."""
    import time

    from django.db import connection

    if _word_shares_cache.get("until", 0) > time.monotonic():
        return _word_shares_cache["shares"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats "
            "WHERE tablename = 'message_text_search'"
        )
        row = cursor.fetchone()
    shares = dict(zip(row[0], row[1], strict=False)) if row and row[0] else {}
    _word_shares_cache.update(until=time.monotonic() + 600, shares=shares)
    return shares


def _common_words(query: str) -> bool:
    """Whether every word searched for is common: then together they may well be too."""
    import re

    words = re.findall(r"\w+", query.casefold())
    shares = _word_shares()
    return bool(words) and min(shares.get(word, 0.0) for word in words) >= COMMON_WORD_SHARE


RECENT_SAMPLE, RECENT_MATCHES = 500, 5
SAID_LATELY = f"""
    SELECT 1 FROM (
        SELECT id FROM conversations_conversation WHERE workspace_id = %s
        ORDER BY last_message_at DESC, id DESC LIMIT {RECENT_SAMPLE}
    ) conversations_conversation WHERE EXISTS ({SAYS} OFFSET 0) OFFSET {RECENT_MATCHES - 1} LIMIT 1
"""  # noqa: S608 (constants)


def _said_lately(workspace_id: int, query: str) -> bool:
    """Common words may still never come together ("refund cancel"): whether they do in a few
    of the newest conversations (it stops at the fifth) tells whether probing row by row will
    fill a page soon."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(SAID_LATELY, [workspace_id, query])
        return cursor.fetchone() is not None


def _by_text(workspace_id: int, query: str):
    from django.contrib.postgres.search import SearchQuery, SearchVector

    if _common_words(query) and _said_lately(workspace_id, query):
        return _per_row(SAYS, [query])
    matches = (
        Message.objects.annotate(search=SearchVector("text", config="simple"))
        .filter(workspace_id=workspace_id, search=SearchQuery(query, config="simple", search_type="websearch"))
        .order_by()
        .values_list("conversation_id", flat=True)
        .distinct()
    )
    found = list(matches[: FEW + 1])
    return Q(pk__in=found) if len(found) <= FEW else _per_row(SAYS, [query])


def _by_contact(tokens: list[str]) -> Q:
    from apps.contacts.models import Contact

    matching = Contact.objects.filter(search_tokens__contains=tokens)
    found = list(matching.values_list("pk", flat=True)[: FEW + 1])
    return Q(contact_id__in=found) if len(found) <= FEW else Q(contact__in=matching.values("pk"))


def conversation_search(queryset: QuerySet[Conversation], *, workspace_id: int, query: str) -> QuerySet[Conversation]:
    """By contact name (word prefixes), phone (last digits or the whole number), email, or the
    words of a message. Contacts' personal data is encrypted, so names, phones and emails are
    matched through their blind tokens (apps/contacts/services.search_tokens_for, GIN-indexed,
    with the workspace's own token among them so the index intersects both); message text
    through PostgreSQL full-text search on the indexed `simple` vector.

    Words common in the newest conversations are probed row by row (each conversation's few
    messages through its index); rarer ones are looked up in the GIN index as a list of
    conversations, and so are contacts: two short lists PostgreSQL ORs as bitmaps."""
    from apps.contacts.services import search_tokens_for_query

    query = query.strip()[:200]
    if not query:
        return queryset
    tokens = search_tokens_for_query(query, workspace_id=workspace_id)
    by_text = _by_text(workspace_id, query)
    return queryset.filter(_by_contact(tokens) | by_text) if tokens else queryset.filter(by_text)


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
