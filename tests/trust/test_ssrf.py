"""The outbound-request guard (apps/core/netguard.py): every URL a member configures or a payload
names is refused when it leads to loopback, a private network or the cloud's metadata address, by
name or after a redirect, unless OUTBOUND_ALLOWED_NETWORKS lets that network through. The suite
allows loopback (its simulator is on 127.0.0.1); each test here takes that away to see the refusal.
"""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.connectors.base import ErrorClass, OutboundMessage, ProviderError
from apps.connectors.models import Channel, WebhookDelivery, WebhookSubscription
from apps.connectors.registry import connector_for
from apps.connectors.services import webhook_deliver
from apps.contacts.models import Contact
from apps.contacts.selectors import orders_for_contact
from apps.core import netguard
from apps.workflows.definition import workflow_import
from tests.conftest import token_client
from tests.factories import make_workspace
from tests.workflows.test_engine import _http_bot, last_bot, say

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
METADATA = "http://169.254.169.254/latest/meta-data/"
REFUSED_URLS = [
    ("http://127.0.0.1:{port}/", "loopback"),
    ("http://10.20.30.40:{port}/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://localhost:{port}/", "localhost resolves to"),
]


class _Host(BaseHTTPRequestHandler):
    """A service on 127.0.0.1 that plays whatever Parley calls: a receiver, an order system, a
    file host, Telegram's getFile and Meta's media lookup."""

    seen: list = []

    def do_GET(self):
        _Host.seen.append(("GET", self.path))
        path, query = urlsplit(self.path).path, parse_qs(urlsplit(self.path).query)
        if path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path.endswith(".png"):
            self._answer(PNG, "image/png")
        elif path.startswith("/v21.0/"):  # WhatsApp: a media id's short-lived URL
            self._json({"url": f"{self._base()}/media/photo.png", "mime_type": "image/png", "file_size": len(PNG)})
        else:
            self._json({"orders": [{"external_id": "2002"}], "status": "shipped"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        _Host.seen.append(("POST", self.path, self.rfile.read(length)))
        if self.path.endswith("/getFile"):
            self._json({"ok": True, "result": {"file_path": "photos/file_1.png", "file_size": len(PNG)}})
        else:
            self._json({"ok": True})

    def _base(self) -> str:
        return f"http://{self.headers['Host']}"

    def _json(self, body):
        self._answer(json.dumps(body).encode(), "application/json")

    def _answer(self, body: bytes, content_type: str):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def host():
    """The local service's base URL, http://127.0.0.1:<port>."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Host)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Host.seen = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def production(settings):
    """Production's default: no network is let through."""
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    return settings


def port_of(url: str) -> int:
    return urlsplit(url).port


# The guard itself ------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "reason"), REFUSED_URLS)
def test_a_request_to_loopback_private_metadata_or_a_name_for_loopback_is_refused(host, production, url, reason):
    with pytest.raises(netguard.OutboundBlocked) as refused:
        netguard.get(url.format(port=port_of(host)), timeout=2)

    assert reason in str(refused.value) and "OUTBOUND_ALLOWED_NETWORKS" in str(refused.value)
    assert _Host.seen == []


@pytest.mark.parametrize(
    "address",
    ["::1", "::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe", "100.64.0.1", "224.0.0.1", "0.0.0.0", "240.0.0.1", "fc00::1"],  # noqa: S104
)
def test_ipv6_forms_of_private_addresses_and_other_non_public_ranges_are_refused(production, address):
    assert netguard.url_problem(f"http://[{address}]/" if ":" in address else f"http://{address}/")


def test_a_public_address_passes_the_check(production):
    assert netguard.url_problem("https://93.184.215.14/orders") == ""


def test_an_allowed_network_lets_loopback_through_by_address_and_by_name(host, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]

    by_address = netguard.get(f"{host}/orders", timeout=2)
    by_name = netguard.get(f"http://localhost:{port_of(host)}/orders", timeout=2)

    assert by_address.status_code == by_name.status_code == 200 and len(_Host.seen) == 2


def test_a_redirect_to_a_network_not_allowed_is_refused(host, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    elsewhere = f"http://127.0.0.2:{port_of(host)}/orders"  # loopback too, but not allowed

    with pytest.raises(netguard.OutboundBlocked, match=r"127\.0\.0\.2, a loopback address"):
        netguard.get(f"{host}/redirect?to={elsewhere}", follow_redirects=True, timeout=2)

    assert _Host.seen == [("GET", f"/redirect?to={elsewhere}")]


def test_the_connection_goes_to_the_address_checked_not_to_a_second_lookup(host, settings, monkeypatch):
    """DNS rebinding: a name answers an allowed address for the check, then a forbidden one. Parley
    looks it up once per connection and connects to what it checked."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    real_lookup, answers = socket.getaddrinfo, iter(["127.0.0.1", "127.0.0.2", "127.0.0.2"])
    lookups = []

    def rebinding(name, port, *args, **kwargs):
        if name != "rebind.test":
            return real_lookup(name, port, *args, **kwargs)
        lookups.append(name)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)

    response = netguard.get(f"http://rebind.test:{port_of(host)}/orders", timeout=2)

    assert response.status_code == 200 and lookups == ["rebind.test"]


# Workflow HTTP and notify steps ----------------------------------------------------------------


@pytest.fixture
def web_chat():
    return Channel.objects.create(workspace=make_workspace(slug="guarded"), kind="webchat", name="Shop chat")


def test_a_workflow_http_step_to_a_private_address_takes_its_failure_branch_naming_why(web_chat, host, production):
    workflow_import(workspace=web_chat.workspace, definition=_http_bot(host))

    conversation = say(web_chat, "where is my order")

    assert "loopback address" in last_bot(conversation).text
    assert last_bot(conversation).text.startswith("Our order system is down (OutboundBlocked: 127.0.0.1")
    assert _Host.seen == []


def test_a_workflow_http_step_to_an_allowed_network_is_called(web_chat, host):
    workflow_import(workspace=web_chat.workspace, definition=_http_bot(host))

    conversation = say(web_chat, "where is my order")

    assert last_bot(conversation).text.startswith("Your order is shipped")


def test_a_notify_webhook_step_to_the_metadata_address_is_refused(production):
    from apps.workflows.services import _call

    answer = _call({"kind": "notify", "via": "webhook", "url": METADATA, "text": "help", "data": {}}, 2.0)

    assert answer["ok"] is False and "169.254.169.254, a link-local address" in answer["error"]


# Outgoing webhooks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "reason"), REFUSED_URLS)
def test_a_webhook_subscription_to_a_private_address_is_refused_by_the_api(tenants, host, production, url, reason):
    response = token_client(tenants.token_a).post(
        "/api/v1/webhooks/", {"url": url.format(port=port_of(host)), "events": ["order.updated"]}, "application/json"
    )

    assert response.status_code == 400, response.content
    assert reason in response.json()["fields"]["url"][0]
    assert not WebhookSubscription.objects.exists()


def test_a_webhook_subscription_to_an_allowed_network_is_accepted(tenants, host):
    response = token_client(tenants.token_a).post(
        "/api/v1/webhooks/", {"url": f"{host}/hooks", "events": ["order.updated"]}, "application/json"
    )

    assert response.status_code == 201, response.content


def test_a_webhook_subscription_form_names_the_private_address(tenants, production):
    subscription = WebhookSubscription(workspace=tenants.a, url=METADATA, events=["order.updated"])

    with pytest.raises(ValidationError) as invalid:
        subscription.full_clean()

    assert "link-local" in invalid.value.message_dict["url"][0]


def _delivery(workspace, url) -> WebhookDelivery:
    subscription = WebhookSubscription.objects.create(workspace=workspace, url=url, events=["order.updated"])
    return WebhookDelivery.objects.create(
        workspace=workspace,
        subscription=subscription,
        event="order.updated",
        payload={"external_id": "1001"},
        next_attempt_at=timezone.now(),
    )


def test_a_delivery_to_an_address_that_became_private_is_not_sent_and_says_why(tenants, host, production):
    delivery = _delivery(tenants.a, f"http://localhost:{port_of(host)}/hooks")  # saved before the rule

    webhook_deliver(delivery_id=delivery.id)

    delivery.refresh_from_db()
    assert delivery.state == "pending" and delivery.last_status_code is None
    assert "OutboundBlocked: localhost resolves to" in delivery.last_error and _Host.seen == []


def test_a_delivery_to_an_allowed_network_is_sent(tenants, host):
    delivery = _delivery(tenants.a, f"{host}/hooks")

    webhook_deliver(delivery_id=delivery.id)

    delivery.refresh_from_db()
    assert delivery.state == "delivered" and _Host.seen[0][:2] == ("POST", "/hooks")


# The order lookup ------------------------------------------------------------------------------


def test_an_order_lookup_url_on_a_private_address_is_refused_with_a_notice(tenants, host, production):
    tenants.a.order_lookup_url = f"{host}/orders?customer={{external_id}}"
    tenants.a.save(update_fields=["order_lookup_url"])
    contact = Contact.objects.create(workspace=tenants.a, name="Amira", external_id="C7")

    answer = orders_for_contact(contact=contact)

    assert answer["source"] == "pushed" and "refused" in answer["notice"] and "loopback" in answer["notice"]
    assert _Host.seen == []


def test_an_order_lookup_url_on_an_allowed_network_is_asked_live(tenants, host):
    tenants.a.order_lookup_url = f"{host}/orders?customer={{external_id}}"
    tenants.a.save(update_fields=["order_lookup_url"])
    contact = Contact.objects.create(workspace=tenants.a, name="Amira", external_id="C7")

    assert orders_for_contact(contact=contact)["source"] == "live"


def test_the_workspace_form_refuses_an_order_lookup_url_on_the_metadata_address(tenants, production):
    tenants.a.order_lookup_url = "http://169.254.169.254/orders?customer={external_id}"

    with pytest.raises(ValidationError) as invalid:
        tenants.a.full_clean()

    assert "link-local" in invalid.value.message_dict["order_lookup_url"][0]


# The custom channel ------------------------------------------------------------------------------


def _custom(url: str, **settings) -> Channel:
    return Channel(
        workspace=make_workspace(slug="custom-app"), kind="custom", settings={"outbound_url": url, **settings}
    )


def test_a_custom_channels_outbound_url_on_a_private_address_is_flagged_and_never_called(host, production):
    channel = _custom(f"http://localhost:{port_of(host)}/outbound")
    message = OutboundMessage(recipient_id="user-1", kind="text", text="Hello")

    with pytest.raises(ProviderError) as on_save:
        connector_for(channel).activate(channel)
    with pytest.raises(ProviderError) as on_send:
        connector_for(channel).send(channel, message)

    assert (on_save.value.error_class, on_save.value.code) == (ErrorClass.CREDENTIALS, "private_url")
    assert "localhost resolves to 127.0.0.1" in str(on_send.value) and _Host.seen == []


def test_a_custom_channels_outbound_url_on_an_allowed_network_is_called(host):
    channel = _custom(f"{host}/outbound")

    connector_for(channel).send(channel, OutboundMessage(recipient_id="user-1", kind="text", text="Hello"))

    assert _Host.seen[0][:2] == ("POST", "/outbound")


# Media downloads a payload points at -------------------------------------------------------------


def _media_channel(kind: str, host: str) -> tuple[Channel, dict]:
    """A channel of `kind` whose provider is the local host, and the media reference a customer's
    message would carry."""
    workspace = make_workspace(slug=f"media-{kind}")
    provider = {"base_url": host}
    if kind == "telegram":
        channel = Channel(workspace=workspace, kind=kind, settings=provider, credentials={"bot_token": "1:x"})
        return channel, {"id": "file-1"}
    if kind == "whatsapp":
        channel = Channel(workspace=workspace, kind=kind, settings=provider, credentials={"access_token": "t"})
        return channel, {"id": "m-1"}
    return Channel(workspace=workspace, kind=kind, settings={}, credentials={}), {"id": f"{host}/cdn/photo.png"}


@pytest.mark.parametrize("kind", ["messenger", "telegram", "whatsapp", "custom"])
def test_a_customers_file_on_a_private_address_is_not_downloaded(host, production, kind):
    channel, media = _media_channel(kind, host)

    with pytest.raises(ProviderError) as refused:
        connector_for(channel).fetch_media(channel, media, max_bytes=1024)

    assert (refused.value.error_class, refused.value.code) == (ErrorClass.FATAL, "private_url")
    assert "127.0.0.1, a loopback address" in str(refused.value)
    assert not [call for call in _Host.seen if call[1].endswith(".png")]


@pytest.mark.parametrize("kind", ["messenger", "telegram", "whatsapp", "custom"])
def test_a_customers_file_on_an_allowed_network_is_downloaded(host, kind):
    channel, media = _media_channel(kind, host)

    assert connector_for(channel).fetch_media(channel, media, max_bytes=1024).content == PNG


def test_a_messenger_file_redirected_to_the_metadata_address_is_refused(host, production, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    channel, _ = _media_channel("messenger", host)

    with pytest.raises(ProviderError, match=r"169\.254\.169\.254, a link-local address"):
        connector_for(channel).fetch_media(channel, {"id": f"{host}/redirect?to={METADATA}"}, max_bytes=1024)


def test_an_email_attachment_by_url_on_a_private_address_is_not_fetched(host, production):
    """A workflow's message step may name a file by URL; the email channel downloads it to attach
    it, so the metadata service's answer would be mailed to the customer."""
    from apps.connectors.providers.email import EmailConnector

    with pytest.raises(ProviderError) as refused:
        EmailConnector()._attachment({"url": METADATA, "filename": "catalogue.pdf"})

    assert (refused.value.error_class, refused.value.code) == (ErrorClass.FATAL, "private_url")


def test_an_email_attachment_by_url_on_an_allowed_network_is_fetched(host):
    from apps.connectors.providers.email import EmailConnector

    assert EmailConnector()._attachment({"url": f"{host}/catalogue.png"}).content == PNG
