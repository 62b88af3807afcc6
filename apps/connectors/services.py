"""Writes for channels: activating a channel with its provider, polling mailboxes, the web chat
visitor's side (apps/connectors/providers/webchat.py) and Parley's outgoing webhooks.

A visitor is known by a signed token the widget keeps in localStorage, so a reload or a new tab
continues the same conversation. A shop that signs its logged-in customer's id with the
channel's secret (HMAC-SHA256, hex) makes the visitor "verified": the visitor's id becomes the
customer's, on every device, and the conversation is marked authorized and tied to the contact
whose external id is that customer id."""

import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.core import signing
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.connectors.ratelimit import take_token
from apps.connectors.registry import connector_for
from apps.contacts.services import contact_fill, contact_resolve, normalise_phone
from apps.core import netguard
from apps.core.exceptions import DomainError
from apps.core.uploads import upload_check

VISITOR_SALT = "parley.webchat.visitor"
UPLOAD_SALT = "parley.webchat.upload"
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TEXT = 4096
# Accepted from visitors; SVG and HTML are refused (they carry scripts) like executables.
UPLOAD_TYPES = re.compile(
    r"^(image/(jpeg|png|gif|webp)|video/(mp4|quicktime|webm)|audio/(mpeg|ogg|mp4|aac|wav|webm)|"
    r"application/(pdf|msword|vnd\.openxmlformats-officedocument\.[a-z.]+|vnd\.ms-excel|"
    r"vnd\.ms-powerpoint|zip)|text/(plain|csv))$"
)
# Enough for a person typing fast, not for a script flooding the inbox (a Redis bucket, so it
# holds across every web process).
VISITOR_MESSAGES_PER_SECOND = 5


@dataclass(frozen=True)
class Visitor:
    id: str
    customer_id: str = ""

    @property
    def verified(self) -> bool:
        return bool(self.customer_id)


def visitor_token(channel, visitor: Visitor) -> str:
    return signing.dumps({"c": str(channel.uuid), "v": visitor.id, "k": visitor.customer_id}, salt=VISITOR_SALT)


def visitor_from_token(channel, token: str) -> Visitor | None:
    try:
        data = signing.loads(token or "", salt=VISITOR_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("c") != str(channel.uuid):
        return None  # a token of another channel (or another workspace's) is not a key here
    return Visitor(id=str(data["v"]), customer_id=str(data.get("k") or ""))


def identity_hash(channel, customer_id: str) -> str:
    """What the shop's server computes for its logged-in customer and puts in the page."""
    return hmac.new(channel.verify_token.encode(), customer_id.encode(), hashlib.sha256).hexdigest()


def webchat_visitor_join(*, channel, token: str = "", customer_id: str = "", customer_hash: str = "") -> Visitor:
    """The visitor behind a widget that (re)connects. A signed customer id makes a verified
    visitor; a wrong signature is refused rather than quietly ignored, so the shop notices."""
    if customer_id:
        expected = identity_hash(channel, str(customer_id))
        if not hmac.compare_digest(expected, str(customer_hash or "")):
            raise DomainError(
                "The customer's identity signature does not match this channel's secret.", code="identity_invalid"
            )
        return Visitor(id=f"customer:{customer_id}", customer_id=str(customer_id))
    known = visitor_from_token(channel, token)
    if known is not None and not known.verified:
        return known
    # A verified visitor's token is not reused once the page no longer vouches for them (logout).
    return Visitor(id=f"v-{uuid.uuid4().hex}")


def webchat_prechat_submit(*, channel, visitor: Visitor, name: str = "", email: str = "", phone: str = "") -> None:
    """The pre-chat form: who the visitor is, so a returning customer is recognised by phone or
    email across channels before the first message."""
    name, email, phone = name.strip()[:120], email.strip(), phone.strip()
    fields = {}
    if email:
        try:
            validate_email(email)
        except ValidationError:
            fields["email"] = ["Enter a valid email address."]
    if phone:
        try:
            phone = normalise_phone(phone)
        except DomainError as error:
            fields["phone"] = error.fields["phone"]
    required = channel.settings.get("prechat", {}).get("required", [])
    for field, value in (("name", name), ("email", email), ("phone", phone)):
        if field in required and not value:
            fields[field] = ["This field is required."]
    if fields:
        raise DomainError("Please check the form.", code="invalid_prechat", fields=fields)
    contact = contact_resolve(
        channel=channel, external_id=visitor.id, name=name, phone=phone, email=email, customer_id=visitor.customer_id
    )
    contact_fill(contact, name=name, phone=phone, email=email)


def webchat_message_receive(*, channel, visitor: Visitor, client_id: str, text: str, upload: str = "") -> None:
    """A visitor's message enters the inbound pipeline like any provider's webhook. The widget's
    own id makes it idempotent: a message re-sent after a reconnect is stored once."""
    if not CLIENT_ID.match(client_id or ""):
        raise DomainError("A message needs an id of 1-64 letters, digits, - or _.", code="invalid_message")
    text = (text or "").strip()
    if len(text) > MAX_TEXT:
        raise DomainError(f"A message has at most {MAX_TEXT} characters.", code="message_too_long")
    staged = _upload_from_token(channel, visitor, upload) if upload else None
    if not text and staged is None:
        raise DomainError("A message needs text or a file.", code="empty_message")
    if take_token(f"webchat:{channel.id}:{visitor.id}", VISITOR_MESSAGES_PER_SECOND) > 0:
        raise DomainError("You are sending messages too fast. Please wait a moment.", code="rate_limited")
    event = {"type": "message", "id": client_id, "text": text, "sent_at": int(time.time() * 1000)}
    if staged:
        event["upload"] = staged
    _store(channel, visitor, [event])


def webchat_receipts_receive(*, channel, visitor: Visitor, state: str, ids: list) -> None:
    """The widget showed (delivered) or the visitor saw (read) the operator's messages."""
    if state not in ("delivered", "read"):
        raise DomainError("A receipt is delivered or read.", code="invalid_receipt")
    ids = [str(i) for i in ids if isinstance(i, str) and i.startswith("out-")][:100]
    if ids:
        now = int(time.time() * 1000)
        _store(channel, visitor, [{"type": "status", "id": i, "state": state, "at": now} for i in ids])


def _store(channel, visitor: Visitor, events: list[dict]) -> None:
    from apps.conversations.services import inbound_event_store

    body = {"visitor": visitor.id, "customer_id": visitor.customer_id, "events": events}
    inbound_event_store(channel=channel, body=json.dumps(body).encode(), headers={"Source": "webchat"})


def webchat_upload_store(*, channel, visitor: Visitor, upload) -> str:
    """Keeps a visitor's file until the message that carries it is processed; returns the token
    the widget sends with that message."""
    content_type = (upload.content_type or "").split(";")[0].strip().lower()
    if not UPLOAD_TYPES.match(content_type):
        raise DomainError(f"Files of type {content_type or 'unknown'} cannot be sent here.", code="unsupported_file")
    limit = connector_for(channel).size_limit(content_type, channel)
    if upload.size > limit:
        raise DomainError(
            f"The file is {upload.size // 1024 // 1024 + 1} MB; this chat accepts at most {limit // 1024 // 1024} MB.",
            code="too_large",
        )
    upload_check(upload=upload, limit=limit)
    from apps.conversations.services import safe_filename

    filename = safe_filename(upload.name, content_type)
    path = default_storage.save(f"webchat/{channel.id}/{secrets.token_hex(16)}/{filename}", upload)
    staged = {"path": path, "content_type": content_type, "filename": filename, "v": visitor.id}
    return signing.dumps(staged, salt=UPLOAD_SALT, compress=True)


def _upload_from_token(channel, visitor: Visitor, token: str) -> dict:
    try:
        staged = signing.loads(token, salt=UPLOAD_SALT, max_age=24 * 3600)
    except signing.BadSignature:
        raise DomainError("That file upload is unknown or expired.", code="invalid_upload") from None
    if staged.get("v") != visitor.id or not staged["path"].startswith(f"webchat/{channel.id}/"):
        raise DomainError("That file upload is unknown or expired.", code="invalid_upload")
    return {key: staged[key] for key in ("path", "content_type", "filename")}


# Channels ------------------------------------------------------------------------------------


def channel_activate(*, channel) -> None:
    """Tells the provider where to deliver once a channel is saved (Telegram's setWebhook).
    Raises ProviderError when the provider refuses; the channel stays saved either way, so a
    supervisor can fix the token and save again."""
    connector_for(channel).activate(channel)


def channel_poll(*, channel_id: int) -> int:
    """Fetches what a polling channel (an IMAP mailbox) has new; each delivery is stored like a
    webhook before the provider is told it was taken. One poller per channel at a time."""
    from apps.connectors.models import Channel
    from apps.conversations.services import inbound_event_store
    from apps.core.redis import get_redis, key

    channel = Channel.objects.select_related("workspace").filter(pk=channel_id, enabled=True).first()
    if channel is None:
        return 0
    lock = get_redis().lock(key("channel-poll", channel.pk), timeout=300, blocking=False)
    if not lock.acquire():
        return 0  # the previous poll of this mailbox is still running
    try:
        return connector_for(channel).poll(
            channel, lambda body, headers: inbound_event_store(channel=channel, body=body, headers=headers)
        )
    finally:
        lock.release()


def channels_to_poll() -> list[int]:
    from apps.connectors.models import Channel
    from apps.connectors.registry import connectors

    kinds = [kind for kind, connector in connectors().items() if connector.polls]
    return list(Channel.objects.filter(kind__in=kinds, enabled=True).values_list("pk", flat=True))


# Message templates ---------------------------------------------------------------------------

# What the provider decides about a template; everything else (the row's id, workspace, when it
# was made) is Parley's.
SYNCED_FIELDS = (
    "provider_id",
    "category",
    "status",
    "rejected_reason",
    "parameter_format",
    "header_format",
    "header",
    "body",
    "footer",
    "buttons",
    "example",
)


def templates_sync(*, channel) -> dict:
    """The channel's templates as the provider lists them: upserted by (channel, name,
    language), a local draft of the same name and language included (it was submitted and
    the provider now has the say). Returns how many were created, updated and removed.

    A template gone from the provider is not deleted but paused, with the reason: broadcasts and
    campaigns point at it (PROTECT), sent messages name it, and a paused template is never sent
    (only approved ones are). If the provider lists it again, the next sync brings it back.
    Drafts were never at the provider and are left alone."""
    from apps.connectors.models import Channel, MessageTemplate

    fetched = connector_for(channel).templates_fetch(channel)  # every page, before any row is locked
    now = timezone.now()
    counts = {"created": 0, "updated": 0, "removed": 0}
    with transaction.atomic():
        Channel.objects.select_for_update().filter(pk=channel.pk).first()  # one sync of a channel at a time
        known = {(t.name, t.language): t for t in MessageTemplate.objects.filter(channel_id=channel.pk)}
        unchanged, seen = [], set()
        for spec in fetched:
            key = (spec["name"], spec["language"])
            if key in seen:
                continue
            seen.add(key)
            outcome, template = _template_upsert(channel, known.get(key), spec, now)
            if outcome:
                counts[outcome] += 1
            else:
                unchanged.append(template.pk)
        MessageTemplate.objects.filter(pk__in=unchanged).update(synced_at=now)
        for key, template in known.items():
            if key not in seen and _template_gone(template, now):
                counts["removed"] += 1
    return counts


def _template_upsert(channel, template, spec: dict, now) -> tuple[str | None, object]:
    """("created" | "updated" | None when the provider's version is what we have, the row)."""
    from apps.connectors.models import MessageTemplate

    if template is None:
        template = MessageTemplate(
            workspace_id=channel.workspace_id, channel=channel, name=spec["name"], language=spec["language"]
        )
    before = {field: getattr(template, field) for field in SYNCED_FIELDS}
    for field in SYNCED_FIELDS:
        if field != "example":
            setattr(template, field, spec.get(field, before[field]))
    template.example = template.examples_in_order(spec.get("examples") or {})  # once the variables are known
    if template.pk is None:
        template.synced_at = now
        template.save()
        return "created", template
    changed = [field for field in SYNCED_FIELDS if getattr(template, field) != before[field]]
    if not changed:
        return None, template
    template.synced_at = now
    template.save(update_fields=[*changed, "synced_at"])
    return "updated", template


def _template_gone(template, now) -> bool:
    """Pauses a template the provider no longer lists; False when there was nothing to do (a
    draft, or one already found gone)."""
    status = type(template).Status
    if template.status == status.DRAFT or (template.status == status.PAUSED and not template.provider_id):
        return False
    template.status = status.PAUSED
    template.provider_id = ""
    template.rejected_reason = f"No longer at the provider (found gone on {now:%Y-%m-%d}); kept for its history."
    template.synced_at = now
    template.save(update_fields=["status", "provider_id", "rejected_reason", "synced_at"])
    return True


def template_draft_copy(*, template):
    """A draft copy of a template to edit (a synced one is the provider's and read-only here),
    named `<name>_v2` (or the next free number) in the same channel and language."""
    from apps.connectors.models import MessageTemplate

    taken = set(
        MessageTemplate.objects.filter(channel_id=template.channel_id, language=template.language).values_list(
            "name", flat=True
        )
    )
    base = re.sub(r"_v\d+$", "", template.name)
    number = 2
    while f"{base}_v{number}" in taken:
        number += 1
    copy = MessageTemplate(
        workspace_id=template.workspace_id,
        channel_id=template.channel_id,
        name=f"{base}_v{number}",
        language=template.language,
        category=template.category,
        status=MessageTemplate.Status.DRAFT,
        **{f: getattr(template, f) for f in ("parameter_format", "header_format", "header", "body", "footer")},
        buttons=list(template.buttons or []),
        example=list(template.example or []),
    )
    copy.save()
    return copy


# Outgoing webhooks ---------------------------------------------------------------------------

WEBHOOK_TIMEOUT = 10.0
WEBHOOK_GIVE_UP_AFTER = timedelta(hours=24)
WEBHOOK_DISABLE_AFTER_FAILURES = 3  # deliveries given up in a row


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`: the timestamp is signed too, so a
    receiver can refuse an old delivery replayed by someone who captured it."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def webhook_emit(*, workspace_id: int, event: str, data: dict) -> None:
    """After the current transaction commits: one delivery per subscription that asked for this
    event, each sent by a worker."""
    transaction.on_commit(lambda: _webhook_fan_out(workspace_id, event, data))


# Which events each workspace's subscriptions want, per process for a moment: most workspaces have
# none, and the inbound pipeline asks several times per message. A change is seen within seconds.
_SUBSCRIPTIONS_TTL = 2.0
_subscriptions: dict[int, tuple[float, list[tuple[int, list[str]]]]] = {}


def _wanted(workspace_id: int, event: str) -> list[int]:
    from apps.connectors.models import WebhookSubscription

    cached = _subscriptions.get(workspace_id)
    if cached is None or cached[0] < time.monotonic():
        rows = list(
            WebhookSubscription.objects.filter(workspace_id=workspace_id, enabled=True).values_list("pk", "events")
        )
        cached = (time.monotonic() + _SUBSCRIPTIONS_TTL, rows)
        _subscriptions[workspace_id] = cached
    return [pk for pk, events in cached[1] if event in events]


def webhook_subscriptions_changed(*, workspace_id: int) -> None:
    _subscriptions.pop(workspace_id, None)


def _webhook_fan_out(workspace_id: int, event: str, data: dict) -> None:
    from apps.connectors.models import WebhookDelivery
    from apps.connectors.tasks import deliver_webhook

    payload = json.loads(json.dumps(data, default=str))
    for subscription_id in _wanted(workspace_id, event):
        delivery = WebhookDelivery.objects.create(
            workspace_id=workspace_id,
            subscription_id=subscription_id,
            event=event,
            payload=payload,
            next_attempt_at=timezone.now(),
            **WebhookDelivery.subjects(event, payload),
        )
        deliver_webhook.delay(delivery.pk)


def webhook_body(delivery) -> bytes:
    return json.dumps(
        {
            "id": str(delivery.event_id),
            "type": delivery.event,
            "created_at": delivery.created_at.isoformat(),
            "workspace_id": delivery.workspace_id,
            "data": delivery.payload,
        },
        separators=(",", ":"),
    ).encode()


def webhook_deliver(*, delivery_id: int) -> float | None:
    """One attempt, outside any transaction. Returns the seconds until the next attempt, or None
    when there is none (delivered, given up, or not due)."""
    import httpx

    from apps.connectors.models import WebhookDelivery

    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now + timedelta(seconds=1)
    ).update(next_attempt_at=now + timedelta(seconds=WEBHOOK_TIMEOUT * 3), attempts=F("attempts") + 1)
    if claimed != 1:
        return None  # done, gone, or another worker has it
    delivery = WebhookDelivery.objects.select_related("subscription").get(pk=delivery_id)
    body = webhook_body(delivery)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Parley-Webhooks/1",
        "X-Parley-Event": delivery.event,
        "X-Parley-Delivery": str(delivery.event_id),
        "X-Parley-Signature": webhook_signature(delivery.subscription.secret, timestamp, body),
    }
    status, text, error = None, "", ""
    try:
        response = netguard.post(delivery.subscription.url, content=body, headers=headers, timeout=WEBHOOK_TIMEOUT)
        status, text = response.status_code, response.text[:2000]
    except httpx.HTTPError as failure:
        error = f"{type(failure).__name__}: {failure}"[:2000]
    if status is not None and 200 <= status < 300:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            state=WebhookDelivery.State.DELIVERED,
            delivered_at=timezone.now(),
            last_status_code=status,
            last_response=text,
            last_error="",
            next_attempt_at=None,
        )
        type(delivery.subscription).objects.filter(pk=delivery.subscription_id).update(consecutive_failures=0)
        return None
    return _webhook_failed(delivery, status, text, error)


def _webhook_failed(delivery, status, text: str, error: str) -> float | None:
    from apps.connectors.models import WebhookDelivery

    fields = {"last_status_code": status, "last_response": text, "last_error": error}
    delay = min(3600.0, 10.0 * 2 ** (delivery.attempts - 1))
    if timezone.now() + timedelta(seconds=delay) - delivery.created_at > WEBHOOK_GIVE_UP_AFTER:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            state=WebhookDelivery.State.FAILED, next_attempt_at=None, **fields
        )
        _webhook_subscription_failed(delivery.subscription)
        return None
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() + timedelta(seconds=delay), **fields
    )
    return delay


def _webhook_subscription_failed(subscription) -> None:
    """A subscription whose deliveries keep failing for a day is switched off, and the
    workspace's supervisors are told by email and in the admin (its reason)."""
    from django.core.mail import send_mail

    from apps.workspaces.models import ADMIN_ROLES, Membership

    model = type(subscription)
    model.objects.filter(pk=subscription.pk).update(consecutive_failures=F("consecutive_failures") + 1)
    subscription.refresh_from_db(fields=["consecutive_failures", "enabled"])
    if subscription.consecutive_failures < WEBHOOK_DISABLE_AFTER_FAILURES or not subscription.enabled:
        return
    reason = (
        f"Disabled on {timezone.now():%Y-%m-%d %H:%M} UTC: {subscription.consecutive_failures} deliveries in a row "
        "failed for 24 hours. Fix the receiver, then enable it again and replay the failed deliveries."
    )
    model.objects.filter(pk=subscription.pk).update(enabled=False, disabled_reason=reason)
    supervisors = Membership.objects.filter(workspace_id=subscription.workspace_id, role__in=ADMIN_ROLES)
    emails = [m.user.email for m in supervisors.select_related("user") if m.user.email]
    if emails:
        send_mail(f"Parley: webhook to {subscription.url} disabled", reason, None, emails, fail_silently=True)


def webhook_replay(*, delivery) -> None:
    """Sends a delivery again from the start (the admin's Replay)."""
    from apps.connectors.models import WebhookDelivery
    from apps.connectors.tasks import deliver_webhook

    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=WebhookDelivery.State.PENDING, next_attempt_at=timezone.now(), attempts=0, created_at=timezone.now()
    )
    transaction.on_commit(lambda: deliver_webhook.delay(delivery.pk))


def webhooks_retry_due(*, now) -> int:
    """Pending deliveries whose task was lost (a worker restart): sent again (every minute)."""
    from apps.connectors.models import WebhookDelivery
    from apps.connectors.tasks import deliver_webhook

    due = list(
        WebhookDelivery.objects.filter(state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now).values_list(
            "pk", flat=True
        )[:1000]
    )
    for delivery_id in due:
        deliver_webhook.delay(delivery_id)
    return len(due)
