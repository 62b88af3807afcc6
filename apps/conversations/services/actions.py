"""What operators do to a conversation: assign and transfer, set priority, category and tags,
snooze, close with a category and a summary, reopen; and the notifications those acts and
@mentions raise. Every act leaves a system event in the timeline and is published to the
workspace after commit; `check_may_act` is the one rule of who may act on what."""

import re
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from apps.analytics.services import event_record
from apps.connectors.services import webhook_emit
from apps.conversations import payloads
from apps.conversations.models import Conversation, DeliveryState, Message, Notification
from apps.core import realtime
from apps.core.events import build_event
from apps.core.exceptions import DomainError, PermissionDenied
from apps.workspaces.models import ADMIN_ROLES, Membership

UNSET = object()
MENTION = re.compile(r"(?<![\w@])@([\w.+-]{1,150})")


def check_may_act(*, membership: Membership | None, conversation: Conversation) -> None:
    """Supervisors, owners and integrations act on anything in their workspace. An agent acts on
    what is unassigned, theirs, or their team's; a colleague's conversation is taken over by a
    supervisor, not by another agent."""
    if membership is None or membership.role in ADMIN_ROLES:
        return
    if conversation.assignee_id in (None, membership.id):
        return
    if conversation.team_id and membership.teams.filter(pk=conversation.team_id).exists():
        return
    raise PermissionDenied("This conversation is assigned to a colleague; ask a supervisor to transfer it.")


def _name(user) -> str:
    if user is None:
        return "Parley"
    return user.get_full_name() or user.username


def _by(actor) -> str:
    """Who did it, for the analytics: a person, or Parley itself (routing, a rule, an integration)."""
    return "agent" if actor is not None else "system"


def _locked(conversation: Conversation) -> Conversation:
    return (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("contact", "channel")
        .get(pk=conversation.pk)
    )


def _event(conversation: Conversation, actor, action: str, text: str, **details) -> Message:
    """A line in the timeline that says what happened; never sent to the customer."""
    from apps.conversations.services.messages import _publish_message

    message = Message.objects.create(
        workspace_id=conversation.workspace_id,
        conversation=conversation,
        channel_id=conversation.channel_id,
        direction=Message.Direction.OUTBOUND,
        sender_kind=Message.Sender.SYSTEM,
        author=actor,
        kind=Message.Kind.EVENT,
        text=text,
        payload={"action": action, "actor_id": getattr(actor, "pk", None), **details},
        state=DeliveryState.SENT,
    )
    _publish_message(message)
    return message


def _save(conversation: Conversation, fields: dict, *, origin: str | None = None) -> None:
    for name, value in fields.items():
        setattr(conversation, name, value)
    conversation.save(update_fields=list(fields))
    realtime.publish_on_commit(
        conversation.workspace_id,
        build_event("conversation.updated", conversation=payloads.conversation_event(conversation)),
        origin=origin,
    )


def conversation_assign(
    *,
    conversation: Conversation,
    actor,
    membership: Membership | None,
    assignee=UNSET,
    team=UNSET,
    note: str = "",
    origin: str | None = None,
) -> Conversation:
    """Assigns to a person and/or a team (None unassigns). With a note it is a transfer: the note
    goes into the timeline for whoever picks it up."""
    check_may_act(membership=membership, conversation=conversation)
    for given in (assignee, team):
        if given not in (UNSET, None) and given.workspace_id != conversation.workspace_id:
            raise DomainError("That person or team is not in this workspace.", code="invalid_assignee")
    with transaction.atomic():
        conversation = _locked(conversation)
        fields, details = {}, {}
        if assignee is not UNSET and assignee != conversation.assignee:
            fields["assignee"] = assignee
            details["assignee_id"] = getattr(assignee, "pk", None)
        if team is not UNSET and team != conversation.team:
            fields["team"] = team
            details["team_id"] = getattr(team, "pk", None)
        if not fields:
            return conversation
        previous = conversation.assignee
        reopened = conversation.status == Conversation.Status.CLOSED
        if reopened:
            fields.update(status=Conversation.Status.OPEN, closed_at=None)
            event_record(conversation=conversation, kind="reopened", by=_by(actor), user=actor)
        if fields.get("assignee") is not None:
            fields["queued_at"] = None  # out of the team's queue
        _save(conversation, fields, origin=origin)
        event_record(
            conversation=conversation,
            kind="assigned",
            by=_by(actor),
            user=actor,
            previous_id=getattr(previous, "pk", None),
            transfer=bool(note.strip()) or (previous is not None and "assignee" in fields),
        )
        _after_reassign(conversation, actor, previous, fields)
        _event(conversation, actor, "transferred" if note else "assigned", _assign_text(actor, fields), **details)
        if note.strip():
            from apps.conversations.services.messages import note_add

            note_add(conversation=conversation, author=actor, text=note, origin=origin)
        webhook_emit(
            workspace_id=conversation.workspace_id,
            event="conversation.assigned",
            data=payloads.conversation_event(conversation),
        )
        if fields.get("assignee") is not None and fields["assignee"].user_id != getattr(actor, "pk", None):
            notify(
                recipient=fields["assignee"], kind=Notification.Kind.ASSIGNED, conversation=conversation, actor=actor
            )
    return conversation


def _after_reassign(conversation: Conversation, actor, previous, fields: dict) -> None:
    """A person assigned it: the bot steps back. Whoever lost it may have room for the next in
    their teams' queues."""
    from apps.workflows import routing
    from apps.workflows.services import runs_stop

    if actor is not None and fields.get("assignee") is not None:
        runs_stop(conversation=conversation, actor=actor, reason="assigned to a person")
    if previous is not None and "assignee" in fields:
        routing.queues_dispatch_on_commit(routing.teams_of(previous))


def _assign_text(actor, fields: dict) -> str:
    parts = []
    if "assignee" in fields:
        person = fields["assignee"]
        parts.append(f"assigned to {_name(person.user)}" if person else "unassigned")
    if "team" in fields:
        parts.append(f"team {fields['team'].name}" if fields["team"] else "no team")
    return f"{_name(actor)}: {', '.join(parts)}"


def conversation_update(
    *,
    conversation: Conversation,
    actor,
    membership: Membership | None,
    priority=UNSET,
    category=UNSET,
    tags=UNSET,
    origin: str | None = None,
) -> Conversation:
    check_may_act(membership=membership, conversation=conversation)
    if priority is not UNSET and priority not in Conversation.Priority.values:
        raise DomainError("Unknown priority.", code="invalid", fields={"priority": ["Not a priority."]})
    with transaction.atomic():
        conversation = _locked(conversation)
        fields = {}
        if priority is not UNSET and priority != conversation.priority:
            fields["priority"] = priority
        if category is not UNSET and (category or "") != conversation.category:
            fields["category"] = (category or "")[:60]
            event_record(conversation=conversation, kind="categorised", by=_by(actor), user=actor, category=category)
        if tags is not UNSET:
            if any(tag.workspace_id != conversation.workspace_id for tag in tags):
                raise DomainError("Tags must belong to this workspace.", code="invalid", fields={"tags": ["Unknown."]})
            added = {tag for tag in tags if tag not in set(conversation.tags.all())}
            conversation.tags.set(tags)
            from apps.workflows.services import event_on_commit

            for tag in added:
                event_on_commit(conversation_id=conversation.pk, trigger="tag_added", details={"tag": tag.name})
        if fields or tags is not UNSET:
            _save(conversation, fields, origin=origin)
    return conversation


def conversation_snooze(
    *, conversation: Conversation, actor, membership: Membership | None, until: datetime, origin: str | None = None
) -> Conversation:
    check_may_act(membership=membership, conversation=conversation)
    if until <= timezone.now():
        raise DomainError("Snooze until a time in the future.", code="invalid", fields={"until": ["In the past."]})
    with transaction.atomic():
        conversation = _locked(conversation)
        _save(conversation, {"status": Conversation.Status.SNOOZED, "snoozed_until": until}, origin=origin)
        _event(conversation, actor, "snoozed", f"{_name(actor)}: snoozed until {until:%Y-%m-%d %H:%M} UTC")
    return conversation


def conversation_close(
    *,
    conversation: Conversation,
    actor,
    membership: Membership | None,
    category: str = "",
    summary: str = "",
    origin: str | None = None,
    from_run: int | None = None,
) -> Conversation:
    """Closes with what it was about (one of the workspace's closing categories, when it has
    any) and a summary; the customer's next message reopens it. A bot still talking to the
    customer stops (unless it is the one closing: `from_run`); a workflow triggered by the close
    (the satisfaction survey) starts after commit."""
    check_may_act(membership=membership, conversation=conversation)
    allowed = conversation.workspace.closing_categories
    if allowed and category not in allowed:
        raise DomainError(
            "Choose one of the workspace's closing categories.",
            code="invalid",
            fields={"category": [f"One of: {', '.join(allowed)}."]},
        )
    with transaction.atomic():
        conversation = _locked(conversation)
        if conversation.status == Conversation.Status.CLOSED:
            return conversation
        fields = {
            "status": Conversation.Status.CLOSED,
            "closed_at": timezone.now(),
            "snoozed_until": None,
            "closing_summary": summary,
            "waiting_since": None,
            "queued_at": None,
        }
        if category:
            fields["category"] = category
        _save(conversation, fields, origin=origin)
        by = "bot" if from_run else _by(actor)
        event_record(conversation=conversation, kind="closed", by=by, user=actor, category=category, summary=summary)
        _after_close(conversation, actor, from_run)
        text = f"{_name(actor)}: closed" + (f" as {category}" if category else "")
        _event(conversation, actor, "closed", text, category=category, summary=summary)
        webhook_emit(
            workspace_id=conversation.workspace_id,
            event="conversation.closed",
            data={**payloads.conversation_event(conversation), "summary": summary},
        )
    return conversation


def _after_close(conversation: Conversation, actor, from_run: int | None) -> None:
    from apps.workflows import routing
    from apps.workflows.models import Trigger
    from apps.workflows.services import event_on_commit, runs_stop

    runs_stop(conversation=conversation, actor=actor, reason="closed", keep_run_id=from_run)
    if conversation.assignee_id is not None:
        routing.queues_dispatch_on_commit(routing.teams_of(conversation.assignee))
    event_on_commit(conversation_id=conversation.pk, trigger=Trigger.CONVERSATION_CLOSED)


def conversation_csat_record(
    *, conversation: Conversation, score: int, comment: str = "", origin: str | None = None
) -> Conversation:
    """The customer's rating of the conversation (1 to 5) and what they added; a later rating
    replaces an earlier one. Whoever collected it (the bot's survey, the widget, the order system
    through the API) calls this; subscribers hear `csat.submitted`."""
    if not 1 <= score <= 5:
        raise DomainError("A rating is from 1 to 5.", code="invalid", fields={"score": ["From 1 to 5."]})
    with transaction.atomic():
        conversation = _locked(conversation)
        first = conversation.csat_score != score
        fields = {"csat_score": score, "csat_comment": comment, "csat_agent": conversation.assignee}
        _save(conversation, fields, origin=origin)
        event_record(conversation=conversation, kind="rated", by="contact", value=score)
        text = f"Customer rated {score}/5" + (f": {comment}" if comment else "")
        _event(conversation, None, "csat", text, score=score)
        if first:
            _csat_alert(conversation, score)
        webhook_emit(
            workspace_id=conversation.workspace_id,
            event="csat.submitted",
            data={**payloads.conversation_event(conversation), "score": score, "comment": comment},
        )
    return conversation


def _csat_alert(conversation: Conversation, score: int) -> None:
    """A low rating tells the workspace's supervisors at once (the bot settings say how low)."""
    from apps.workflows.services import bot_settings

    if score > bot_settings(conversation.workspace_id).csat_alert_below:
        return
    supervisors = Membership.objects.filter(workspace_id=conversation.workspace_id, role__in=ADMIN_ROLES)
    for supervisor in supervisors.select_related("user"):
        notify(recipient=supervisor, kind=Notification.Kind.CSAT_LOW, conversation=conversation)


def conversation_reopen(
    *, conversation: Conversation, actor, membership: Membership | None, origin: str | None = None
) -> Conversation:
    check_may_act(membership=membership, conversation=conversation)
    with transaction.atomic():
        conversation = _locked(conversation)
        if conversation.status == Conversation.Status.OPEN:
            return conversation
        was_closed = conversation.status == Conversation.Status.CLOSED
        fields = {"status": Conversation.Status.OPEN, "closed_at": None, "snoozed_until": None}
        _save(conversation, fields, origin=origin)
        if was_closed:  # a snoozed one woken early is the same conversation going on
            event_record(conversation=conversation, kind="reopened", by=_by(actor), user=actor)
        _event(conversation, actor, "reopened", f"{_name(actor)}: reopened")
    return conversation


def conversation_mark_read(*, conversation: Conversation, origin: str | None = None) -> None:
    """The operator has seen the customer's messages: the unread badge goes."""
    if conversation.unread_count and Conversation.objects.filter(pk=conversation.pk).update(unread_count=0):
        conversation.unread_count = 0
        realtime.publish_on_commit(
            conversation.workspace_id,
            build_event("conversation.updated", conversation=payloads.conversation_event(conversation)),
            origin=origin,
        )


def conversations_wake_snoozed(*, now: datetime) -> int:
    """Snoozed conversations whose time has come are open again (every minute, by beat)."""
    woken = 0
    for conversation_id in Conversation.objects.filter(
        status=Conversation.Status.SNOOZED, snoozed_until__lte=now
    ).values_list("id", flat=True)[:1000]:
        with transaction.atomic():
            conversation = _locked(Conversation(pk=conversation_id))
            if conversation.status != Conversation.Status.SNOOZED:
                continue
            _save(conversation, {"status": Conversation.Status.OPEN, "snoozed_until": None})
            _event(conversation, None, "woke", "Snooze ended: open again")
            woken += 1
    return woken


# Notifications -------------------------------------------------------------------------------


def notify(*, recipient: Membership, kind: str, conversation: Conversation, actor=None, message=None) -> Notification:
    notification = Notification.objects.create(
        workspace_id=conversation.workspace_id,
        recipient=recipient,
        kind=kind,
        conversation=conversation,
        message=message,
        actor=actor,
    )
    realtime.notify_user_on_commit(
        recipient.user_id,
        build_event("notification.created", notification=payloads.notification_event(notification)),
        workspace_id=conversation.workspace_id,
    )
    return notification


def mentions_notify(*, message: Message) -> list[Notification]:
    """`@username` in an internal note tells that colleague (a member of this workspace)."""
    usernames = {name.rstrip(".") for name in MENTION.findall(message.text)}
    if not usernames:
        return []
    mentioned = Membership.objects.filter(workspace_id=message.workspace_id, user__username__in=usernames)
    return [
        notify(
            recipient=member,
            kind=Notification.Kind.MENTION,
            conversation=message.conversation,
            actor=message.author,
            message=message,
        )
        for member in mentioned.select_related("user")
        if member.user_id != message.author_id
    ]


def notification_mark_read(*, membership: Membership, ids: list[int] | None = None) -> int:
    unread = Notification.objects.filter(recipient=membership, read_at__isnull=True)
    if ids is not None:
        unread = unread.filter(pk__in=ids)
    return unread.update(read_at=timezone.now())


def typing_announce(*, conversation: Conversation, user, origin: str | None = None) -> None:
    """'X is typing': fleeting, so it goes to the sockets now and is not kept for catch-up."""
    realtime.publish_ephemeral(
        conversation.workspace_id,
        build_event("conversation.typing", conversation_id=conversation.pk, user_id=user.pk, name=_name(user)),
        origin=origin,
    )
