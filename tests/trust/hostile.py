"""A workspace whose every text is hostile, for the XSS tests (test_xss_escaping.py, and
test_xss_browser.py in a real browser).

Every object of tests/trust/world.py's `populate` carries MARKER (its fields' lengths allow no
more); the texts a person reads most get the longer HOSTILE, and links get JAVASCRIPT_URL. A page
that shows any of it unescaped runs `alert` or sets `window.__xss`."""

from dataclasses import dataclass

from django.test import Client
from django.utils import timezone

from tests.trust.world import Tenant, populate

# An RTL override, an attribute break-out, and a tag whose handler runs when parsed as HTML.
MARKER = "\u202e\"'><img src=x onerror=alert(1)>"
SCRIPT = '"><script>window.__xss=1</script>'
TEMPLATE = "{{7*7}}"  # a server-side template engine would print 49
HOSTILE = f"{MARKER} {SCRIPT} <svg onload=window.__xss=2> {TEMPLATE}"
JAVASCRIPT_URL = "javascript:window.__xss=3"
EMAIL_HTML = (
    f"<p>{HOSTILE}</p><img src=x onerror=alert(4)><a href='{JAVASCRIPT_URL}'>track</a>"
    "<script>window.__xss=5</script><iframe src='javascript:alert(6)'></iframe><form action='https://evil.example'>"
)
# What a page may never contain verbatim: each is live markup (a `javascript:` URL may show as
# text, never in a link: test_xss_escaping.py looks for it in href/src/action).
RAW = ("<img src=x onerror=alert(1)>", "<script>window.__xss=1</script>", "<svg onload=window.__xss=2>")


@dataclass
class Hostile:
    tenant: Tenant
    email_conversation: object
    closed_conversation: object


def build_hostile() -> Hostile:
    from apps.workspaces import services
    from apps.workspaces.models import Role
    from tests.factories import make_member, make_user, make_workspace

    workspace = make_workspace(name=f"Shop {MARKER}", slug="hostile")
    owner = make_member(workspace, Role.OWNER, make_user(username="hostile-owner", first_name=MARKER))
    agent = make_member(workspace, Role.AGENT, make_user(username="hostile-agent", first_name=MARKER))
    _, token = services.api_token_create(workspace=workspace, name=MARKER)
    tenant = Tenant(MARKER, workspace, owner.user, agent.user, token)
    tenant.objects = populate(workspace, MARKER, owner=owner, agent=agent)
    _sharpen(tenant, owner)
    return Hostile(tenant, _email_conversation(workspace), _closed_conversation(tenant, owner))


def _sharpen(tenant: Tenant, owner) -> None:
    """The longer payloads where a person reads them: the contact, a note, a quick reply, an
    order's tracking link, a custom field, the workflow's message."""
    from apps.contacts.models import Order
    from apps.conversations.models import QuickReply
    from apps.conversations.services import note_add

    contact = tenant.get("contacts.contact")
    contact.name = f"Amira {HOSTILE}"
    contact.custom_fields = {"size": HOSTILE, "website": JAVASCRIPT_URL}
    contact.save(update_fields=["name", "custom_fields"])
    # A shop's order system wrote the link straight to the database (the API's URLField refuses it).
    Order.objects.filter(pk=tenant.get("contacts.order").pk).update(tracking_url=JAVASCRIPT_URL)
    note_add(conversation=tenant.get("conversations.conversation"), author=owner.user, text=f"Note {HOSTILE}")
    QuickReply.objects.create(workspace=tenant.workspace, shortcut="evil", text=f"Reply {HOSTILE}")


def _email_conversation(workspace):
    """A customer's mail with a hostile subject and HTML body, through the email connector's own
    parser and sanitiser."""
    from apps.conversations.models import InboundEvent, Message
    from apps.conversations.services import inbound_event_process
    from tests.connectors.email_payloads import inbound_parse, make_email_channel, mime, post

    channel = make_email_channel(workspace)
    # The sender's name stays plain: one with MARKER's "(1)" and RTL mark is not parsed as an
    # address at all (the delivery is kept as failed), which is the email parser's own matter.
    raw = mime(f"Mail {HOSTILE}", subject=f"Subject {HOSTILE}", html=EMAIL_HTML, name="Mailer")
    body, content_type = inbound_parse(raw)
    assert post(channel, body, content_type).status_code == 200
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)
    return Message.objects.filter(channel=channel).latest("id").conversation


def _closed_conversation(tenant: Tenant, owner):
    """A second customer, closed under a hostile category, so the dashboard's labels have one."""
    from apps.analytics.services import events_fold_all
    from apps.connectors.base import InboundMessage
    from apps.conversations.services import inbound_message_apply
    from apps.conversations.services.actions import conversation_close

    workspace = tenant.workspace
    workspace.closing_categories = [MARKER]
    workspace.save(update_fields=["closing_categories"])
    message = inbound_message_apply(
        channel=tenant.get("connectors.channel"),
        inbound=InboundMessage(
            provider_id="wamid.hostile-2",
            sender_id="201009999999",
            sender_name=f"Bob {MARKER}",
            timestamp=timezone.now(),
            kind="text",
            text=HOSTILE,
        ),
    )
    conversation = conversation_close(
        conversation=message.conversation, actor=owner.user, membership=owner, category=MARKER
    )
    events_fold_all()
    return conversation


def signed_in(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client
