from django.db.models import Count, QuerySet

from apps.contacts.models import Contact
from apps.core.crypto import blind_index


def contacts_active(*, workspace) -> QuerySet[Contact]:
    return Contact.objects.filter(workspace=workspace, merged_into__isnull=True)


def contact_find_by_phone(*, workspace, phone: str) -> Contact | None:
    from apps.contacts.services import normalise_phone

    return contacts_active(workspace=workspace).filter(phone_index=blind_index(normalise_phone(phone))).first()


def contact_merge_suggestions(*, workspace) -> list[list[Contact]]:
    """Groups of contacts that share a phone or an email: probably one person on two channels."""
    groups = []
    for index_field in ("phone_index", "email_index"):
        shared = (
            contacts_active(workspace=workspace)
            .exclude(**{index_field: ""})
            .values(index_field)
            .annotate(n=Count("id"))
            .filter(n__gt=1)
            .values_list(index_field, flat=True)
        )
        for value in shared:
            groups.append(
                list(contacts_active(workspace=workspace).filter(**{index_field: value}).order_by("created_at"))
            )
    return groups


def contact_duplicates(*, contact: Contact) -> QuerySet[Contact]:
    """Other contacts of the workspace with the same phone or email: merge candidates."""
    from django.db.models import Q

    same = Q()
    if contact.phone_index:
        same |= Q(phone_index=contact.phone_index)
    if contact.email_index:
        same |= Q(email_index=contact.email_index)
    if not same:
        return Contact.objects.none()
    return contacts_active(workspace=contact.workspace_id).filter(same).exclude(pk=contact.pk).order_by("created_at")


def contact_match(*, workspace_id: int, external_id: str = "", phone: str = "", email: str = "") -> Contact | None:
    """The contact an upsert means: by external id, else phone, else email."""
    from apps.contacts.services import normalise_email, normalise_phone

    active = contacts_active(workspace=workspace_id)
    if external_id:
        found = active.filter(external_id=external_id).first()
        if found:
            return found
    if phone:
        found = active.filter(phone_index=blind_index(normalise_phone(phone))).order_by("created_at").first()
        if found:
            return found
    if email:
        return active.filter(email_index=blind_index(normalise_email(email))).order_by("created_at").first()
    return None


ORDER_LOOKUP_TIMEOUT = 3.0


def orders_for_contact(*, contact: Contact) -> dict:
    """The customer's orders, for the inbox's Orders panel and the bot: asked of the order system
    live when the workspace names a lookup URL (3 s at most), else (or when it does not answer)
    what the order system pushed to `POST /api/v1/orders/`."""
    from urllib.parse import quote

    import httpx

    from apps.contacts.models import Order
    from apps.contacts.services import order_payload
    from apps.core import netguard

    pushed = [order_payload(o) for o in Order.objects.filter(workspace_id=contact.workspace_id, contact=contact)[:50]]
    workspace = contact.workspace
    if not workspace.order_lookup_url:
        return {"source": "pushed", "notice": "", "orders": pushed}
    values = {name: quote(getattr(contact, name) or "", safe="") for name in ("external_id", "phone", "email")}
    url = workspace.order_lookup_url.format(**values)
    headers = {"Accept": "application/json"}
    if workspace.order_lookup_token:
        headers["Authorization"] = f"Bearer {workspace.order_lookup_token}"
    try:
        response = netguard.get(url, headers=headers, timeout=ORDER_LOOKUP_TIMEOUT)
        response.raise_for_status()
        data = response.json()
        orders = data.get("orders", data) if isinstance(data, dict) else data
        if not isinstance(orders, list):
            raise ValueError("expected a list of orders")
    except netguard.OutboundBlocked as error:
        return {"source": "pushed", "notice": f"The order lookup URL was refused: {error}", "orders": pushed}
    except (httpx.HTTPError, ValueError) as error:
        notice = f"The order system did not answer ({type(error).__name__}); showing the last orders it sent."
        return {"source": "pushed", "notice": notice, "orders": pushed}
    return {"source": "live", "notice": "", "orders": [o for o in orders if isinstance(o, dict)][:50]}
