"""Writes for contacts: recognising a person across channels, and merging duplicates."""

import re

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


def search_tokens_for(*, name: str, phone: str, email: str) -> list[str]:
    """Blind tokens that let an operator find an encrypted contact by the start of any word of the
    name, the last digits of the phone, or the start of the email, without the database ever
    holding them in the clear."""
    tokens = set()
    for word in WORD.findall((name or "").casefold()):
        tokens.update(_token("n", word[:length]) for length in range(2, min(len(word), NAME_PREFIX_MAX) + 1))
    digits = re.sub(r"\D", "", phone or "")
    tokens.update(_token("p", digits[-length:]) for length in range(4, len(digits) + 1))
    email = (email or "").casefold()
    tokens.update(_token("e", email[:length]) for length in range(3, min(len(email), 24) + 1))
    return sorted(tokens)


def search_tokens_for_query(query: str) -> list[str]:
    """The tokens every one of which a contact must carry to match what the operator typed."""
    tokens = []
    for term in query.casefold().split():
        digits = re.sub(r"[\s+()\-]", "", term)
        if digits.isdigit() and len(digits) >= 4:
            tokens.append(_token("p", digits[-15:]))
        elif "@" in term:
            tokens.append(_token("e", term[:24]))
        else:
            tokens += [_token("n", word[:NAME_PREFIX_MAX]) for word in WORD.findall(term) if len(word) >= 2]
    return tokens


def contact_index(contact: Contact) -> list[str]:
    """Recomputes the blind indexes from the clear values; returns the fields it set."""
    contact.phone_index = blind_index(contact.phone)
    contact.email_index = blind_index(contact.email)
    contact.search_tokens = search_tokens_for(name=contact.name, phone=contact.phone, email=contact.email)
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


def contact_touch(contact: Contact, *, name: str = "") -> None:
    fields = {"last_seen_at": timezone.now()}
    if name and not contact.name:
        fields["name"] = name
        fields["search_tokens"] = search_tokens_for(name=name, phone=contact.phone, email=contact.email)
    Contact.objects.filter(pk=contact.pk).update(**fields)


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
