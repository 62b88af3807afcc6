from django.db.models import Q, QuerySet

from apps.conversations.models import Attachment, Conversation, Message
from apps.workspaces.models import Membership


def attachment_get_for_member(*, user, attachment_uuid) -> Attachment | None:
    workspaces = Membership.objects.filter(user=user).values("workspace_id")
    return Attachment.objects.filter(uuid=attachment_uuid, workspace_id__in=workspaces).first()


def conversation_list(*, workspace) -> QuerySet[Conversation]:
    return Conversation.objects.filter(workspace=workspace).select_related("contact", "channel", "assignee__user")


# A message shows its channel's kind: the channel's credentials (encrypted) and settings stay in
# the database rather than being decrypted once per message of a long thread.
TIMELINE_CHANNEL_DEFERRED = ("channel__credentials", "channel__settings")


def message_timeline(*, conversation: Conversation) -> QuerySet[Message]:
    return with_files_flag(
        Message.objects.filter(conversation=conversation)
        .select_related("channel")
        .defer(*TIMELINE_CHANNEL_DEFERRED)
        .order_by("created_at", "id")
    )


def with_files_flag(queryset: QuerySet[Message]) -> QuerySet[Message]:
    """Whether each message has attachments (one probe per row), for messages_attachments_load."""
    from django.db.models import Exists, OuterRef

    return queryset.annotate(has_files=Exists(Attachment.objects.filter(message_id=OuterRef("pk"))))


def messages_attachments_load(messages: list[Message]) -> None:
    """Loads a page of timeline messages' attachments in one query, for those that have any
    (with_files_flag); the rest share one empty list. prefetch_related would give every message
    of the page a QuerySet of its own pointing back at the message: some twenty objects in a
    reference cycle per message, which only CPython's full collections free (a 200-message page
    left 4,400, and the full collection they brought on took 100-250 ms on the bench)."""
    from django.db.models import prefetch_related_objects

    # Where prefetch_related keeps a relation's rows: message.attachments.all() reads them there.
    cache = "_prefetched_objects_cache"
    flagged = [message for message in messages if getattr(message, "has_files", None) is not None]
    flagged = [message for message in flagged if "attachments" not in getattr(message, cache, {})]
    prefetch_related_objects([message for message in flagged if message.has_files], "attachments")
    none = Attachment.objects.none()
    for message in flagged:
        if not message.has_files:
            setattr(message, cache, {**getattr(message, cache, {}), "attachments": none})


# The inbox -----------------------------------------------------------------------------------

INBOX_VIEWS = ("mine", "unassigned", "team", "queue", "all")
# What an inbox row shows (payloads.conversation_event, the API's serializer, the cursor's and
# the ordering's fields), of the conversation, its contact and its channel: the rest stays in the
# database instead of being parsed (and the contact's personal data decrypted) fifty times a request.
LIST_FIELDS = (
    "workspace",
    "contact",
    "channel",
    "status",
    "assignee",
    "team",
    "category",
    "priority",
    "language",
    "window_expires_at",
    "opened_at",
    "first_response_at",
    "closed_at",
    "snoozed_until",
    "last_message_at",
    "waiting_since",
    "unread_count",
    "authorized",
    "csat_score",
    "queued_at",
    "contact__name",
    "channel__kind",
)


def inbox_rows(queryset: QuerySet[Conversation]) -> QuerySet[Conversation]:
    """The list's rows: the fields a row shows, the tag ids, and for a contact without a name
    the phone or email it is shown by instead (still encrypted; see contact_unsealed)."""
    from django.db.models import Case, F, TextField, When

    def when_unnamed(field: str) -> Case:
        # TextField, not the model's EncryptedTextField: nothing is decrypted unless shown.
        return Case(When(contact__name="", then=F(f"contact__{field}")), output_field=TextField())

    rows = queryset.only(*LIST_FIELDS).prefetch_related(None)
    return with_tag_ids(rows.annotate(unnamed_phone=when_unnamed("phone"), unnamed_email=when_unnamed("email")))


def contact_unsealed(conversation: Conversation) -> None:
    """Gives an inbox row's unnamed contact the phone and email str(contact) falls back on,
    from inbox_rows' annotations, instead of a query per row for the deferred fields."""
    from apps.core.crypto import decrypt

    if not hasattr(conversation, "unnamed_phone") or conversation.contact.name:
        return
    conversation.contact.phone = decrypt(conversation.unnamed_phone) if conversation.unnamed_phone else ""
    conversation.contact.email = decrypt(conversation.unnamed_email) if conversation.unnamed_email else ""


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


NAMED = (
    "SELECT 1 FROM contacts_contact k WHERE k.id = conversations_conversation.contact_id "
    "AND k.search_tokens @> %s::varchar(16)[]"
)
# A name on at least 2% of the newest conversations fills a page of 50 within some 2,500 probes
# of a contact each (a few ms); 10 in 500 tells that apart from a rarer name by chance only
# once in thousands of searches (a name on 0.5% of them, "omar hassan", averages 2.5 in 500).
RECENT_NAMED = 10
NAMED_LATELY = f"""
    SELECT 1 FROM (
        SELECT id, contact_id FROM conversations_conversation WHERE workspace_id = %s
        ORDER BY last_message_at DESC, id DESC LIMIT {RECENT_SAMPLE}
    ) conversations_conversation WHERE EXISTS ({NAMED} OFFSET 0) OFFSET {RECENT_NAMED - 1} LIMIT 1
"""  # noqa: S608 (constants)


def _named_lately(workspace_id: int, tokens: list[str]) -> bool:
    """Whether enough of the newest conversations are with people so named (it stops at the
    tenth): then reading the newest conversations and checking each one's contact fills a
    page after a few hundred probes, where joining every match (thousands) and sorting them
    took 20-30 ms."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(NAMED_LATELY, [workspace_id, tokens])
        return cursor.fetchone() is not None


def _by_contact(workspace_id: int, tokens: list[str]):
    """People so named (or with such a phone or email): a list of ids when they are few (most
    searches: a phone, an email, a full name, a word that is no name), else a probe per row when
    they are common among the newest conversations, else PostgreSQL's semi-join."""
    from apps.contacts.models import Contact

    matching = Contact.objects.filter(search_tokens__contains=tokens).order_by()
    found = list(matching.values_list("pk", flat=True)[: FEW + 1])
    if len(found) <= FEW:
        return Q(contact_id__in=found)
    if _named_lately(workspace_id, tokens):
        return _per_row(NAMED, [tokens])
    return Q(contact__in=matching.values("pk"))


def conversation_search(queryset: QuerySet[Conversation], *, workspace_id: int, query: str) -> QuerySet[Conversation]:
    """By contact name (word prefixes), phone (last digits or the whole number), email, or the
    words of a message. Contacts' personal data is encrypted, so names, phones and emails are
    matched through their blind tokens (apps/contacts/services.search_tokens_for, GIN-indexed,
    with the workspace's own token among them so the index intersects both); message text
    through PostgreSQL full-text search on the indexed `simple` vector.

    Words and names common in the newest conversations are probed row by row (each
    conversation's few messages, or its contact, through their indexes); rarer ones are looked
    up in the GIN indexes as a list of conversations or contacts: two short lists PostgreSQL
    ORs as bitmaps."""
    from apps.contacts.services import search_tokens_for_query

    query = query.strip()[:200]
    if not query:
        return queryset
    tokens = search_tokens_for_query(query, workspace_id=workspace_id)
    by_text = _by_text(workspace_id, query)
    return queryset.filter(_by_contact(workspace_id, tokens) | by_text) if tokens else queryset.filter(by_text)


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
    return with_files_flag(
        Message.objects.filter(workspace_id=contact.workspace_id, conversation__contact=contact)
        .select_related("channel")
        .defer(*TIMELINE_CHANNEL_DEFERRED)
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
