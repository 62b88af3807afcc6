"""The inbound fast lane: most of what customers send, applied a batch at a time.

Most deliveries are the plainest case there is: a text from a customer Parley knows, in a
conversation that is open. `apply` takes those out of a drainer's batch and stores them set-wise
(one query to find the customers, one to lock their conversations, one to insert the messages, one
to update the conversations, one for the analytics log) instead of a dozen queries each. It uses
the same rules as the long way, `messages.inbound_message_apply`: the row
(`inbound_message_row`), the conversation's changes (`conversation_inbound_fields`), the events
(`payloads`), automation (`automation_wanted`), broadcast replies (`broadcast_inbound_quiet`).
Anything else (a new customer, a closed conversation, media, a quoted reply, a numbered menu
answer, a reply within a broadcast's conversion window, a STOP, a status) goes the long way, and
so does every later delivery of a customer who has one going the long way in the same batch, so
each customer's messages still land in order.

Deliveries made only of delivery statuses (a broadcast's callbacks, hundreds a second) take a lane
of their own, `_statuses`. Both run inside the drainer's batch transaction."""

import copy
import re

from django.db import connection

from apps.analytics.services import inbound_messages_record
from apps.broadcasts.results import broadcast_inbound_quiet, broadcast_latest_recipients, broadcast_sent_lately
from apps.connectors.base import InboundMessage, ParseError, StatusUpdate
from apps.connectors.registry import connector_for
from apps.contacts.models import ContactIdentity
from apps.contacts.services import contacts_touch
from apps.conversations.models import Conversation, InboundEvent, Message
from apps.conversations.selectors import with_bot, with_tag_ids
from apps.core.crypto import blind_index
from apps.workflows.selectors import automation_wanted

BARE_NUMBER = re.compile(r"\s*\d{1,2}[.)]?\s*")


def apply(events: list[InboundEvent]) -> tuple[list[InboundEvent], list[tuple[InboundEvent, list | None]]]:
    """Stores the plain deliveries of `events` (their channels attached); returns them, and the
    rest with what was parsed of each (None: parse it again, it fails and says why)."""
    from apps.conversations.services.messages import inbound_event_parse

    parsed: list[tuple[InboundEvent, list | None]] = []
    for event in events:
        try:
            parsed.append((event, inbound_event_parse(event)))
        except ParseError:
            parsed.append((event, None))
    candidates = [(event, items) for event, items in parsed if items and all(_plain(event.channel, i) for i in items)]
    customers = _customers(candidates)
    plain = {event.pk for event, _ in candidates}
    fast, slow_senders = [], set()
    for event, items in parsed:
        keys = [(event.channel_id, item.sender_id) for item in items or () if isinstance(item, InboundMessage)]
        ok = event.pk in plain and all(key in customers for key in keys)
        if ok and not slow_senders.intersection(keys):
            fast.append((event, items))
        else:
            slow_senders.update(keys)
    # A candidate that came before a slow delivery of the same customer goes the long way too.
    fast = [(event, items) for event, items in fast if not slow_senders.intersection(_keys(event, items))]
    stored = _store(fast, customers) if fast else set()
    stored |= _statuses([(event, items) for event, items in parsed if event.pk not in plain])
    done = [event for event, _ in parsed if event.pk in stored]
    return done, [(event, items) for event, items in parsed if event.pk not in stored]


def _statuses(parsed) -> set[int]:
    """Applies the deliveries made only of statuses of messages Parley sent (a broadcast's
    callbacks: hundreds a second): the messages are read and locked in one query, each status
    applied in order by the long way's rule (`delivery_status_change`), the changed rows written
    in one UPDATE, then the same events and broadcast funnel as the long way. A status of a message
    not found, Messenger's watermark, and every status of a message that another delivery of the
    batch (going the long way) also moves, go the long way. Returns the deliveries applied."""
    from apps.conversations.services.messages import _broadcast_status, _publish_status, delivery_status_change

    lane, elsewhere = [], set()
    for event, items in parsed:
        ids = [(event.channel_id, item.provider_id) for item in items or () if isinstance(item, StatusUpdate)]
        if items and all(isinstance(item, StatusUpdate) and item.watermark is None for item in items):
            lane.append((event, items))
        else:
            elsewhere.update(ids)
    lane = [(event, items) for event, items in lane if not elsewhere.intersection(_status_keys(event, items))]
    if not lane:
        return set()
    rows = Message.objects.select_for_update(of=("self",)).filter(
        channel_id__in={event.channel_id for event, _ in lane},
        provider_id__in={item.provider_id for _, items in lane for item in items},
    )
    messages = {(m.channel_id, m.provider_id): m for m in rows.order_by("pk")}
    lane = [(event, items) for event, items in lane if all(key in messages for key in _status_keys(event, items))]
    changed, effects = {}, []
    for event, items in lane:
        for update in items:
            message, change = messages[(event.channel_id, update.provider_id)], delivery_status_change(update)
            if change is None or message.state not in change[0]:
                continue
            for name, value in change[1].items():
                setattr(message, name, value)
            message.channel = event.channel
            changed[message.pk] = message
            effects.append((copy.copy(message), update))  # as it stood after this status
    if changed:
        rows_save(Message, list(changed.values()), STATUS_FIELDS)
    for message, update in effects:
        _publish_status(message)
        _broadcast_status(message, update)
    return {event.pk for event, _ in lane}


def _status_keys(event, items) -> list[tuple[int, str]]:
    return [(event.channel_id, item.provider_id) for item in items]


STATUS_FIELDS = ["state", "sent_at", "delivered_at", "read_at", "failed_at", "error_code", "error_reason"]


def _plain(channel, item) -> bool:
    if not isinstance(item, InboundMessage) or item.kind != Message.Kind.TEXT:
        return False
    if item.media or item.extra_media or item.reply_to_provider_id or item.thread_ids or item.customer_id:
        return False
    return not (connector_for(channel).numbered_menus and BARE_NUMBER.fullmatch(item.text or ""))


def _keys(event, items) -> list[tuple[int, str]]:
    return [(event.channel_id, item.sender_id) for item in items]


def _customers(candidates) -> dict[tuple[int, str], ContactIdentity | None]:
    """(channel, sender) → the customer's identity, for senders Parley knows under a name and a
    number it already has (otherwise the long way learns them)."""
    senders = {(event.channel_id, item.sender_id): item for event, items in candidates for item in items}
    if not senders:
        return {}
    by_index = {(channel_id, blind_index(sender)): (channel_id, sender) for channel_id, sender in senders}
    identities = ContactIdentity.objects.filter(
        channel_id__in={channel_id for channel_id, _ in senders}, external_id_index__in={i for _, i in by_index}
    ).select_related("contact")
    found = {}
    for identity in identities:
        key = by_index.get((identity.channel_id, identity.external_id_index))
        if key is None:
            continue
        contact, item = identity.contact, senders[key]
        if (
            contact.merged_into_id
            or (item.sender_phone and not contact.phone)
            or (item.sender_name and not contact.name)
        ):
            continue
        found[key] = identity
    return found


def _store(fast, customers) -> set[int]:
    """Inserts the messages of `fast` whose conversations are open; returns the ids of the
    deliveries it applied (all of `fast` but those of closed or missing conversations)."""
    from apps.conversations.services.messages import (
        _publish_conversation,
        _publish_message,
        conversation_inbound_fields,
        inbound_message_row,
    )

    wanted = {(customers[key].contact_id, key[0]) for event, items in fast for key in _keys(event, items)}
    # Locked in id order, so two drainers never wait for each other in a circle.
    locked = with_bot(with_tag_ids(Conversation.objects.select_for_update(of=("self",))))
    conversations = {
        (c.contact_id, c.channel_id): c
        for c in locked.filter(
            contact_id__in={contact for contact, _ in wanted}, channel_id__in={channel for _, channel in wanted}
        ).order_by("pk")
        if (c.contact_id, c.channel_id) in wanted
    }

    def conversation_of(event, item):
        conversation = conversations.get((customers[(event.channel_id, item.sender_id)].contact_id, event.channel_id))
        return conversation if conversation is not None and conversation.status != Conversation.Status.CLOSED else None

    fast = [(event, items) for event, items in fast if all(conversation_of(event, item) for item in items)]
    # Repeated deliveries (the provider's retries) are found under the conversations' locks.
    provider_ids = {item.provider_id for _, items in fast for item in items}
    seen = set(
        Message.objects.filter(
            channel_id__in={event.channel_id for event, _ in fast}, provider_id__in=provider_ids
        ).values_list("channel_id", "provider_id")
    )
    rows, owners = [], []
    for event, items in fast:
        for item in items:
            if (event.channel_id, item.provider_id) in seen:
                continue
            seen.add((event.channel_id, item.provider_id))
            conversation = conversation_of(event, item)
            conversation.contact = customers[(event.channel_id, item.sender_id)].contact
            conversation.channel = event.channel
            rows.append(inbound_message_row(conversation, event.channel, item))
            owners.append((conversation, item))
    # During a campaign every customer may be answering it: their latest broadcast in one query.
    lately = {c.workspace_id for c, _ in owners if broadcast_sent_lately(workspace_id=c.workspace_id)}
    latest = broadcast_latest_recipients(conversations=[c for c, _ in owners if c.workspace_id in lately])
    quiet = [
        broadcast_inbound_quiet(message=row, conversation=c, latest=latest)
        for row, (c, _) in zip(rows, owners, strict=True)
    ]
    if not all(quiet):
        # A reply to a recent broadcast, or a STOP: the long way, for this customer's every delivery.
        loud = {c.pk for (c, _), ok in zip(owners, quiet, strict=True) if not ok}
        keep = {event.pk for event, items in fast if not any(conversation_of(event, i).pk in loud for i in items)}
        return _store([(event, items) for event, items in fast if event.pk in keep], customers) if keep else set()
    Message.objects.bulk_create(rows)
    automated = {}
    for message, (conversation, item) in zip(rows, owners, strict=True):
        message._prefetched_objects_cache = {"attachments": []}  # a plain text has none
        if conversation.pk not in automated:
            automated[conversation.pk] = automation_wanted(conversation=conversation)
        cursor = None if automated[conversation.pk] else message.pk
        conversation_inbound_fields(conversation, conversation.channel, item, cursor=cursor)
    touched = list({conversation.pk: conversation for conversation, _ in owners}.values())
    if touched:
        rows_save(Conversation, touched, FIELDS)
        inbound_messages_record(conversations=[conversation for conversation, _ in owners])
        contacts_touch({c.contact.pk: c.contact for c in touched}.values())
    for message in rows:
        _publish_message(message)
    for conversation in touched:
        _publish_conversation(conversation)
    from apps.workflows.services import advance_on_commit

    for message, (conversation, _) in zip(rows, owners, strict=True):
        if automated[conversation.pk]:
            advance_on_commit(conversation_id=conversation.pk, message_id=message.pk, opened=False)
    return {event.pk for event, _ in fast}


def rows_save(model, rows: list, fields: list[str]) -> None:
    """`bulk_update` in one `UPDATE … FROM (VALUES …)`: Django's bulk_update builds a CASE per
    field and row, which cost more CPU than everything else the fast lane does (bench.inbound)."""
    quote = connection.ops.quote_name
    columns = [model._meta.get_field(name) for name in fields]
    row = "(%s::bigint, " + ", ".join(f"%s::{column.cast_db_type(connection)}" for column in columns) + ")"
    params = []
    for instance in rows:
        params.append(instance.pk)
        params += [column.get_db_prep_save(getattr(instance, column.attname), connection) for column in columns]
    names = [quote(column.column) for column in columns]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(model._meta.db_table)} AS t"  # noqa: S608 (names from the model, values bound)
            f" SET {', '.join(f'{name} = v.{name}' for name in names)}"
            f" FROM (VALUES {', '.join([row] * len(rows))}) AS v(id, {', '.join(names)})"
            " WHERE t.id = v.id",
            params,
        )


# Everything `conversation_inbound_fields` may set on an open conversation.
FIELDS = [
    "last_message_at",
    "last_inbound_at",
    "window_expires_at",
    "automation_cursor",
    "unread_count",
    "status",
    "closed_at",
    "snoozed_until",
    "waiting_since",
    "authorized",
]
