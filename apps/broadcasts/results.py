"""What a broadcast achieved: each recipient's fate, and the report.

Provider statuses move a recipient up (sent < delivered < read; failed only below delivered),
as they move its message. A customer's first answer after a broadcast marks it replied and is
linked to it in the inbox; STOP / START (the workspace's words) change their marketing consent
on that channel; an order placed within the conversion window after delivery converts it.

`broadcast_stats` is what the live progress page shows: two aggregate queries, measured at 40-60
ms for a 100,000-recipient broadcast (in a table of 400,000), cheap enough for once a second, so
there is no counter cache to drift from the rows;
`broadcast_progress_publish` sends it over the websocket at most once a second per broadcast.
The hooks in the message pipeline cost nothing for messages that are not a broadcast's: the
outbound message's payload says so (`broadcast_id`, `recipient_id`)."""

import csv
import logging
import time
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial

from django.db import transaction
from django.db.models import Case, Count, F, Func, JSONField, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from apps.broadcasts.models import Broadcast, BroadcastSettings, Recipient
from apps.contacts.models import Contact, Order
from apps.conversations.models import Message
from apps.core.events import build_event
from apps.core.memo import remembered
from apps.core.redis import get_redis, key

logger = logging.getLogger(__name__)

State = Recipient.State
RANK = {State.QUEUED: 0, State.SENDING: 1, State.SENT: 2, State.DELIVERED: 3, State.READ: 4}
STAMP = {State.SENT: "sent_at", State.DELIVERED: "delivered_at", State.READ: "read_at"}
REACHED = (State.SENT, State.DELIVERED, State.READ)

RATE_WINDOW = timedelta(seconds=60)
PROGRESS_EVERY_MS = 1000
# A count of a large audience costs PostgreSQL tens of milliseconds (46 ms at 48,000 recipients on
# the busy day): the next waits at least this many times as long, so counting stays a small share
# of a connection's time (50: 2%) however large the broadcast.
PROGRESS_DUTY = 50
PROGRESS_TASK = "broadcasts.publish_progress"  # apps/broadcasts/tasks.py: calls broadcast_progress_flush
LONGEST_WORD = 40  # a message longer than any stop word is never one (and costs no settings query)
TOP_FAILURES = 10


def broadcast_settings_for(*, workspace_id: int) -> BroadcastSettings:
    """The workspace's rules; the defaults until a supervisor saves their own. Read once per batch
    of inbound deliveries (core.memo)."""
    found = remembered(
        ("broadcast-settings", workspace_id),
        lambda: BroadcastSettings.objects.filter(workspace_id=workspace_id).first(),
    )
    return found or BroadcastSettings(workspace_id=workspace_id)


# Statuses ------------------------------------------------------------------------------------


def recipient_status_apply(*, message, state: str, at: datetime, error_code: str = "", error_reason: str = "") -> bool:
    """Moves the recipient of `message` up to `state` (sent, delivered, read or failed); True if
    the message is a broadcast's. Statuses come out of order: a lower one only fills in its
    time if missing, and a higher one implies the lower (read means delivered and sent), so the
    funnel and the conversion window always have a delivery time. `failed` replaces only states
    below delivered and keeps the reason."""
    recipients = Recipient.objects.filter(message_id=message.pk)
    if state == State.FAILED:
        matched = recipients.filter(state__in=(State.QUEUED, State.SENDING, State.SENT)).update(
            state=State.FAILED, failed_at=at, reason=failure_reason(error_code, error_reason)
        )
    elif state in STAMP:
        below = [lower for lower, rank in RANK.items() if rank < RANK[state]]
        stamps = {STAMP[lower]: Coalesce(F(STAMP[lower]), Value(at)) for lower in STAMP if RANK[lower] <= RANK[state]}
        matched = recipients.filter(state__in=list(RANK)).update(
            state=Case(When(state__in=below, then=Value(state)), default=F("state")), **stamps
        )
    else:
        return False
    if matched and state == State.FAILED and str(error_code) in MARKETING_STOPPED:
        marketing_stopped_by_provider(contact_id=message.conversation.contact_id, channel_kind=message.channel.kind)
    if matched:
        broadcast_id = (message.payload or {}).get("broadcast_id")
        if broadcast_id is None:
            broadcast_id = recipients.values_list("broadcast_id", flat=True).first()
        _progress_touch(broadcast_id)
    return bool(matched)


# WhatsApp's 131050: "this recipient has chosen to stop receiving marketing messages on WhatsApp
# from your business" (CHANNELS.md). The customer said no on WhatsApp's side: we record it as
# their consent, so the next broadcast skips them instead of paying for another refusal.
MARKETING_STOPPED = {"131050"}


def marketing_stopped_by_provider(*, contact_id: int, channel_kind: str) -> None:
    contact = Contact.objects.filter(pk=contact_id).only("id", "marketing_consent").first()
    if contact is not None:
        marketing_consent_set(contact=contact, channel_kind=channel_kind, opted_in=False, source="provider")


def failure_reason(code: str, reason: str) -> str:
    """How a failure reads on a recipient and in the report, which groups by it: the provider's
    code, then its words (the sender and the status webhooks both write it)."""
    return ": ".join(part for part in (str(code or "").strip(), (reason or "").strip()) if part)[:200] or "unknown"


# Replies and STOP / START --------------------------------------------------------------------


def broadcast_inbound_apply(*, message, conversation) -> None:
    """A customer's message, just stored under the conversation's lock (a duplicate delivery
    never gets here, so nothing below happens twice): an answer to a broadcast they got lately,
    and STOP / START. A workspace that sent nothing within the conversion window (asked once per
    batch of deliveries) costs no query per message."""
    rules = broadcast_settings_for(workspace_id=conversation.workspace_id)
    recipient = _latest_recipient(conversation) if _sent_lately(conversation.workspace_id, rules) else None
    words = _words_of(message)
    if recipient is None and not words:
        return
    if recipient is not None and recipient.sent_at >= timezone.now() - timedelta(hours=rules.conversion_window_hours):
        _reply_note(message, recipient)
    if words & _normalised(rules.stop_words):
        marketing_consent_set(contact=conversation.contact, channel_kind=message.channel.kind, opted_in=False)
        _confirm_stop(conversation, rules)
    elif words & _normalised(rules.start_words):
        marketing_consent_set(contact=conversation.contact, channel_kind=message.channel.kind, opted_in=True)


def broadcast_inbound_quiet(*, message, conversation, latest: dict | None = None) -> bool:
    """Whether `broadcast_inbound_apply` would do nothing with this message: it is neither a STOP
    nor a START word, and it is no first answer to a broadcast the customer got within the
    conversion window (the workspace sent none lately, or this customer already answered it, and
    the message does not quote it). `latest`: `broadcast_latest_recipients` of the batch's
    conversations, when the workspace sent one lately."""
    workspace_id = conversation.workspace_id
    rules = broadcast_settings_for(workspace_id=workspace_id)
    words = _words_of(message)
    if words:
        both = remembered(
            ("stop-and-start-words", workspace_id),
            lambda: _normalised(rules.stop_words) | _normalised(rules.start_words),
        )
        if words & both:
            return False
    if not _sent_lately(workspace_id, rules):
        return True
    recipient = (latest or {}).get(conversation.pk) if latest is not None else _latest_recipient(conversation)
    if recipient is None or recipient.sent_at < timezone.now() - timedelta(hours=rules.conversion_window_hours):
        return True
    return recipient.replied_at is not None and message.reply_to_id != recipient.message_id


def broadcast_sent_lately(*, workspace_id: int) -> bool:
    return _sent_lately(workspace_id, broadcast_settings_for(workspace_id=workspace_id))


def broadcast_latest_recipients(*, conversations) -> dict:
    """`_latest_recipient` of many conversations in one query: conversation id → recipient."""
    pairs = {(c.pk, c.contact_id) for c in conversations}
    rows = (
        Recipient.objects.filter(
            contact_id__in={contact for _, contact in pairs},
            sent_at__isnull=False,
            message__conversation_id__in={pk for pk, _ in pairs},
        )
        .exclude(state=State.FAILED)
        .annotate(conversation_id=F("message__conversation_id"))
        .order_by("conversation_id", "contact_id", "-sent_at")
        .distinct("conversation_id", "contact_id")
        .only("pk", "broadcast_id", "message_id", "sent_at", "replied_at", "contact_id")
    )
    return {r.conversation_id: r for r in rows if (r.conversation_id, r.contact_id) in pairs}


def _sent_lately(workspace_id: int, rules: BroadcastSettings) -> bool:
    """Whether any of the workspace's broadcasts sent within the conversion window: a recipient's
    `sent_at` is never after its broadcast's `finished_at`, so a reply to an older one is just a
    message and needs no lookup."""

    def sent_lately() -> bool:
        since = timezone.now() - timedelta(hours=rules.conversion_window_hours)
        sent = Broadcast.objects.filter(workspace_id=workspace_id, started_at__isnull=False)
        return sent.filter(Q(finished_at__isnull=True) | Q(finished_at__gte=since)).exists()

    return remembered(("broadcasts-sent-lately", workspace_id), sent_lately)


def _latest_recipient(conversation) -> Recipient | None:
    # The index `recipient_recent` (contact, -sent_at WHERE sent_at IS NOT NULL) answers this.
    return (
        Recipient.objects.filter(
            contact_id=conversation.contact_id, sent_at__isnull=False, message__conversation_id=conversation.pk
        )
        .exclude(state=State.FAILED)  # never reached them
        .order_by("-sent_at")
        .only("pk", "broadcast_id", "message_id", "sent_at", "replied_at")
        .first()
    )


def _reply_note(message, recipient: Recipient) -> None:
    """The first answer marks the broadcast replied and is shown in the inbox as a reply to it
    (so is a later message quoting the broadcast); the rest of the chat is just a chat. Whatever
    workflow the message starts, it starts as usual: nothing here stands in its way."""
    first = Recipient.objects.filter(pk=recipient.pk, replied_at__isnull=True).update(replied_at=message.created_at)
    if not first and message.reply_to_id != recipient.message_id:
        return
    name = Broadcast.objects.filter(pk=recipient.broadcast_id).values_list("name", flat=True).first()
    # The inbox shows "Reply to broadcast <name>" from these, without asking for the broadcast.
    fields = {"payload": {**message.payload, "broadcast_reply": recipient.broadcast_id, "broadcast_name": name}}
    if message.reply_to_id is None:
        fields["reply_to_id"] = recipient.message_id
    Message.objects.filter(pk=message.pk).update(**fields)
    for name, value in fields.items():
        setattr(message, name, value)  # the message.created event is built from this object next
    if first:
        _progress_touch(recipient.broadcast_id)


def normalise_word(text: str) -> str:
    """Makes " Stop! ", "STOP" and "stop." one word, and "إيقاف" the same with or without the
    direction marks phones add to Arabic text."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    kept = "".join(" " if unicodedata.category(char)[0] in "PSC" else char for char in text)
    return " ".join(kept.split())


def _words_of(message) -> set[str]:
    """What a STOP could be: a short text, or a button's text or id (Meta's marketing templates
    carry a "Stop promotions" quick reply whose payload is STOP)."""
    if message.kind not in (Message.Kind.TEXT, Message.Kind.INTERACTIVE):
        return set()
    candidates = (message.text, (message.payload or {}).get("reply_id", ""))
    return {word for word in map(normalise_word, candidates) if word and len(word) <= LONGEST_WORD}


def _normalised(words) -> set[str]:
    return {normalise_word(str(word)) for word in words or ()}


class _JSONMerge(Func):
    """`a || b` on jsonb: the keys of b replace a's, in one UPDATE (no read-modify-write race
    with an operator editing the contact)."""

    arg_joiner = " || "
    template = "(%(expressions)s)"
    output_field = JSONField()


def marketing_consent_set(*, contact, channel_kind: str, opted_in: bool, source: str = "reply") -> None:
    entry = {"opted_in": opted_in, "at": timezone.now().isoformat(), "source": source}
    Contact.objects.filter(pk=contact.pk).update(
        marketing_consent=_JSONMerge(F("marketing_consent"), Value({channel_kind: entry}, output_field=JSONField()))
    )
    contact.marketing_consent = {**(contact.marketing_consent or {}), channel_kind: entry}


def _confirm_stop(conversation, rules: BroadcastSettings) -> None:
    from apps.conversations.services.messages import message_send
    from apps.core.exceptions import DomainError

    text = confirmation_text(rules.stop_confirmation, _language_of(conversation))
    if not text:
        return
    try:
        message_send(conversation=conversation, text=text, sender_kind=Message.Sender.SYSTEM)
    except DomainError as error:  # e.g. WeChat's quota of replies used up: the opt-out stands anyway
        logger.warning("stop confirmation not sent in conversation %s: %s", conversation.pk, error.detail)


def _language_of(conversation) -> str:
    return conversation.language or conversation.contact.language or conversation.channel.workspace.default_language


def confirmation_text(texts: dict, language: str) -> str:
    """The text in `language` ("zh-Hant", "pt_BR", "ru"), else in its base language or a variant
    of it, else in English, else any."""
    texts = {str(name).lower().replace("_", "-"): text for name, text in (texts or {}).items() if text}
    wanted = (language or "").lower().replace("_", "-")
    base = wanted.split("-")[0]
    for name in (wanted, base):
        if name in texts:
            return texts[name]
    for name, text in texts.items():
        if base and name.split("-")[0] == base:
            return text
    return texts.get("en") or next(iter(texts.values()), "")


# Conversions ---------------------------------------------------------------------------------

NO_SALE = (Order.Status.CANCELLED, Order.Status.REFUNDED)
LONGEST_WINDOW = timedelta(hours=24 * 60)  # BroadcastSettings.conversion_window_hours allows no more


def order_conversion_apply(*, order) -> None:
    """An order converts the latest broadcast delivered to its customer within the conversion
    window before it was placed (not one already converted; one order converts one broadcast).
    A cancelled or refunded order was no sale: its conversion is taken back."""
    if order.status in NO_SALE:
        converted = Recipient.objects.filter(order=order)
        for broadcast_id in set(converted.values_list("broadcast_id", flat=True)):
            converted.update(order=None, converted_at=None)
            _progress_touch(broadcast_id)
        return
    if not order.contact_id or not order.placed_at:
        return
    latest = (
        Recipient.objects.filter(
            contact_id=order.contact_id,
            sent_at__isnull=False,  # with the contact: the index `recipient_recent`
            sent_at__gte=order.placed_at - LONGEST_WINDOW,
            delivered_at__lte=order.placed_at,
            converted_at__isnull=True,
        )
        .order_by("-delivered_at")
        .only("pk", "broadcast_id", "delivered_at")
        .first()
    )
    if latest is None or Recipient.objects.filter(order=order).exists():
        return
    window = timedelta(hours=broadcast_settings_for(workspace_id=order.workspace_id).conversion_window_hours)
    if latest.delivered_at < order.placed_at - window:
        return
    if Recipient.objects.filter(pk=latest.pk, converted_at__isnull=True).update(
        converted_at=order.placed_at, order=order
    ):
        _progress_touch(latest.broadcast_id)


# Live progress -------------------------------------------------------------------------------


def broadcast_stats(*, broadcast: Broadcast) -> dict:
    """Where a broadcast stands, for the progress page, the API and the `broadcast.progress`
    event: two aggregate queries over its recipients (`recipient_by_state`)."""
    since = timezone.now() - RATE_WINDOW
    counts = dict.fromkeys(State.values, 0)
    replied = converted = recent = 0
    by_state = (
        Recipient.objects.filter(broadcast_id=broadcast.pk)
        .values("state")
        .annotate(
            count=Count("pk"),
            replied=Count("replied_at"),
            converted=Count("converted_at"),
            recent=Count("pk", filter=Q(sent_at__gte=since)),
        )
        .order_by()
    )
    for row in by_state:
        counts[row["state"]] = row["count"]
        replied, converted, recent = replied + row["replied"], converted + row["converted"], recent + row["recent"]
    reasons = {State.SKIPPED: [], State.FAILED: []}
    if counts[State.SKIPPED] or counts[State.FAILED]:
        for row in _reasons(broadcast, (State.SKIPPED, State.FAILED)):
            reasons[row["state"]].append({"reason": row["reason"] or "unknown", "count": row["count"]})
    rate = recent / RATE_WINDOW.total_seconds()
    left = counts[State.QUEUED] + counts[State.SENDING]
    running = broadcast.state == Broadcast.State.RUNNING
    return {
        "broadcast_id": broadcast.pk,
        "state": broadcast.state,
        "total": sum(counts.values()),
        "counts": counts,
        "replied": replied,
        "converted": converted,
        "skipped_by_reason": reasons[State.SKIPPED],
        "failed_by_reason": reasons[State.FAILED][:TOP_FAILURES],
        "rate": round(rate, 1),
        "eta_seconds": round(left / rate) if running and rate and left else None,
        "started_at": _iso(broadcast.started_at),
        "finished_at": _iso(broadcast.finished_at),
    }


def _reasons(broadcast: Broadcast, states) -> list[dict]:
    return list(
        Recipient.objects.filter(broadcast_id=broadcast.pk, state__in=states)
        .values("state", "reason")
        .annotate(count=Count("pk"))
        .order_by("-count", "reason")
    )


def _iso(moment) -> str | None:
    return moment.isoformat() if moment else None


def broadcast_progress_publish(*, broadcast: Broadcast, force: bool = False) -> bool:
    """Tells the workspace's sockets where the broadcast stands, at most once a second, less often
    for an audience whose count takes long (PROGRESS_DUTY): a send or a status a millisecond apart
    would otherwise each recount 100,000 rows; True if it will.
    A call inside the second makes sure one more goes out just after it, so the page never stays
    on a stale figure once the statuses stop. `force` is for a change of state (paused,
    completed) the page must show at once."""
    if not force and not _progress_slot(broadcast.pk):
        return False
    _progress_on_commit(broadcast)
    return True


def broadcast_progress_flush(*, broadcast_id: int) -> None:
    """The trailing publish (task `broadcasts.publish_progress`, a second after a throttled call);
    put off until the pause a large audience's last count asked for is over."""
    client = get_redis()
    paused_ms = client.pttl(key("broadcast-progress", broadcast_id))
    if paused_ms > PROGRESS_EVERY_MS:
        client.set(key("broadcast-progress-due", broadcast_id), "1", px=paused_ms + 3 * PROGRESS_EVERY_MS)
        _progress_later(broadcast_id, after_ms=paused_ms)
        return
    client.delete(key("broadcast-progress-due", broadcast_id))
    broadcast = Broadcast.objects.filter(pk=broadcast_id).first()
    if broadcast is not None:
        client.set(key("broadcast-progress", broadcast_id), "1", px=PROGRESS_EVERY_MS)
        _progress_send(broadcast)


def _progress_slot(broadcast_id: int) -> bool:
    client = get_redis()
    if client.set(key("broadcast-progress", broadcast_id), "1", nx=True, px=PROGRESS_EVERY_MS):
        return True
    if client.set(key("broadcast-progress-due", broadcast_id), "1", nx=True, px=3 * PROGRESS_EVERY_MS):
        transaction.on_commit(partial(_progress_later, broadcast_id), robust=True)
    return False


def _progress_later(broadcast_id: int, *, after_ms: int = PROGRESS_EVERY_MS) -> None:
    from config.celery import app

    app.send_task(PROGRESS_TASK, args=[broadcast_id], countdown=after_ms / 1000)


def _progress_touch(broadcast_id: int | None) -> None:
    """After a recipient changed: publish if this second's slot is free, without loading the
    broadcast otherwise (100,000 statuses make 100,000 calls)."""
    if broadcast_id is not None and _progress_slot(broadcast_id):
        _progress_on_commit(broadcast_id)


def _progress_on_commit(broadcast: Broadcast | int) -> None:
    # Counted after the commit, so the figures include what the caller just wrote. `robust`: a
    # progress figure is never worth failing a status, a reply or a send for (it is logged).
    transaction.on_commit(partial(_progress_send, broadcast), robust=True)


def _progress_send(broadcast: Broadcast | int) -> None:
    from apps.core.realtime import publish

    if not isinstance(broadcast, Broadcast):
        broadcast = Broadcast.objects.filter(pk=broadcast).first()
        if broadcast is None:
            return
    started = time.monotonic()
    stats = broadcast_stats(broadcast=broadcast)
    pause_ms = int((time.monotonic() - started) * 1000 * PROGRESS_DUTY)
    if pause_ms > PROGRESS_EVERY_MS:  # a large audience: the next count waits longer than a second
        get_redis().set(key("broadcast-progress", broadcast.pk), "1", px=pause_ms)
    publish(broadcast.workspace_id, build_event("broadcast.progress", **stats))


# The report ----------------------------------------------------------------------------------

FUNNEL = (
    ("queued", _("Queued")),
    ("sent", _("Sent")),
    ("delivered", _("Delivered")),
    ("read", _("Read")),
    ("replied", _("Replied")),
    ("converted", _("Converted")),
)


def broadcast_funnel(*, broadcast: Broadcast) -> list[dict]:
    """Queued → sent → delivered → read → replied → converted: how many reached each step (a
    read message was delivered, a failure after sending was sent), and what share of those sent."""
    reached = (
        Recipient.objects.filter(broadcast_id=broadcast.pk)
        .exclude(state=State.SKIPPED)
        .aggregate(
            queued=Count("pk"),
            sent=Count("pk", filter=Q(sent_at__isnull=False) | Q(state__in=REACHED)),
            delivered=Count("pk", filter=Q(delivered_at__isnull=False) | Q(state__in=(State.DELIVERED, State.READ))),
            read=Count("pk", filter=Q(read_at__isnull=False) | Q(state=State.READ)),
            replied=Count("replied_at"),
            converted=Count("converted_at"),
        )
    )
    sent = reached["sent"]
    return [
        {
            "stage": stage,
            "label": str(label),
            "count": reached[stage],
            "percent": round(100 * reached[stage] / sent, 1) if sent and stage != "queued" else None,
        }
        for stage, label in FUNNEL
    ]


def broadcast_failures(*, broadcast: Broadcast) -> list[dict]:
    """Failed recipients by reason, the commonest first, each with its share of the failures."""
    rows = _reasons(broadcast, (State.FAILED,))
    failed = sum(row["count"] for row in rows)
    return [
        {"reason": row["reason"] or "unknown", "count": row["count"], "percent": round(100 * row["count"] / failed, 1)}
        for row in rows
    ]


CSV_COLUMNS = (
    _("Name"),
    _("Phone"),
    _("State"),
    _("Reason"),
    _("Sent"),
    _("Delivered"),
    _("Read"),
    _("Failed"),
    _("Replied"),
    _("Converted"),
    _("Order"),
)
_TIMES = ("sent_at", "delivered_at", "read_at", "failed_at", "replied_at", "converted_at")


class _Line:
    """csv.writer's file: hands each row back instead of keeping it (rows are streamed)."""

    def write(self, line: str) -> str:
        return line


def broadcast_recipients_csv(*, broadcast: Broadcast) -> Iterator[str]:
    """Every recipient as a CSV line, the header first, read in chunks from a server-side cursor
    (flat memory for 100,000 rows); times in the workspace's time zone, phones decrypted."""
    tz = broadcast.workspace.tz
    writer = csv.writer(_Line())
    yield writer.writerow([str(column) for column in CSV_COLUMNS])
    rows = (
        Recipient.objects.filter(broadcast_id=broadcast.pk)
        .select_related("contact", "order")
        .only("state", "reason", *_TIMES, "contact__name", "contact__phone", "order__external_id")
        .order_by("id")
    )
    for recipient in rows.iterator(chunk_size=2000):
        yield writer.writerow(
            [
                _cell(recipient.contact.name),
                recipient.contact.phone,
                recipient.state,
                _cell(recipient.reason),
                *(_local(getattr(recipient, name), tz) for name in _TIMES),
                _cell(recipient.order.external_id if recipient.order_id else ""),
            ]
        )


def _local(moment, tz) -> str:
    return moment.astimezone(tz).isoformat(sep=" ", timespec="seconds") if moment else ""


def _cell(text: str) -> str:
    """A customer's name is theirs to choose: one starting like a formula is kept as text when
    the file is opened in a spreadsheet."""
    return f"'{text}" if text and text[0] in "=+-@\t\r" else text
