"""The webhook as daphne serves it: config/asgi.py routes /webhooks/<uuid>/ past Django's request
handler to `views.webhook_asgi`, which runs the same view on a few threads that keep their
database connection. Driven in-process through the real ASGI application; the threads' rows are
committed, so these tests use a transactional database."""

import asyncio
import json

import pytest
from channels.testing import HttpCommunicator
from django.db import connection

from apps.connectors import selectors, views
from apps.conversations.models import InboundEvent
from config.asgi import application
from tests.conversations.whatsapp import envelope, make_whatsapp_channel, messages_value, signed, text
from tests.factories import make_workspace

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def one_webhook_thread(settings):
    """One thread, so a test knows which connection its webhooks use; closed afterwards, or the
    test database could not be dropped."""
    settings.WEBHOOK_DATABASE_CONNECTIONS = 1
    views._webhook_threads.cache_clear()
    selectors._webhook_channels.clear()
    yield
    threads = views._webhook_threads()
    threads.submit(lambda: connection.close()).result()
    threads.shutdown()
    views._webhook_threads.cache_clear()
    selectors._webhook_channels.clear()


@pytest.fixture
def channel():
    return make_whatsapp_channel(make_workspace(name="Nile Basket", slug="nile"))


def call(method: str, path: str, body: bytes = b"", headers: dict | None = None):
    encoded = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    communicator = HttpCommunicator(application, method, path, body=body, headers=encoded)
    return asyncio.run(communicator.get_response(timeout=10))


def post_signed(channel, body: dict, secret: str | None = None):
    raw, signature = signed(body, *([secret] if secret else []))
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature}
    return call("POST", f"/webhooks/{channel.uuid}/", raw, headers)


def customer_says(words: str, wamid: str) -> dict:
    return envelope(messages_value(text(words, wamid=wamid)))


def header(response, name: bytes) -> bytes | None:
    return dict(response["headers"]).get(name)


def test_a_signed_webhook_is_stored_before_the_200(channel):
    response = post_signed(channel, customer_says("Where is my order?", "wamid.A1"))

    assert response["status"] == 200
    assert response["body"] == b"OK"
    assert header(response, b"Content-Length") == b"2"
    event = InboundEvent.objects.get()
    assert event.channel == channel
    assert event.state == InboundEvent.State.PENDING
    assert json.loads(event.body)["entry"][0]["changes"][0]["value"]["messages"][0]["id"] == "wamid.A1"
    assert event.headers["X-Hub-Signature-256"].startswith("sha256=")


def test_a_bad_signature_is_401_and_nothing_is_stored(channel):
    response = post_signed(channel, customer_says("hi", "wamid.B1"), secret="wrong-secret")

    assert response["status"] == 401
    assert json.loads(response["body"])["code"] == "bad_signature"
    assert not InboundEvent.objects.exists()


def test_an_unknown_or_disabled_channel_is_404(channel):
    channel.enabled = False
    channel.save(update_fields=["enabled"])

    response = post_signed(channel, customer_says("hi", "wamid.C1"))

    assert response["status"] == 404
    assert not InboundEvent.objects.exists()


def test_the_handshake_is_answered_on_the_same_route(channel):
    query = f"hub.mode=subscribe&hub.challenge=12345&hub.verify_token={channel.verify_token}"

    response = call("GET", f"/webhooks/{channel.uuid}/?{query}")

    assert response["status"] == 200
    assert response["body"] == b"12345"


def test_a_body_over_the_channels_limit_is_413_unread(channel):
    headers = {"Content-Type": "application/json", "Content-Length": str(64 * 1024 * 1024)}

    response = call("POST", f"/webhooks/{channel.uuid}/", b"{}", headers)

    assert response["status"] == 413
    assert not InboundEvent.objects.exists()


def test_a_database_that_went_away_answers_503_then_the_next_webhook_is_stored(channel):
    assert post_signed(channel, customer_says("first", "wamid.D1"))["status"] == 200
    backend = views._webhook_threads().submit(lambda: connection.connection.info.backend_pid).result()
    with connection.cursor() as cursor:  # what a PostgreSQL restart does to the thread's connection
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend])

    lost = post_signed(channel, customer_says("second", "wamid.D2"))
    again = post_signed(channel, customer_says("third", "wamid.D3"))

    assert lost["status"] == 503  # the provider retries it
    assert json.loads(lost["body"])["code"] == "unavailable"
    assert again["status"] == 200
    stored = [
        json.loads(event.body)["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
        for event in InboundEvent.objects.order_by("id")
    ]
    assert stored == ["wamid.D1", "wamid.D3"]


def test_the_same_delivery_three_times_at_once_is_stored_three_times_and_applied_once(channel):
    from apps.conversations.models import Message
    from apps.conversations.services import inbound_event_process

    body = customer_says("once", "wamid.E1")

    async def three_at_once():
        raw, signature = signed(body)
        headers = [(b"content-type", b"application/json"), (b"x-hub-signature-256", signature.encode())]
        communicators = [
            HttpCommunicator(application, "POST", f"/webhooks/{channel.uuid}/", body=raw, headers=headers)
            for _ in range(3)
        ]
        return await asyncio.gather(*(c.get_response(timeout=10) for c in communicators))

    responses = asyncio.run(three_at_once())
    for event in InboundEvent.objects.all():
        inbound_event_process(event_id=event.id)

    assert [response["status"] for response in responses] == [200, 200, 200]
    assert Message.objects.filter(provider_id="wamid.E1").count() == 1
