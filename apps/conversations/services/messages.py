"""Writes for conversations and messages: the inbound and outbound pipelines.

Inbound: `inbound_event_process` parses a stored webhook and applies each neutral event,
idempotently (a provider's id is unique per channel). Outbound: `message_send` records the
message as queued, and after commit `tasks.deliver_message` sends it."""

import base64
import dataclasses
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, F, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone
from psycopg.errors import DeadlockDetected

from apps.analytics.services import event_record, message_event_record
from apps.connectors.base import (
    InboundEdit,
    InboundMessage,
    ParseError,
    ReachabilityUpdate,
    StatusUpdate,
    TemplateStatusUpdate,
)
from apps.connectors.registry import connector_for
from apps.connectors.services import webhook_emit
from apps.connectors.templates import template_status_apply
from apps.contacts.models import ContactIdentity
from apps.contacts.services import contact_resolve, contact_touch
from apps.conversations import payloads
from apps.conversations.models import (
    DELIVERY_RANK,
    Attachment,
    Conversation,
    DeliveryState,
    InboundEvent,
    Message,
)
from apps.conversations.selectors import messages_attachments_load
from apps.core import realtime
from apps.core.events import build_event
from apps.core.exceptions import DomainError
from apps.core.memo import remembering
from apps.core.realtime import publish_on_commit
from apps.core.uploads import upload_check
from apps.workflows.selectors import automation_wanted, conversation_keeps_closed

logger = logging.getLogger(__name__)


class StatusForUnknownMessage(Exception):
    """A status arrived before the send that caused it was recorded; the task retries."""


# Inbound -------------------------------------------------------------------------------------


BASE64_BODY = "X-Parley-Body-Encoding"


# One statement, not the ORM's insert: a web process stores a hundred or more of these a
# second, and building the INSERT was most of a webhook's own time (the body is encrypted by its
# field, as the ORM would).
INBOUND_EVENT_INSERT = """INSERT INTO conversations_inboundevent
    (workspace_id, channel_id, body, headers, state, attempts, error, received_at)
    VALUES (%s, %s, %s, %s::jsonb, 'pending', 0, '', %s) RETURNING id"""


def inbound_event_store(*, channel, body: bytes, headers: dict) -> InboundEvent:
    """Keeps the delivery as it arrived; after commit a drainer is woken to apply it. A body that
    is not UTF-8 (an email's binary attachments) is kept as base64, byte for byte."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text, headers = base64.b64encode(body).decode("ascii"), {**headers, BASE64_BODY: "base64"}
    received_at = timezone.now()
    sealed = InboundEvent._meta.get_field("body").get_db_prep_save(text, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            INBOUND_EVENT_INSERT, [channel.workspace_id, channel.pk, sealed, json.dumps(headers), received_at]
        )
        (event_id,) = cursor.fetchone()
    transaction.on_commit(_waker.request)
    event = InboundEvent(
        pk=event_id,
        workspace_id=channel.workspace_id,
        channel=channel,
        body=text,
        headers=headers,
        received_at=received_at,
    )
    event._state.adding = False
    return event


class _Waker:
    """Wakes a drainer after a delivery is stored, from a thread of its own, so the provider's
    answer does not wait for Redis, and at most one wake-up waits at a time: under a burst a web
    process asks Redis a few hundred times a second less. A wake-up that had not started when a
    delivery was stored covers it (it runs after the commit); one already running may not, so a
    request made while one runs queues the next."""

    def __init__(self):
        self._lock = threading.Lock()
        self._queued = False
        self._pool, self._pid = None, None

    def request(self) -> None:
        with self._lock:
            if self._queued:
                return
            self._queued = True
            if self._pid != os.getpid():  # a forked process (a Celery child) needs its own thread
                self._pool, self._pid = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drain-wake"), os.getpid()
            pool = self._pool
        pool.submit(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._queued = False
        # A wake-up that fails (Redis or the broker down) must not turn the provider's 200 into a
        # 500 and make it send the delivery again: beat's `drain_inbound` (and the next webhook's
        # wake-up) picks the delivery up within a minute.
        try:
            inbound_drain_kick()
        except Exception:
            logger.warning("Could not wake a drainer; the stored delivery waits for the next one", exc_info=True)


_waker = _Waker()


# Stored deliveries are applied by a few long-running "drainer" tasks rather than one Celery task
# each: a drainer claims pending events in batches (SKIP LOCKED, so drainers never collide) and
# applies them one by one until none is left. At most INBOUND_DRAINERS run at once; each holds a
# slot in Redis while it works. A webhook only wakes a drainer when a slot is free, so under load
# the web process publishes almost nothing to Celery and the worker spends its time on messages,
# not on task overhead. A delivery whose wake-up was lost (Redis down at that instant) is picked
# up by the next drainer or by beat's `conversations.drain_inbound` a minute later at most.
INBOUND_BATCH = 50
INBOUND_CLAIM_TIMEOUT = timedelta(minutes=2)  # a claimed event whose drainer died is claimed again
INBOUND_MAX_ATTEMPTS = 5
INBOUND_DRAIN_SECONDS = 20  # then the drainer hands over to a fresh task (fair to other queues)
_SLOT_TTL = 120


def _drain_slot_key(slot: int) -> str:
    from apps.core.redis import key

    return key("inbound-drain", slot)


def inbound_drain_kick() -> bool:
    """Starts a drainer if a slot is free; True if one was started."""
    from apps.conversations.tasks import drain_inbound_events
    from apps.core.redis import get_redis

    # The first free slot, taken in one round trip: under load every webhook asks, and every slot is busy.
    take_first_free = (
        "for slot = 1, #KEYS do"
        " if redis.call('SET', KEYS[slot], '1', 'NX', 'EX', ARGV[1]) then return slot - 1 end"
        " end return -1"
    )
    slots = [_drain_slot_key(slot) for slot in range(settings.INBOUND_DRAINERS)]
    slot = get_redis().eval(take_first_free, len(slots), *slots, _SLOT_TTL)
    if slot < 0:
        return False
    drain_inbound_events.delay(slot)
    return True


def inbound_drain_release(*, slot: int) -> None:
    """A drainer that failed gives its slot back and wakes another if deliveries wait."""
    from apps.core.redis import get_redis

    try:
        get_redis().delete(_drain_slot_key(slot))
        if _claimable().exists():
            inbound_drain_kick()
    except Exception:  # the drainer's own error is the one to raise; beat wakes one within a minute
        logger.warning("A failed drainer could not give its slot back", exc_info=True)


def _claimable():
    # `state = 'pending'` is written into the statement: the partial index `inbound_event_pending`
    # serves only a plan that knows the value, and PostgreSQL keeps one plan for a prepared
    # statement without its parameters' values (config/settings.py). Passed as a parameter, the
    # claim went through every delivery ever stored, ten times as slow on the busy day.
    pending = RawSQL("conversations_inboundevent.state = 'pending'", [], output_field=BooleanField())
    return InboundEvent.objects.filter(pending).filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=timezone.now() - INBOUND_CLAIM_TIMEOUT)
    )


def inbound_events_claim(*, limit: int = INBOUND_BATCH) -> list[int]:
    """The oldest pending deliveries nobody is working on, now claimed by the caller; the claim
    counts as an attempt at each (one UPDATE for the batch rather than one per delivery)."""
    with transaction.atomic():
        ids = list(
            _claimable().select_for_update(skip_locked=True).order_by("id").values_list("pk", flat=True)[:limit]
        )
        if ids:
            InboundEvent.objects.filter(pk__in=ids).update(claimed_at=timezone.now(), attempts=F("attempts") + 1)
    return ids


def inbound_events_drain(*, slot: int, seconds: float = INBOUND_DRAIN_SECONDS, step_aside=None) -> int:
    """Applies pending deliveries until none is left (or `seconds` pass, or `step_aside()` says
    so between two batches: the task's `core.queue.short_task_waiting`); returns how many."""
    from apps.connectors.models import Channel
    from apps.conversations.tasks import drain_inbound_events
    from apps.core.redis import get_redis

    client, slot_key = get_redis(), _drain_slot_key(slot)
    deadline = time.monotonic() + seconds
    done = 0
    while True:
        client.expire(slot_key, _SLOT_TTL)
        ids = inbound_events_claim()
        if not ids:
            client.delete(slot_key)
            # Anything stored after the claim found nothing, whose wake-up saw this slot taken?
            if _claimable().exists() and client.set(slot_key, "1", nx=True, ex=_SLOT_TTL):
                continue
            return done
        # The batch's rows and their channels in two queries, not two per delivery.
        events = list(InboundEvent.objects.filter(pk__in=ids).order_by("id"))
        channels = Channel.objects.select_related("workspace").in_bulk({event.channel_id for event in events})
        # A channel deleted between the two reads took its deliveries with it (on delete cascade):
        # they are not applied, and the drainer goes on (a KeyError here stopped it, and inbound
        # waited two minutes for its slot to expire).
        events = [event for event in events if event.channel_id in channels]
        for event in events:
            event.channel = channels[event.channel_id]
        if events:
            _batch_apply(events)
        done += len(ids)
        # Past its slice, or another kind of task waits for this process (an operator's reply
        # to send): a fresh drainer goes on behind it, keeping the slot.
        if time.monotonic() > deadline or (step_aside is not None and step_aside()):
            drain_inbound_events.delay(slot)
            return done


def _batch_apply(events: list[InboundEvent]) -> None:
    """Applies a claimed batch in one transaction: one commit, one Redis round trip for the
    events the inbox hears of (realtime.batched), workspace settings read once (core.memo). Each
    delivery has its savepoint, so one that fails is rolled back alone and the rest land. The
    conversations a batch touches stay locked until it commits: a batch is a fraction of a second."""
    from apps.conversations.services import inbound_fast
    from apps.conversations.tasks import process_inbound_event

    applied = []
    with realtime.batched(), remembering(), transaction.atomic():
        # Plain texts from known customers in open conversations, set-wise (inbound_fast); the
        # rest one by one below. If the fast lane fails, all of it goes the long way.
        try:
            with transaction.atomic():
                fast, rest = inbound_fast.apply(events)
        except Exception:
            logger.warning("The inbound fast lane failed; its deliveries go one by one", exc_info=True)
            fast, rest = [], [(event, None) for event in events]
        applied += [event.pk for event in fast]
        for event, parsed in rest:
            event_id = event.pk
            try:
                with transaction.atomic():
                    inbound_event_process(event_id=event_id, claimed=event, mark=False, parsed=parsed)
                applied.append(event_id)
            except StatusForUnknownMessage:
                # Its message is being recorded right now; the single-event task retries it.
                transaction.on_commit(lambda pk=event_id: process_inbound_event.apply_async((pk,), countdown=2))
            except Exception as error:  # one bad delivery must not stop the rest
                if isinstance(error.__cause__, DeadlockDetected):
                    # Another drainer's batch holds a conversation this one needs, and the other
                    # way round: PostgreSQL gave up on this delivery. It may be claimed again now.
                    InboundEvent.objects.filter(pk=event_id).update(claimed_at=None)
                    continue
                logger.exception("inbound event %s failed", event_id)
                InboundEvent.objects.filter(pk=event_id).update(error=repr(error)[:2000])
                # Tried again after the claim times out; a delivery that keeps failing is parked
                # for a supervisor (admin: inbound events, replay).
                InboundEvent.objects.filter(pk=event_id, attempts__gte=INBOUND_MAX_ATTEMPTS).update(
                    state=InboundEvent.State.FAILED
                )
        InboundEvent.objects.filter(pk__in=applied, state=InboundEvent.State.PENDING).update(
            state=InboundEvent.State.PROCESSED, processed_at=timezone.now(), error=""
        )


def inbound_event_parse(event: InboundEvent) -> list:
    """The neutral events of a stored delivery; raises ParseError."""
    headers = dict(event.headers or {})
    raw = base64.b64decode(event.body) if headers.pop(BASE64_BODY, "") else event.body.encode()
    return connector_for(event.channel).parse(event.channel, raw, headers)


def inbound_event_process(
    *, event_id: int, claimed: InboundEvent | None = None, mark: bool = True, parsed: list | None = None
) -> None:
    """Parses and applies one stored delivery; every message, entry and change of a batch. A
    drainer passes the row it claimed (the claim counted the attempt; it marks its batch
    processed at once, `mark=False`); alone, it counts its own."""
    event = claimed
    if event is None:
        unfinished = InboundEvent.objects.filter(pk=event_id).exclude(state=InboundEvent.State.PROCESSED)
        if unfinished.update(attempts=F("attempts") + 1) != 1:
            return  # gone, or done by another worker
        event = InboundEvent.objects.select_related("channel", "channel__workspace").get(pk=event_id)
    if parsed is None:
        try:
            parsed = inbound_event_parse(event)
        except ParseError as error:
            InboundEvent.objects.filter(pk=event_id).update(state=InboundEvent.State.FAILED, error=str(error)[:2000])
            return
    for item in parsed:
        if isinstance(item, InboundMessage):
            inbound_message_apply(channel=event.channel, inbound=item)
        elif isinstance(item, StatusUpdate):
            delivery_status_apply(channel=event.channel, update=item)
        elif isinstance(item, InboundEdit):
            inbound_edit_apply(channel=event.channel, edit=item)
        elif isinstance(item, ReachabilityUpdate):
            reachability_apply(channel=event.channel, update=item)
        elif isinstance(item, TemplateStatusUpdate):
            template_status_apply(channel=event.channel, update=item)
    if mark:
        InboundEvent.objects.filter(pk=event_id).update(
            state=InboundEvent.State.PROCESSED, processed_at=timezone.now(), error=""
        )


def inbound_event_replay(*, event: InboundEvent) -> None:
    InboundEvent.objects.filter(pk=event.pk).update(state=InboundEvent.State.PENDING, error="")
    from apps.conversations.tasks import process_inbound_event

    transaction.on_commit(lambda: process_inbound_event.delay(event.pk))


def inbound_message_apply(*, channel, inbound: InboundMessage) -> Message | None:
    """Stores a customer's message once, in the right conversation, and tells the inbox. A
    repeated delivery is found under the conversation's lock and changes nothing (resolving its
    contact again is harmless: the identity is known by then)."""
    contact = _contact_of_thread(channel, inbound) or contact_resolve(
        channel=channel,
        external_id=inbound.sender_id,
        name=inbound.sender_name,
        phone=inbound.sender_phone,
        email=inbound.sender_email,
        customer_id=inbound.customer_id,
    )
    if inbound.sender_phone and not contact.phone:
        from apps.contacts.services import contact_phone_learned

        contact = contact_phone_learned(contact=contact, phone=inbound.sender_phone)
    with transaction.atomic():
        conversation, created = _conversation_locked(contact, channel)
        # A closed conversation whose customer is rating it in the bot's survey stays closed.
        surveyed = conversation.status == Conversation.Status.CLOSED and conversation_keeps_closed(
            conversation=conversation
        )
        opened = created or (conversation.status == Conversation.Status.CLOSED and not surveyed)
        # Checked again under the conversation's lock: concurrent duplicates queue up here.
        if Message.objects.filter(channel=channel, provider_id=inbound.provider_id).exists():
            return None
        inbound = _numbered_choice(conversation, channel, inbound)
        message = inbound_message_row(conversation, channel, inbound)
        if inbound.reply_to_provider_id:
            message.reply_to = Message.objects.filter(
                channel=channel, provider_id=inbound.reply_to_provider_id
            ).first()
        message.save(force_insert=True)
        automated = automation_wanted(conversation=conversation)
        _conversation_note_inbound(
            conversation, channel, inbound, surveyed=surveyed, cursor=None if automated else message.pk
        )
        # After the write (a duplicate delivery never gets here) and the window's update (a STOP is
        # confirmed inside it); before the event, which then says "reply to broadcast X".
        from apps.broadcasts.results import broadcast_inbound_apply

        broadcast_inbound_apply(message=message, conversation=conversation)
        if opened:
            source = "broadcast" if "broadcast_reply" in message.payload else "inbound"
            event_record(conversation=conversation, kind="opened" if created else "reopened", source=source)
        message_event_record(conversation=conversation, message=message)
        files = [media for media in (inbound.media, *inbound.extra_media) if media]
        attachments = [_attachment_expect(message, media) for media in files]
        # The new message's attachments are known: no query to list them for the event.
        message._prefetched_objects_cache = {"attachments": attachments}
        contact_touch(contact, name=inbound.sender_name)
        _publish_message(message)
        event = _publish_conversation(conversation)
        if opened:
            webhook_emit(workspace_id=conversation.workspace_id, event="conversation.opened", data=event)
        if automated:
            from apps.workflows.services import advance_on_commit

            advance_on_commit(conversation_id=conversation.pk, message_id=message.pk, opened=opened)
    if attachments:
        from apps.conversations.tasks import fetch_inbound_media

        for attachment in attachments:
            transaction.on_commit(lambda pk=attachment.id: fetch_inbound_media.delay(pk))
    return message


def _conversation_locked(contact, channel) -> tuple[Conversation, bool]:
    """The contact's conversation on this channel, locked, with its tag ids and its bot (for the
    event and automation_wanted) in the same query; made first if there is none (True)."""
    from apps.conversations.selectors import with_bot, with_tag_ids

    locked = with_bot(with_tag_ids(Conversation.objects.select_for_update(of=("self",))))
    conversation = locked.filter(contact=contact, channel=channel).first()
    created = conversation is None
    if created:
        made, created = Conversation.objects.get_or_create(
            contact=contact, channel=channel, defaults={"workspace_id": channel.workspace_id}
        )
        conversation = locked.get(pk=made.pk)
    conversation.contact, conversation.channel = contact, channel  # already in hand
    return conversation, created


def _contact_of_thread(channel, inbound: InboundMessage):
    """An email answering one of ours from another address (a colleague, a forward) joins the
    conversation it answers, rather than starting a new one under a stranger."""
    from apps.core.crypto import blind_index

    if not inbound.thread_ids:
        return None
    known = ContactIdentity.objects.filter(channel=channel, external_id_index=blind_index(inbound.sender_id))
    if known.exists():
        return None
    earlier = (
        Message.objects.filter(channel=channel, provider_id__in=[i for i in inbound.thread_ids if i][:50])
        .select_related("conversation__contact")
        .order_by("-id")
        .first()
    )
    return earlier.conversation.contact if earlier is not None else None


def _numbered_choice(conversation: Conversation, channel, inbound: InboundMessage) -> InboundMessage:
    """On channels where a menu goes out as a numbered list (email, WeChat, the custom channel),
    a customer's bare "2" answers the last menu sent: it becomes the same neutral choice a
    WhatsApp button or a Telegram keyboard press gives."""
    number = re.fullmatch(r"\s*(\d{1,2})[.)]?\s*", inbound.text or "")
    if inbound.kind != Message.Kind.TEXT or number is None or not connector_for(channel).numbered_menus:
        return inbound
    menu = (
        Message.objects.filter(conversation=conversation, direction=Message.Direction.OUTBOUND)
        .exclude(kind__in=(Message.Kind.NOTE, Message.Kind.EVENT))
        .order_by("-id")
        .only("kind", "payload")
        .first()
    )
    options = (menu.payload.get("options") or []) if menu and menu.kind == Message.Kind.INTERACTIVE else []
    index = int(number.group(1)) - 1
    if not 0 <= index < len(options):
        return inbound
    option = options[index]
    payload = {**inbound.payload, "reply_id": option["id"], "title": option["title"], "type": "numbered"}
    return dataclasses.replace(inbound, kind=Message.Kind.INTERACTIVE, text=option["title"], payload=payload)


def inbound_edit_apply(*, channel, edit: InboundEdit) -> None:
    """The customer corrected a message: the inbox shows the new text, marked edited, and the
    first version is kept in the payload."""
    message = Message.objects.filter(channel=channel, provider_id=edit.provider_id).first()
    if message is None:
        return  # an edit of something we never stored (sent before the channel was connected)
    if message.text == edit.text:
        return  # the same edit delivered twice
    if _edited_after(message, edit.timestamp):
        return  # an older edit, replayed or late, after a newer one: the newer text stays
    payload = {
        **message.payload,
        **edit.payload,
        "edited_at": edit.timestamp.isoformat(),
        "original_text": message.payload.get("original_text", message.text),
    }
    Message.objects.filter(pk=message.pk).update(text=edit.text, payload=payload)
    message.text, message.payload = edit.text, payload
    publish_on_commit(
        message.workspace_id,
        build_event(
            "message.created", conversation_id=message.conversation_id, message=payloads.message_event(message)
        ),
    )


def _edited_after(message: Message, moment) -> bool:
    try:
        return datetime.fromisoformat(message.payload.get("edited_at") or "") > moment
    except (TypeError, ValueError):
        return False


def reachability_apply(*, channel, update: ReachabilityUpdate) -> None:
    """A follow makes the customer a contact reachable on this channel; leaving makes them
    unreachable, so nothing more is queued to them there."""
    from apps.core.crypto import blind_index

    if update.reachable:
        contact_resolve(channel=channel, external_id=update.sender_id, name=update.sender_name)
    identities = ContactIdentity.objects.filter(channel=channel, external_id_index=blind_index(update.sender_id))
    # An older word than the last one (a block replayed, or delivered late, after an unblock) changes nothing.
    identities.filter(Q(reachability_at__isnull=True) | Q(reachability_at__lte=update.timestamp)).update(
        reachable=update.reachable, reachability_at=update.timestamp
    )


def inbound_message_row(conversation: Conversation, channel, inbound: InboundMessage) -> Message:
    """The customer's message as it is stored (not saved yet: the fast lane inserts many at once)."""
    return Message(
        workspace_id=channel.workspace_id,
        conversation=conversation,
        channel=channel,
        direction=Message.Direction.INBOUND,
        sender_kind=Message.Sender.CONTACT,
        kind=inbound.kind,
        text=inbound.text,
        payload=inbound.payload,
        provider_id=inbound.provider_id,
        provider_timestamp=inbound.timestamp,
        state=DeliveryState.RECEIVED,
    )


def _conversation_note_inbound(
    conversation: Conversation, channel, inbound: InboundMessage, *, surveyed: bool = False, cursor: int | None = None
) -> None:
    fields = conversation_inbound_fields(conversation, channel, inbound, surveyed=surveyed, cursor=cursor)
    conversation.save(update_fields=list(fields))


def conversation_inbound_fields(
    conversation: Conversation, channel, inbound: InboundMessage, *, surveyed: bool = False, cursor: int | None = None
) -> dict:
    """What a customer's message changes on its conversation, set on `conversation` (not saved)
    and returned: the window, the unread count, waiting since, reopening a closed or snoozed one."""
    now = timezone.now()
    connector = connector_for(channel)
    fields = {"last_message_at": now, "last_inbound_at": now}
    if connector.reply_window_hours:
        fields["window_expires_at"] = inbound.timestamp + timedelta(hours=connector.reply_window_hours)
    if cursor is not None:
        # Nothing automatic reads this message: the workflows' cursor moves past it, so a
        # workflow enabled later starts from what the customer writes next.
        fields["automation_cursor"] = cursor
    if not surveyed:
        fields["unread_count"] = conversation.unread_count + 1
        if conversation.status in (Conversation.Status.CLOSED, Conversation.Status.SNOOZED):
            fields.update(status=Conversation.Status.OPEN, closed_at=None, snoozed_until=None)
        if conversation.waiting_since is None:
            fields["waiting_since"] = now
    if inbound.customer_id and not conversation.authorized:
        fields["authorized"] = True  # the shop vouched for who is writing (web chat)
    for name, value in fields.items():
        setattr(conversation, name, value)
    return fields


def _attachment_expect(message: Message, media: dict) -> Attachment:
    return Attachment.objects.create(
        workspace_id=message.workspace_id,
        message=message,
        filename=media.get("filename", "")[:255],
        content_type=media.get("mime_type", "")[:120],
        provider_media_id=media.get("id", ""),
    )


def delivery_status_apply(*, channel, update: StatusUpdate) -> None:
    """Keeps the highest state seen: statuses arrive out of order. `failed` is terminal and
    replaces only states below delivered."""
    if update.watermark is not None:
        _watermark_apply(channel, update)
        return
    messages = Message.objects.filter(channel=channel, provider_id=update.provider_id)
    change = delivery_status_change(update)
    if change is None:
        return
    below, fields = change
    changed = messages.filter(state__in=below).update(**fields)
    if changed:
        message = messages.get()
        _publish_status(message)
        _broadcast_status(message, update)
    # A broadcast's send whose answer was lost in a crash: the provider's status (carrying our
    # opaque data) tells it did leave; its message takes the provider id, then the status applies.
    elif update.opaque and not messages.exists() and _broadcast_confirm(channel, update):
        delivery_status_apply(channel=channel, update=update)
    # A race with the send being recorded lasts seconds; an older status is for a message Parley
    # never sent (typed in Meta's Page inbox, a caption sent on its own): dropped.
    elif update.timestamp > timezone.now() - timedelta(minutes=5) and not messages.exists():
        raise StatusForUnknownMessage(update.provider_id)


def delivery_status_change(update: StatusUpdate) -> tuple[list[str], dict] | None:
    """The states a message must be in for `update` to move it, and what it then sets; None for a
    state Parley does not track. `failed` replaces only states below delivered."""
    if update.state == "failed":
        below = [state for state, rank in DELIVERY_RANK.items() if rank < DELIVERY_RANK["delivered"]]
        fields = {
            "state": DeliveryState.FAILED,
            "failed_at": update.timestamp,
            "error_code": update.error_code[:32],
            "error_reason": update.error_reason,
        }
        return below, fields
    if update.state in DELIVERY_RANK:
        below = [state for state, rank in DELIVERY_RANK.items() if rank < DELIVERY_RANK[update.state]]
        stamp = {"sent": "sent_at", "delivered": "delivered_at", "read": "read_at"}[update.state]
        return below, {"state": update.state, stamp: update.timestamp}
    return None


def _broadcast_confirm(channel, update: StatusUpdate) -> bool:
    from apps.broadcasts.services import broadcast_send_confirm

    return broadcast_send_confirm(channel=channel, provider_id=update.provider_id, opaque=update.opaque)


def _watermark_apply(channel, update: StatusUpdate) -> None:
    """Messenger tells "everything before this moment was delivered / read" instead of naming
    each message: every message sent to that person by then moves up to the state."""
    from apps.core.crypto import blind_index

    if update.state not in ("delivered", "read"):
        return
    identity = ContactIdentity.objects.filter(
        channel=channel, external_id_index=blind_index(update.recipient_id)
    ).first()
    if identity is None:
        return
    below = [state for state, rank in DELIVERY_RANK.items() if rank < DELIVERY_RANK[update.state]]
    below = [state for state in below if state not in (DeliveryState.QUEUED, DeliveryState.SENDING)]
    stamp = {"delivered": "delivered_at", "read": "read_at"}[update.state]
    # The contact's one conversation on this channel first, then its messages by the timeline's
    # index: through a join PostgreSQL's kept plan (config/settings.py) went by state over every
    # message on the channel instead.
    conversations = Conversation.objects.filter(contact_id=identity.contact_id, channel=channel)
    conversation_id = conversations.values_list("pk", flat=True).first()
    if conversation_id is None:
        return
    moved = Message.objects.filter(
        conversation_id=conversation_id,
        direction=Message.Direction.OUTBOUND,
        state__in=below,
        sent_at__lte=update.watermark,
    )
    for message in moved.select_related("channel")[:500]:
        Message.objects.filter(pk=message.pk, state__in=below).update(state=update.state, **{stamp: update.timestamp})
        message.state = update.state
        _publish_status(message)
        _broadcast_status(message, update)


def _broadcast_status(message: Message, update: StatusUpdate) -> None:
    """A broadcast's message moves its recipient too; any other costs no query (its payload says)."""
    if "broadcast_id" not in message.payload:
        return
    from apps.broadcasts.results import recipient_status_apply

    recipient_status_apply(
        message=message,
        state=update.state,
        at=update.timestamp,
        error_code=update.error_code,
        error_reason=update.error_reason,
    )


# Outbound ------------------------------------------------------------------------------------


def message_send(
    *,
    conversation: Conversation,
    author=None,
    text: str = "",
    kind: str = Message.Kind.TEXT,
    payload: dict | None = None,
    reply_to: Message | None = None,
    client_id: str = "",
    sender_kind: str = Message.Sender.AGENT,
    origin: str | None = None,
    upload=None,
) -> Message:
    """Records an outbound message as queued, then (after commit) a worker sends it. `upload` is
    a file the operator attaches (its text is the caption)."""
    if kind == Message.Kind.NOTE:
        return note_add(conversation=conversation, author=author, text=text, origin=origin)
    if upload is not None:
        kind = Message.Kind.MEDIA
        _check_upload(conversation, upload)
    if kind == Message.Kind.TEMPLATE and payload and ("template_id" in payload or "name" in payload):
        text, payload = _template_message(conversation, payload)
    if not text and kind == Message.Kind.TEXT:
        raise DomainError("A message needs text.", code="empty_message", fields={"text": ["Required."]})
    _check_reply_window(conversation, kind, sender_kind)
    if client_id:
        existing = Message.objects.filter(conversation=conversation, client_id=client_id).first()
        if existing is not None:
            return existing
    with transaction.atomic():
        # The conversation's row first, with the strongest lock this needs: inserting the message
        # first took a key-share lock on it that the update then had to raise, and an inbound
        # batch locking the same conversation in between deadlocked with it (seen on the busy day).
        _conversation_note_outbound(conversation, sender_kind)
        message = Message.objects.create(
            workspace_id=conversation.workspace_id,
            conversation=conversation,
            channel_id=conversation.channel_id,
            direction=Message.Direction.OUTBOUND,
            sender_kind=sender_kind,
            author=author,
            kind=kind,
            text=text,
            payload=payload or {},
            reply_to=reply_to,
            client_id=client_id,
            state=DeliveryState.QUEUED,
        )
        message.channel = conversation.channel  # for its event and the API's answer, without a query each
        if upload is not None:
            _attachment_store(message, upload)
        else:
            message.has_files = False
            messages_attachments_load([message])
        message_event_record(conversation=conversation, message=message)
        if sender_kind == Message.Sender.AGENT and author is not None:
            from apps.workflows.services import runs_stop

            runs_stop(conversation=conversation, actor=author, reason="an agent replied")  # a person took over
        _publish_message(message, origin=origin)
        from apps.conversations.tasks import deliver_message

        transaction.on_commit(lambda: deliver_message.delay(message.id))
    return message


def conversation_for_outbound(*, contact, channel=None) -> Conversation:
    """The thread a business-initiated message goes into: on the channel named, else the one the
    customer used last. Some channels reach a contact who never wrote there (WhatsApp by their
    phone, email by their address: `Connector.address_of`)."""
    from apps.core.crypto import blind_index

    if channel is None:
        last = Conversation.objects.filter(contact=contact).order_by("-last_message_at", "-id").first()
        if last is None:
            raise DomainError(
                "This contact has never written on any channel; name the channel to use.",
                code="no_channel",
                fields={"channel": ["Required for this contact."]},
            )
        return last
    if not contact.identities.filter(channel=channel).exists():
        address = connector_for(channel).address_of(contact)
        if not address:
            raise DomainError(
                f"This contact cannot be reached on {channel.name} until they write there.",
                code="no_identity",
                fields={"channel": ["The contact has no identity on this channel."]},
            )
        ContactIdentity.objects.get_or_create(
            channel=channel,
            external_id_index=blind_index(address),
            defaults={"workspace_id": contact.workspace_id, "contact": contact, "external_id": address},
        )
    conversation, _ = Conversation.objects.get_or_create(
        contact=contact,
        channel=channel,
        defaults={"workspace_id": contact.workspace_id, "last_message_at": timezone.now()},
    )
    return conversation


def _template_message(conversation: Conversation, payload: dict) -> tuple[str, dict]:
    """A template chosen in the inbox (`{"template_id", "parameters"}`) as the provider wants it,
    and its text as the customer will read it."""
    from apps.connectors.models import MessageTemplate

    templates = MessageTemplate.objects.filter(
        workspace_id=conversation.workspace_id,
        channel_id=conversation.channel_id,
        status=MessageTemplate.Status.APPROVED,
    )
    if payload.get("template_id"):
        template = templates.filter(pk=payload["template_id"]).first()
    else:
        template = templates.filter(name=payload.get("name", ""), language=payload.get("language", "en")).first()
    if template is None:
        raise DomainError(
            "No approved template by that id (or name and language) on this conversation's channel.",
            code="invalid_template",
            fields={"template_id": ["Unknown or not approved."]},
        )
    parameters = [str(value) for value in payload.get("parameters") or []]
    if len(parameters) != template.variable_count or not all(p.strip() for p in parameters):
        raise DomainError(
            f"The template {template.name} needs {template.variable_count} value(s).",
            code="invalid_template",
            fields={"parameters": [f"Give {template.variable_count} non-empty value(s)."]},
        )
    provider = connector_for(conversation.channel).template_payload(template, parameters)
    # A broadcast's message names its broadcast and recipient: its statuses and replies find them.
    carried = {name: payload[name] for name in ("broadcast_id", "recipient_id") if name in payload}
    return template.render(parameters), {
        "template": provider,
        "template_id": template.pk,
        "parameters": parameters,
        **carried,
    }


def _check_upload(conversation: Conversation, upload) -> None:
    content_type = (upload.content_type or "application/octet-stream").split(";")[0]
    limit = connector_for(conversation.channel).size_limit(content_type, conversation.channel)
    if upload.size > limit:
        raise DomainError(
            f"The file is larger than {conversation.channel.get_kind_display()} accepts "
            f"({limit // 1024 // 1024} MB for {content_type}).",
            code="too_large",
            fields={"file": [f"At most {limit // 1024 // 1024} MB."]},
        )
    upload_check(upload=upload, limit=limit)  # its content: apps/core/uploads.py


def _attachment_store(message: Message, upload) -> Attachment:
    content_type = (upload.content_type or "application/octet-stream").split(";")[0]
    attachment = Attachment(
        workspace_id=message.workspace_id,
        message=message,
        filename=safe_filename(upload.name, content_type),
        content_type=content_type,
        size=upload.size,
        state=Attachment.State.STORED,
    )
    attachment.file.save(attachment.filename, upload, save=False)
    attachment.save()
    return attachment


def _check_reply_window(conversation: Conversation, kind: str, sender_kind: str = Message.Sender.AGENT) -> None:
    """Free-form messages only while the provider's window is open: 24 h after the customer's
    last message on WhatsApp and Messenger (7 days for a person's reply on Messenger, sent with
    the HUMAN_AGENT tag), 48 h on WeChat, which also caps how many go out in that time."""
    connector = connector_for(conversation.channel)
    if not connector.reply_window_hours or kind == Message.Kind.TEMPLATE:
        return
    hours = connector.reply_window_hours
    expires = conversation.window_expires_at
    if expires is None and conversation.last_inbound_at is not None:
        expires = conversation.last_inbound_at + timedelta(hours=hours)
    if expires is not None and sender_kind == Message.Sender.AGENT and connector.human_reply_window_hours:
        hours = connector.human_reply_window_hours
        expires += timedelta(hours=hours - connector.reply_window_hours)
    if expires is None or expires <= timezone.now():
        then = (
            "an approved template now. Send a template instead."
            if connector.templates
            else "new messages once they write again."
        )
        raise DomainError(
            f"The customer last wrote more than {hours} hours ago, so "
            f"{conversation.channel.get_kind_display()} only allows {then}",
            code="window_closed",
        )
    last = expires - timedelta(hours=hours)
    if connector.replies_per_window:
        sent = (
            Message.objects.filter(
                conversation=conversation, direction=Message.Direction.OUTBOUND, created_at__gt=last
            )
            .exclude(kind__in=(Message.Kind.NOTE, Message.Kind.EVENT))
            .exclude(state=DeliveryState.FAILED)
            .count()
        )
        if sent >= connector.replies_per_window:
            raise DomainError(
                f"{conversation.channel.get_kind_display()} allows {connector.replies_per_window} messages until "
                "the customer writes again, and they have all been sent. Wait for the customer's reply.",
                code="window_quota",
            )


def _conversation_note_outbound(conversation: Conversation, sender_kind: str) -> None:
    now = timezone.now()
    fields = {"last_message_at": now}
    if sender_kind == Message.Sender.AGENT:
        fields.update(waiting_since=None, unread_count=0)
        if conversation.first_response_at is None:
            fields["first_response_at"] = now
    Conversation.objects.filter(pk=conversation.pk).update(**fields)
    for name, value in fields.items():
        setattr(conversation, name, value)


def note_add(*, conversation: Conversation, author, text: str, origin: str | None = None) -> Message:
    """An internal note: part of the timeline, never sent to the customer."""
    if not text.strip():
        raise DomainError("A note needs text.", code="empty_message", fields={"text": ["Required."]})
    with transaction.atomic():
        message = Message.objects.create(
            workspace_id=conversation.workspace_id,
            conversation=conversation,
            channel_id=conversation.channel_id,
            direction=Message.Direction.OUTBOUND,
            sender_kind=Message.Sender.AGENT,
            author=author,
            kind=Message.Kind.NOTE,
            text=text,
            state=DeliveryState.SENT,
        )
        message_event_record(conversation=conversation, message=message)
        _publish_message(message, origin=origin)
        from apps.conversations.services.actions import mentions_notify

        mentions_notify(message=message)
    return message


# Realtime ------------------------------------------------------------------------------------


def _publish_message(message: Message, *, origin: str | None = None) -> None:
    event = payloads.message_event(message)
    publish_on_commit(
        message.workspace_id,
        build_event("message.created", conversation_id=message.conversation_id, message=event),
        origin=origin,
    )
    if message.kind not in (Message.Kind.NOTE, Message.Kind.EVENT):  # internal: never leaves Parley
        webhook_emit(
            workspace_id=message.workspace_id,
            event="message.created",
            data={**event, "conversation_id": message.conversation_id},
        )


def _publish_status(message: Message) -> None:
    webhook_emit(
        workspace_id=message.workspace_id,
        event="message.status",
        data={
            "id": message.id,
            "conversation_id": message.conversation_id,
            "state": message.state,
            "error_code": message.error_code,
            "error_reason": message.error_reason,
        },
    )
    if "broadcast_id" in message.payload:
        # A 100,000-message broadcast would push 300,000 statuses through every operator's socket
        # (and out of the workspace's replay stream); its progress event (once a second) says it
        # all, and a conversation opened later shows each message's state.
        return
    publish_on_commit(
        message.workspace_id,
        build_event(
            "message.status",
            conversation_id=message.conversation_id,
            message_id=message.id,
            state=message.state,
            error_code=message.error_code,
            error_reason=message.error_reason,
        ),
    )


def _publish_conversation(conversation: Conversation) -> dict:
    event = payloads.conversation_event(conversation)
    publish_on_commit(conversation.workspace_id, build_event("conversation.updated", conversation=event))
    return event


# Delivery (called by tasks.deliver_message) ---------------------------------------------------

MAX_SEND_ATTEMPTS = 8
INTERRUPTED = (
    "interrupted",
    "Sending was interrupted by a worker restart; it may not have reached the customer. Check before resending.",
)


class SendLater(Exception):
    def __init__(self, delay: float):
        super().__init__(f"retry in {delay:.1f}s")
        self.delay = delay


def message_deliver(*, message_id: int) -> None:
    """Sends one queued message. The HTTP call happens outside any transaction; the row is
    claimed first (queued → sending) so two workers never send it twice. A message found still
    `sending` was being sent by a worker that died: it may have left, so it is marked failed
    with a reason for a person to review, never silently dropped or sent twice."""
    from apps.connectors.base import ErrorClass, OutboundMessage, ProviderError
    from apps.connectors.ratelimit import slow_down, take_token

    message = _delivery_load(message_id)
    if message is None or message.state not in (DeliveryState.QUEUED, DeliveryState.SENDING):
        return
    if message.state == DeliveryState.SENDING:
        # Another worker may be sending it right now; only a claim older than any send can
        # take (the broker redelivers a dead worker's task much later) means it died.
        timeout = timedelta(seconds=settings.OUTBOUND_CLAIM_TIMEOUT_SECONDS)
        if message.claimed_at and message.claimed_at < timezone.now() - timeout:
            _mark_failed(message, *INTERRUPTED)
        return
    channel = message.channel
    try:
        outbound = _outbound_for(message, OutboundMessage)
    except DomainError as error:  # nobody to send it to on this channel: say so, do not retry
        _mark_failed(message, error.code, error.detail)
        return
    if _earlier_still_leaving(message):
        raise SendLater(0.3)
    wait = take_token(f"channel:{channel.id}", channel.rate_limit_per_second)
    if wait > 0:
        raise SendLater(wait)
    # The delivery's own statements are plain SQL: an operator's reply is one delivery, and the
    # ORM's compiling of these few statements cost more than the send (the busy day's worker).
    with connection.cursor() as cursor:
        cursor.execute(DELIVERY_CLAIM, [timezone.now(), message.pk])
        if cursor.rowcount != 1:
            return
    connector = connector_for(channel)
    try:
        result = connector.send(channel, outbound)
    except ProviderError as error:
        _handle_send_error(message, error, channel, slow_down)
        if error.error_class == ErrorClass.RETRY and message.attempts + 1 < MAX_SEND_ATTEMPTS:
            raise SendLater(error.retry_after or backoff(message.attempts + 1)) from error
        return
    with connection.cursor() as cursor:
        cursor.execute(DELIVERY_SENT, [result.provider_id, timezone.now(), message.pk])
        # As it is now: a status callback may already have moved it on (then nothing was updated).
        row = cursor.fetchone()
        if row is None:
            cursor.execute(DELIVERY_STATE, [message.pk])
            row = cursor.fetchone()
    if row is not None:
        message.state, message.provider_id, message.sent_at, message.error_code, message.error_reason = row
    _publish_status(message)


# A delivery's message, with what it needs of its conversation and the customer's address on the
# channel, in one statement the ORM does not compile each time (a `select_related` load and an
# identity query were half of a delivery's CPU on the busy day). Not the contact: its name, phone
# and email would be decrypted for nothing. The channel comes from a per-process cache, checked
# against a digest of its row read here: any change to the channel (credentials, settings, pace,
# enabled) is seen by the next delivery.
DELIVERY_LOAD = """SELECT m.*, c.contact_id AS delivery_contact_id, c.last_inbound_at AS delivery_last_inbound_at,
        i.external_id AS delivery_recipient, md5(ch::text) AS delivery_channel_digest
    FROM conversations_message m
    JOIN conversations_conversation c ON c.id = m.conversation_id
    JOIN connectors_channel ch ON ch.id = m.channel_id
    LEFT JOIN LATERAL (
        SELECT external_id FROM contacts_contactidentity
        WHERE contact_id = c.contact_id AND channel_id = m.channel_id ORDER BY id LIMIT 1
    ) i ON true
    WHERE m.id = %s"""
_delivery_channels: dict[int, tuple[str, object]] = {}  # channel id → (digest of its row, Channel)


def _delivery_load(message_id: int) -> Message | None:
    from apps.connectors.models import Channel
    from apps.core.crypto import decrypt

    message = next(iter(Message.objects.raw(DELIVERY_LOAD, [message_id])), None)
    if message is None:
        return None
    cached = _delivery_channels.get(message.channel_id)
    if cached is None or cached[0] != message.delivery_channel_digest:
        cached = (message.delivery_channel_digest, Channel.objects.get(pk=message.channel_id))
        _delivery_channels[message.channel_id] = cached
    message.channel = cached[1]
    if message.delivery_recipient:  # None: no identity on the channel; "" stays "", as the field reads it
        message.delivery_recipient = decrypt(message.delivery_recipient)
    return message


DELIVERY_CLAIM = """UPDATE conversations_message SET state = 'sending', attempts = attempts + 1, claimed_at = %s
    WHERE id = %s AND state = 'queued'"""
DELIVERY_STATE_FIELDS = "state, provider_id, sent_at, error_code, error_reason"
DELIVERY_SENT = f"""UPDATE conversations_message SET state = 'sent', provider_id = %s, sent_at = %s
    WHERE id = %s AND state = 'sending' RETURNING {DELIVERY_STATE_FIELDS}"""  # noqa: S608 (no input in it)
DELIVERY_STATE = f"SELECT {DELIVERY_STATE_FIELDS} FROM conversations_message WHERE id = %s"  # noqa: S608


# Messages of one conversation leave in the order they were written (a greeting, then its menu),
# though several workers send at once. An earlier one that has been stuck for longer than this
# (its task lost until the minute's requeue) no longer holds the later ones back.
ORDER_WAIT = timedelta(minutes=2)


def _earlier_still_leaving(message: Message) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT 1 FROM conversations_message
            WHERE conversation_id = %s AND direction = 'out' AND id < %s AND state IN ('queued', 'sending')
              AND created_at >= %s AND kind NOT IN ('note', 'event')
            LIMIT 1""",
            [message.conversation_id, message.id, timezone.now() - ORDER_WAIT],
        )
        return cursor.fetchone() is not None


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: about 2, 4, 8 … seconds, at most 5 minutes."""
    import random

    return min(300.0, 2.0**attempt) * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not secrecy)


def _outbound_for(message: Message, outbound_class):
    """What the connector sends, from a message `_delivery_load` read."""
    if message.delivery_recipient is None:
        raise DomainError("This contact has no identity on the conversation's channel.", code="no_identity")
    media = None
    # Only a media message carries a file of its own (message_send makes an upload's message media).
    attachment = (
        message.attachments.filter(state=Attachment.State.STORED).first()
        if message.kind == Message.Kind.MEDIA
        else None
    )
    if attachment is None and message.payload.get("media_url"):
        media = {
            "url": message.payload["media_url"],
            "mime_type": message.payload.get("mime_type", ""),
            "filename": message.payload.get("filename", ""),
        }
    if attachment is not None:
        with attachment.file.open("rb") as handle:
            media = {
                "content": handle.read(),
                "mime_type": attachment.content_type,
                "filename": attachment.filename,
                "uuid": str(attachment.uuid),
            }
    return outbound_class(
        recipient_id=message.delivery_recipient,
        kind=message.kind if not media else "media",
        text=message.text,
        payload=message.payload,
        media=media,
        opaque=message.payload.get("opaque", ""),
        reply_to_provider_id=message.reply_to.provider_id if message.reply_to_id else "",
        context=_outbound_context(message),
    )


def _outbound_context(message: Message) -> dict:
    context = {
        "sender_kind": message.sender_kind,
        "last_inbound_at": message.delivery_last_inbound_at,
        "last_inbound_id": "",
        "last_inbound_payload": {},
        "message_uuid": f"parley-{message.id}",
    }
    if connector_for(message.channel).wants_last_inbound:  # an email's reply threads under it
        last = (
            Message.objects.filter(conversation_id=message.conversation_id, direction=Message.Direction.INBOUND)
            .order_by("-id")
            .only("provider_id", "payload", "created_at")
            .first()
        )
        if last is not None:
            context.update(last_inbound_id=last.provider_id, last_inbound_payload=last.payload)
    return context


def _handle_send_error(message: Message, error, channel, slow_down) -> None:
    from apps.connectors.base import ErrorClass

    if error.error_class == ErrorClass.RETRY:
        if error.code in connector_for(channel).rate_limit_codes or error.retry_after:
            slow_down(f"channel:{channel.id}", error.retry_after or 2.0, channel.rate_limit_per_second)
        if message.attempts + 1 < MAX_SEND_ATTEMPTS:
            Message.objects.filter(pk=message.pk).update(
                state=DeliveryState.QUEUED, error_code=error.code[:32], error_reason=error.detail
            )
            return
    if error.error_class == ErrorClass.STOP_RECIPIENT:
        identities = ContactIdentity.objects.filter(contact_id=message.delivery_contact_id, channel=channel)
        identities.update(reachable=False, reachability_at=timezone.now())
    _mark_failed(message, error.code, error.detail)


def _mark_failed(message: Message, code: str, reason: str) -> None:
    Message.objects.filter(pk=message.pk).update(
        state=DeliveryState.FAILED,
        error_code=str(code)[:32],
        error_reason=reason,
        failed_at=timezone.now(),
    )
    message.refresh_from_db()
    _publish_status(message)


def messages_requeue_stale(*, older_than) -> int:
    """Queued messages whose delivery task was lost (a crash between commit and enqueue)."""
    from apps.conversations.tasks import deliver_message

    stale = list(
        # A broadcast's queued messages are its sender's to send (paced, pausable), not this sweep's.
        Message.objects.filter(state=DeliveryState.QUEUED, created_at__lt=older_than)
        .exclude(payload__has_key="broadcast_id")
        .values_list("id", flat=True)[:1000]
    )
    for message_id in stale:
        deliver_message.delay(message_id)
    return len(stale)


# Attachments ---------------------------------------------------------------------------------


def attachment_fetch(*, attachment_id: int) -> None:
    """Downloads a customer's file promptly (WhatsApp media ids expire) into our storage. A file
    over the channel's limit is refused with an event to the inbox; the message stays."""
    from django.core.files.base import ContentFile

    from apps.connectors.base import ErrorClass, ProviderError

    attachment = (
        Attachment.objects.select_related("message__channel")
        .filter(pk=attachment_id, state=Attachment.State.PENDING)
        .first()
    )
    if attachment is None:
        return
    channel = attachment.message.channel
    connector = connector_for(channel)
    limit = connector.size_limit(attachment.content_type, channel)
    try:
        media = connector.fetch_media(
            channel,
            {
                "id": attachment.provider_media_id,
                "filename": attachment.filename,
                "mime_type": attachment.content_type,
            },
            limit,
        )
    except ProviderError as error:
        if error.error_class == ErrorClass.RETRY:
            raise
        state = Attachment.State.TOO_LARGE if error.code == "too_large" else Attachment.State.FAILED
        _attachment_failed(
            attachment,
            state,
            f"{error.detail} (limit {limit // 1024 // 1024} MB)"
            if state == Attachment.State.TOO_LARGE
            else error.detail,
        )
        return
    filename = safe_filename(attachment.filename or media.filename, media.mime_type)
    attachment.file.save(filename, ContentFile(media.content), save=False)
    Attachment.objects.filter(pk=attachment.pk).update(
        file=attachment.file.name,
        filename=filename,
        content_type=media.mime_type,
        size=len(media.content),
        state=Attachment.State.STORED,
    )
    message = Message.objects.select_related("channel").get(pk=attachment.message_id)
    _publish_message(message)


def _attachment_failed(attachment: Attachment, state: str, reason: str) -> None:
    Attachment.objects.filter(pk=attachment.pk).update(state=state, error=reason)
    message = attachment.message
    publish_on_commit(
        message.workspace_id,
        build_event(
            "attachment.failed",
            conversation_id=message.conversation_id,
            message_id=message.id,
            attachment_id=attachment.id,
            reason=reason,
        ),
    )


def safe_filename(name: str, mime_type: str) -> str:
    import mimetypes
    import re

    stem = re.sub(r"[^\w.\-]+", "_", (name or "").strip())[-120:].lstrip(".") or "file"
    if "." not in stem:
        stem += mimetypes.guess_extension(mime_type or "") or ""
    return stem
