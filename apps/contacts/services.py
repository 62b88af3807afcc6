"""Writes for contacts: recognising a person across channels, and merging duplicates."""

import re
from datetime import timedelta

import phonenumbers
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.contacts.models import Contact, ContactIdentity
from apps.core.crypto import blind_index
from apps.core.exceptions import DomainError


def normalise_phone(raw: str, *, region: str | None = None) -> str:
    """E.164, or a DomainError naming the problem."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as error:
        raise DomainError(
            f"{raw!r} is not a phone number.", code="invalid_phone", fields={"phone": [str(error)]}
        ) from None
    if not phonenumbers.is_possible_number(number):
        raise DomainError(
            f"{raw!r} is not a possible phone number.",
            code="invalid_phone",
            fields={"phone": ["Not possible."]},
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str) -> str:
    return raw.strip().lower()


NAME_PREFIX_MAX = 12
WORD = re.compile(r"\w+", re.UNICODE)


def _token(kind: str, value: str) -> str:
    return blind_index(f"{kind}:{value}")[:16]


def workspace_token(workspace_id: int) -> str:
    """Every contact carries its workspace's token too, so a search asks the GIN index for
    (workspace AND name) and reads only that workspace's matches from the table."""
    return _token("w", str(workspace_id))


def search_tokens_for(*, workspace_id: int, name: str, phone: str, email: str) -> list[str]:
    """Blind tokens that let an operator find an encrypted contact by the start of any word of the
    name, the last digits of the phone, or the start of the email, without the database ever
    holding them in the clear."""
    tokens = {workspace_token(workspace_id)}
    for word in WORD.findall((name or "").casefold()):
        tokens.update(_token("n", word[:length]) for length in range(2, min(len(word), NAME_PREFIX_MAX) + 1))
    digits = re.sub(r"\D", "", phone or "")
    tokens.update(_token("p", digits[-length:]) for length in range(4, len(digits) + 1))
    email = (email or "").casefold()
    tokens.update(_token("e", email[:length]) for length in range(3, min(len(email), 24) + 1))
    return sorted(tokens)


def search_tokens_for_query(query: str, *, workspace_id: int) -> list[str]:
    """The tokens every one of which a contact must carry to match what the operator typed
    (none when nothing searchable was typed)."""
    tokens = []
    for term in query.casefold().split():
        digits = re.sub(r"[\s+()\-]", "", term)
        if digits.isdigit() and len(digits) >= 4:
            tokens.append(_token("p", digits[-15:]))
        elif "@" in term:
            tokens.append(_token("e", term[:24]))
        else:
            tokens += [_token("n", word[:NAME_PREFIX_MAX]) for word in WORD.findall(term) if len(word) >= 2]
    return [workspace_token(workspace_id), *tokens] if tokens else []


def contact_index(contact: Contact) -> list[str]:
    """Recomputes the blind indexes from the clear values; returns the fields it set."""
    contact.phone_index = blind_index(contact.phone)
    contact.email_index = blind_index(contact.email)
    contact.search_tokens = search_tokens_for(
        workspace_id=contact.workspace_id, name=contact.name, phone=contact.phone, email=contact.email
    )
    return ["phone_index", "email_index", "search_tokens"]


def contact_set_phone(contact: Contact, phone: str) -> None:
    contact.phone = normalise_phone(phone) if phone else ""
    contact_index(contact)
    if contact.phone and not contact.country:
        contact.country = phonenumbers.region_code_for_number(phonenumbers.parse(contact.phone)) or ""


def contact_set_email(contact: Contact, email: str) -> None:
    contact.email = normalise_email(email) if email else ""
    contact_index(contact)


def _find_by_phone_or_email(workspace, *, phone: str, email: str) -> Contact | None:
    candidates = Contact.objects.filter(workspace=workspace, merged_into__isnull=True)
    if phone:
        found = candidates.filter(phone_index=blind_index(phone)).order_by("created_at").first()
        if found:
            return found
    if email:
        return candidates.filter(email_index=blind_index(normalise_email(email))).order_by("created_at").first()
    return None


def contact_resolve(
    *, channel, external_id: str, name: str = "", phone: str = "", email: str = "", customer_id: str = ""
) -> Contact:
    """The contact behind a channel identity: the known one, else the shop's own customer with a
    verified `customer_id` (web chat's identity verification), else a returning customer found
    by phone or email (the same person who wrote on Telegram last week), else a new contact.

    Safe under concurrency: two first messages from a new person race on the identity's unique
    constraint, and the loser reads the winner's row."""
    index = blind_index(external_id)
    identity = (
        ContactIdentity.objects.select_related("contact").filter(channel=channel, external_id_index=index).first()
    )
    if identity is not None:
        return _surviving(identity.contact)
    try:
        phone = normalise_phone(phone) if phone else ""
    except DomainError:
        phone = ""
    try:
        with transaction.atomic():
            contact = _find_by_customer_id(channel.workspace_id, customer_id) or _find_by_phone_or_email(
                channel.workspace, phone=phone, email=email
            )
            created = contact is None
            if contact is None:
                contact = Contact(workspace_id=channel.workspace_id, name=name, external_id=customer_id)
                contact_set_phone(contact, phone)
                contact_set_email(contact, email)
                contact_index(contact)
                contact.save()
            ContactIdentity.objects.create(
                workspace_id=channel.workspace_id,
                contact=contact,
                channel=channel,
                external_id=external_id,
                external_id_index=index,
                display_name=name,
            )
            if created:
                from apps.connectors.services import webhook_emit

                webhook_emit(workspace_id=channel.workspace_id, event="contact.created", data=_hook(contact))
            return contact
    except IntegrityError:
        identity = ContactIdentity.objects.select_related("contact").get(channel=channel, external_id_index=index)
        return _surviving(identity.contact)


def _find_by_customer_id(workspace_id: int, customer_id: str) -> Contact | None:
    if not customer_id:
        return None
    return Contact.objects.filter(workspace_id=workspace_id, external_id=customer_id).first()


def contact_fill(contact: Contact, *, name: str = "", phone: str = "", email: str = "") -> Contact:
    """Fills a known contact's empty name, phone and email (a web visitor's pre-chat form); what
    is already known is kept. Raises DomainError naming a malformed phone."""
    fields = []
    if name and not contact.name:
        contact.name, fields = name, [*fields, "name"]
    if phone and not contact.phone:
        contact_set_phone(contact, phone)
        fields += ["phone", "country"]
    if email and not contact.email:
        contact_set_email(contact, email)
        fields += ["email"]
    if fields:
        contact.save(update_fields=[*fields, *contact_index(contact)])
    return contact


def _surviving(contact: Contact) -> Contact:
    while contact.merged_into_id:
        contact = Contact.objects.get(pk=contact.merged_into_id)
    return contact


TOUCH_EVERY = timedelta(minutes=1)


def contact_touch(contact: Contact, *, name: str = "") -> None:
    """Last seen now; written at most once a minute for a chatty customer."""
    now = timezone.now()
    if contact.last_seen_at and now - contact.last_seen_at < TOUCH_EVERY and (contact.name or not name):
        return
    fields = {"last_seen_at": now}
    if name and not contact.name:
        fields["name"] = name
        fields["search_tokens"] = search_tokens_for(
            workspace_id=contact.workspace_id, name=name, phone=contact.phone, email=contact.email
        )
    Contact.objects.filter(pk=contact.pk).update(**fields)


def contacts_touch(contacts) -> None:
    """`contact_touch` for many contacts at once, whose names are known (one UPDATE)."""
    now = timezone.now()
    due = [contact.pk for contact in contacts if not contact.last_seen_at or now - contact.last_seen_at >= TOUCH_EVERY]
    if due:
        Contact.objects.filter(pk__in=due).update(last_seen_at=now)


def contact_phone_learned(*, contact: Contact, phone: str) -> Contact:
    """A known contact told us their number later (Telegram's "share my phone" after /start):
    the customer who already has that number absorbs them, so one person keeps one history."""
    try:
        phone = normalise_phone(phone)
    except DomainError:
        return contact
    other = _find_by_phone_or_email(contact.workspace, phone=phone, email="")
    if other is not None and other.pk != contact.pk:
        return contact_merge(survivor=other, duplicate=contact)
    return contact_fill(contact, phone=phone)


@transaction.atomic
def contact_merge(*, survivor: Contact, duplicate: Contact) -> Contact:
    """Moves everything of `duplicate` to `survivor` and leaves `duplicate` as a pointer: its
    identities, conversations and tags; empty fields are filled, custom fields united."""
    from apps.conversations.models import Conversation

    if survivor.pk == duplicate.pk or survivor.workspace_id != duplicate.workspace_id:
        raise DomainError("Only two different contacts of one workspace can be merged.", code="invalid_merge")
    survivor = Contact.objects.select_for_update().get(pk=survivor.pk)
    duplicate = Contact.objects.select_for_update().get(pk=duplicate.pk)
    ContactIdentity.objects.filter(contact=duplicate).update(contact=survivor)
    # A survivor already talking on the same channel keeps its thread; the duplicate's moves its
    # messages into it.
    for conversation in Conversation.objects.filter(contact=duplicate):
        kept = Conversation.objects.filter(contact=survivor, channel=conversation.channel_id).first()
        if kept is None:
            Conversation.objects.filter(pk=conversation.pk).update(contact=survivor)
        else:
            conversation.messages.update(conversation=kept)
            conversation.delete()
    survivor.tags.add(*duplicate.tags.all())
    for field in ("name", "language", "country", "external_id"):
        if not getattr(survivor, field) and getattr(duplicate, field):
            setattr(survivor, field, getattr(duplicate, field))
    for field, index in (("phone", "phone_index"), ("email", "email_index")):
        if not getattr(survivor, field) and getattr(duplicate, field):
            setattr(survivor, field, getattr(duplicate, field))
            setattr(survivor, index, getattr(duplicate, index))
    survivor.custom_fields = {**duplicate.custom_fields, **survivor.custom_fields}
    survivor.marketing_consent = {**duplicate.marketing_consent, **survivor.marketing_consent}
    if duplicate.last_purchase_at and (
        not survivor.last_purchase_at or duplicate.last_purchase_at > survivor.last_purchase_at
    ):
        survivor.last_purchase_at = duplicate.last_purchase_at
    external_id = duplicate.external_id
    Contact.objects.filter(pk=duplicate.pk).update(
        merged_into=survivor, external_id="", phone_index="", email_index=""
    )
    survivor.external_id = survivor.external_id or external_id
    contact_index(survivor)
    survivor.save()
    return survivor


# Writes from the API (the order system keeps contacts in sync) ------------------------------

CONTACT_FIELDS = (
    "name",
    "phone",
    "email",
    "external_id",
    "language",
    "country",
    "lifecycle_stage",
    "last_purchase_at",
)


def custom_fields_clean(*, workspace_id: int, values: dict) -> dict:
    """Checks values against the workspace's typed definitions; names the field that is wrong."""
    from datetime import date

    from apps.contacts.models import CustomFieldDefinition

    definitions = {d.key: d for d in CustomFieldDefinition.objects.filter(workspace_id=workspace_id)}
    errors, cleaned = {}, {}
    for key, value in values.items():
        definition = definitions.get(key)
        if definition is None:
            errors[key] = ["No such custom field in this workspace."]
            continue
        kind = definition.type
        ok = (
            value is None
            or (kind == "text" and isinstance(value, str))
            or (kind == "number" and isinstance(value, int | float) and not isinstance(value, bool))
            or (kind == "boolean" and isinstance(value, bool))
            or (kind == "choice" and value in definition.choices)
        )
        if kind == "date" and isinstance(value, str):
            try:
                date.fromisoformat(value)
                ok = True
            except ValueError:
                ok = False
        if not ok:
            errors[key] = [
                f"Expected a {kind}" + (f" (one of {definition.choices})" if kind == "choice" else "") + "."
            ]
        cleaned[key] = value
    if errors:
        raise DomainError("Some custom fields are invalid.", code="invalid", fields={"custom_fields": [str(errors)]})
    return cleaned


@transaction.atomic
def contact_save(*, workspace_id: int, contact: Contact | None = None, data: dict) -> Contact:
    """Creates or updates a contact from API data: phone normalised to E.164, blind indexes and
    search tokens kept in step, custom fields checked against their types, tags set."""
    created = contact is None
    contact = contact or Contact(workspace_id=workspace_id)
    for field in CONTACT_FIELDS:
        if field in data and field not in ("phone", "email"):
            setattr(contact, field, data[field] if data[field] is not None else "")
    if "last_purchase_at" in data:
        contact.last_purchase_at = data["last_purchase_at"]
    if "phone" in data:
        contact_set_phone(contact, data["phone"] or "")
    if "email" in data:
        contact_set_email(contact, data["email"] or "")
    if "custom_fields" in data:
        contact.custom_fields = {
            **contact.custom_fields,
            **custom_fields_clean(workspace_id=workspace_id, values=data["custom_fields"]),
        }
    if "marketing_consent" in data:
        contact.marketing_consent = {**contact.marketing_consent, **data["marketing_consent"]}
    contact_index(contact)
    try:
        with transaction.atomic():
            contact.save()
    except IntegrityError:
        raise DomainError(
            "Another contact already has this external id.",
            code="conflict",
            fields={"external_id": ["Already used in this workspace."]},
        ) from None
    if "tags" in data:
        contact.tags.set(data["tags"])
    from apps.connectors.services import webhook_emit

    webhook_emit(
        workspace_id=workspace_id, event="contact.created" if created else "contact.updated", data=_hook(contact)
    )
    return contact


def _hook(contact: Contact) -> dict:
    return {
        "id": contact.pk,
        "external_id": contact.external_id,
        "name": contact.name,
        "phone": contact.phone,
        "email": contact.email,
        "lifecycle_stage": contact.lifecycle_stage,
    }


def contact_upsert(*, workspace_id: int, data: dict) -> tuple[Contact, bool]:
    """The order system's "make sure this customer exists": matched by external id, then phone,
    then email; created when none matches. Returns (contact, created)."""
    from apps.contacts.selectors import contact_match

    existing = contact_match(
        workspace_id=workspace_id,
        external_id=data.get("external_id") or "",
        phone=data.get("phone") or "",
        email=data.get("email") or "",
    )
    return contact_save(workspace_id=workspace_id, contact=existing, data=data), existing is None


def contact_tags_change(*, contact: Contact, add=(), remove=()) -> Contact:
    """Adds and removes tags; a tag newly added may start a workflow (trigger "tag added")."""
    had = set(contact.tags.values_list("pk", flat=True))
    contact.tags.add(*add)
    contact.tags.remove(*remove)
    from apps.connectors.services import webhook_emit
    from apps.workflows.services import contact_event_on_commit

    webhook_emit(workspace_id=contact.workspace_id, event="contact.updated", data=_hook(contact))
    for tag in add:
        if tag.pk not in had:
            contact_event_on_commit(contact_id=contact.pk, trigger="tag_added", details={"tag": tag.name})
    return contact


# Orders and stock (from the order system) ---------------------------------------------------

REPEAT_AFTER_ORDERS = 2


@transaction.atomic
def order_upsert(*, workspace_id: int, data: dict, contact: Contact | None = None):
    """Creates or updates an order by its external id; its history records every status it
    passes; a paid order moves the customer's last purchase date and lifecycle stage."""
    from apps.contacts.models import Order

    order = (
        Order.objects.select_for_update().filter(workspace_id=workspace_id, external_id=data["external_id"]).first()
    )
    created = order is None
    order = order or Order(workspace_id=workspace_id, external_id=data["external_id"])
    previous = None if created else order.status
    for field in ("status", "items", "total", "currency", "delivery_address", "courier", "tracking_number"):
        if field in data:
            setattr(order, field, data[field])
    if "tracking_url" in data:
        order.tracking_url = data["tracking_url"] or ""
    if contact is not None:
        order.contact = contact
    order.placed_at = data.get("placed_at") or order.placed_at or timezone.now()
    if order.status != previous:
        order.history = [*order.history, {"status": order.status, "at": timezone.now().isoformat()}]
    order.save()
    if order.contact_id and order.status in ("paid", "shipped", "delivered") and previous in (None, "created"):
        _contact_purchased(order.contact, order.placed_at)
    if order.status != previous:
        from apps.broadcasts.results import order_conversion_apply

        order_conversion_apply(order=order)  # an order soon after a broadcast converts it
    from apps.connectors.services import webhook_emit
    from apps.workflows.services import contact_event_on_commit

    webhook_emit(workspace_id=workspace_id, event="order.updated", data=order_payload(order))
    if order.contact_id and order.status != previous:
        details = {"status": order.status, "order": {"number": order.external_id, "status_code": order.status}}
        contact_event_on_commit(contact_id=order.contact_id, trigger="order_event", details=details)
    return order, created


def _contact_purchased(contact: Contact, at) -> None:
    from apps.contacts.models import Order

    paid = Order.objects.filter(contact=contact, status__in=("paid", "shipped", "delivered")).count()
    stage = Contact.Lifecycle.REPEAT if paid >= REPEAT_AFTER_ORDERS else Contact.Lifecycle.CUSTOMER
    last = max(filter(None, [contact.last_purchase_at, at]))
    Contact.objects.filter(pk=contact.pk).update(last_purchase_at=last, lifecycle_stage=stage)


def order_payload(order) -> dict:
    return {
        "id": order.pk,
        "external_id": order.external_id,
        "contact_id": order.contact_id,
        "status": order.status,
        "items": order.items,
        "total": str(order.total),
        "currency": order.currency,
        "delivery_address": order.delivery_address,
        "courier": order.courier,
        "tracking_number": order.tracking_number,
        "tracking_url": order.tracking_url,
        "history": order.history,
        "placed_at": order.placed_at.isoformat() if order.placed_at else None,
        "updated_at": order.updated_at.isoformat() if order.updated_at else None,
    }


def stock_event_record(*, workspace_id: int, sku: str, in_stock: bool, quantity: int | None = None):
    """Stores what the order system says; marks a restock (it was out, now it is in)."""
    from apps.contacts.models import StockEvent

    last = StockEvent.objects.filter(workspace_id=workspace_id, sku=sku).order_by("-created_at", "-id").first()
    event = StockEvent.objects.create(
        workspace_id=workspace_id,
        sku=sku,
        in_stock=in_stock,
        quantity=quantity,
        restocked=in_stock and last is not None and not last.in_stock,
    )
    if event.restocked:  # back-in-stock campaigns tell the customers waiting for it
        from apps.broadcasts.campaigns import back_in_stock_on_restock

        transaction.on_commit(lambda: back_in_stock_on_restock(stock_event=event))
    return event
