"""What the audit log says about channels and webhook subscriptions, without their secrets."""

from urllib.parse import urlsplit

from apps.connectors.models import WebhookSubscription


def subscription_audit_repr(subscription: WebhookSubscription) -> str:
    """The subscription's address without its query or user info: a receiver's URL may carry its
    own access key there (`?key=…`), which must not land in the log."""
    parts = urlsplit(subscription.url or "")
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


def changed_fields(instance, data: dict) -> list[str]:
    """The names of the fields `data` changes on `instance` (their values stay out of the log)."""
    return sorted(name for name, value in data.items() if getattr(instance, name, None) != value)
