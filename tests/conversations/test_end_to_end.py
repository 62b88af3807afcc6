"""A customer's WhatsApp message and an operator's reply, through every real part: the channel
simulator signs and posts the webhook to a live daphne, a real Celery worker processes it, the
operator's websocket hears of it, the reply goes out through the worker to the simulator, and
the provider's delivery status comes back to the operator."""

import json

import pytest

from apps.conversations.models import Conversation, Message
from tests.conftest import client_for
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.core.test_realtime import open_socket, receive_type
from tests.factories import make_member, make_workspace

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_customer_message_reaches_the_operator_and_the_reply_is_delivered(
    live_server_process, celery_worker_process, simulator
):
    workspace = make_workspace(slug="e2e")
    channel = make_whatsapp_channel(workspace, base_url=simulator.url)
    simulator.register(channel, webhook_url=f"{live_server_process.url}/webhooks/{channel.uuid}/")
    operator = make_member(workspace).user

    with open_socket(live_server_process, operator) as socket:
        receive_type(socket, "hello")
        simulator.post(
            "/_simulator/inbound",
            {
                "phone_number_id": "1000001",
                "from": "201001234567",
                "name": "Amira",
                "type": "text",
                "text": "Where is my order?",
                "wait": True,
            },
        )
        created = receive_type(socket, "message.created", timeout=30)
        assert created["payload"]["message"]["text"] == "Where is my order?"

        conversation = Conversation.objects.get()
        response = client_for(operator).post(
            f"/api/v1/conversations/{conversation.id}/messages/",
            {"text": "It ships today"},
            content_type="application/json",
        )
        assert response.status_code == 201, response.content

        delivered = None
        while delivered is None:
            event = receive_type(socket, "message.status", timeout=30)
            if event["payload"]["state"] == "delivered":
                delivered = event

    reply = Message.objects.get(direction="out")
    assert reply.state == "delivered"
    outbox = simulator.get("/_simulator/outbox", phone_number_id="1000001")
    assert [item["body"]["text"]["body"] for item in outbox] == ["It ships today"]
    assert json.dumps(delivered)  # the event is plain JSON for the browser
