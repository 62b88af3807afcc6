"""The inbox's live parts over a real websocket: the typing hint reaches colleagues on the same
workspace (not the typist, not another workspace), and a notification reaches only its person."""

import json

import pytest

from apps.contacts.services import contact_resolve
from apps.conversations.models import Conversation
from apps.workspaces.models import Membership
from tests.conftest import client_for
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.core.test_realtime import assert_silent, open_socket, receive_type

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def conversation(tenants):
    channel = make_whatsapp_channel(tenants.a)
    contact = contact_resolve(channel=channel, external_id="201001234567", name="Amira")
    return Conversation.objects.create(workspace=tenants.a, contact=contact, channel=channel)


def test_typing_reaches_colleagues_but_not_the_typist_nor_another_workspace(
    live_server_process, tenants, conversation
):
    with (
        open_socket(live_server_process, tenants.teammate) as typist,
        open_socket(live_server_process, tenants.supervisor) as colleague,
        open_socket(live_server_process, tenants.outsider) as outsider,
    ):
        for socket in (typist, colleague, outsider):
            receive_type(socket, "hello")
        typist.send(json.dumps({"type": "typing", "conversation_id": conversation.id}))

        hint = receive_type(colleague, "conversation.typing")
        assert hint["payload"]["conversation_id"] == conversation.id
        assert hint["payload"]["user_id"] == tenants.teammate.id
        assert_silent(typist)
        assert_silent(outsider)

        # Naming another workspace's conversation announces nothing anywhere.
        outsider.send(json.dumps({"type": "typing", "conversation_id": conversation.id}))
        assert_silent(colleague)


def test_an_assignment_notifies_only_the_assignee(live_server_process, tenants, conversation):
    with (
        open_socket(live_server_process, tenants.teammate) as assignee,
        open_socket(live_server_process, tenants.owner) as bystander,
    ):
        receive_type(assignee, "hello")
        receive_type(bystander, "hello")
        response = client_for(tenants.supervisor).post(
            f"/api/v1/conversations/{conversation.id}/assign/",
            {"assignee": Membership.objects.get(user=tenants.teammate).id},
            content_type="application/json",
        )
        assert response.status_code == 200

        notification = receive_type(assignee, "notification.created")["payload"]["notification"]
        assert (notification["kind"], notification["conversation_id"]) == ("assigned", conversation.id)
        receive_type(bystander, "conversation.updated")
        with pytest.raises(TimeoutError):
            receive_type(bystander, "notification.created", timeout=1)
