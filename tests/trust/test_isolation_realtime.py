"""The websocket half of the isolation matrix (tests/trust/test_isolation_matrix.py names every
route here): on a live daphne with the Redis channel layer, workspace B's owner never hears an
event of workspace A's, cannot join A's stream, cannot replay it, and cannot reach A's
conversations through the socket; a web chat visitor's token of A's channel is no key to B's."""

import json

import pytest
from django.conf import settings
from django.core import signing
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from apps.connectors.models import Channel
from apps.connectors.services import VISITOR_SALT
from apps.contacts.services import contact_resolve
from apps.conversations.models import Conversation
from apps.core import realtime
from apps.core.events import build_event
from tests.conftest import client_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SHOP = "http://shop.test"
SECRET = "alpha7secret"


def open_socket(live, user, workspace_slug=None):
    cookie = client_for(user).cookies[settings.SESSION_COOKIE_NAME].value
    query = f"?workspace={workspace_slug}" if workspace_slug else ""
    return connect(
        f"{live.ws_url}/ws/{query}",
        additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}", "Origin": live.url},
        open_timeout=10,
    )


def receive(socket, timeout=5.0) -> dict:
    return json.loads(socket.recv(timeout=timeout))


def everything_heard(socket, seconds=1.0) -> list[dict]:
    heard = []
    while True:
        try:
            frame = receive(socket, seconds)
        except TimeoutError:
            return heard
        heard.extend(frame["events"] if frame["type"] == "events" else [frame])


def publish_for(workspace, marker=SECRET) -> str:
    return realtime.publish(workspace.id, build_event("team.updated", team_id=1, name=marker))


@pytest.fixture
def sockets(live_server_process, tenants):
    """A's supervisor and B's owner connected, each past the hello."""
    with (
        open_socket(live_server_process, tenants.supervisor) as a_socket,
        open_socket(live_server_process, tenants.outsider) as b_socket,
    ):
        assert receive(a_socket)["workspace"]["slug"] == "alpha"
        assert receive(b_socket)["workspace"]["slug"] == "beta"
        yield a_socket, b_socket


def test_bs_owner_cannot_open_as_socket(live_server_process, tenants):
    with pytest.raises(InvalidStatus) as refused:
        open_socket(live_server_process, tenants.outsider, workspace_slug="alpha")
    assert refused.value.response.status_code == 403


def test_an_event_published_for_a_reaches_as_socket_and_never_bs(sockets, tenants):
    a_socket, b_socket = sockets

    publish_for(tenants.a)

    assert receive(a_socket)["payload"]["name"] == SECRET
    assert SECRET not in json.dumps(everything_heard(b_socket))


def test_resync_from_bs_socket_replays_bs_stream_only(sockets, tenants):
    _, b_socket = sockets
    publish_for(tenants.a)
    publish_for(tenants.b, marker="beta7secret")

    b_socket.send(json.dumps({"type": "resync", "since": "0-0"}))
    replay = receive(b_socket)
    while replay["type"] != "resync":  # B's own live event may arrive before the replay: never A's
        assert replay["payload"]["name"] == "beta7secret"
        replay = receive(b_socket)

    assert replay["type"] == "resync"
    assert {event["workspace_id"] for event in replay["events"]} == {tenants.b.id}
    assert SECRET not in json.dumps(replay)


def test_typing_on_as_conversation_from_bs_socket_reaches_nobody(sockets, tenants):
    a_socket, b_socket = sockets
    channel = Channel.objects.create(workspace=tenants.a, kind="webchat", name="Shop")
    contact = contact_resolve(channel=channel, external_id="visitor-1", name=SECRET)
    conversation = Conversation.objects.create(workspace=tenants.a, contact=contact, channel=channel)

    b_socket.send(json.dumps({"type": "typing", "conversation_id": conversation.id}))

    assert everything_heard(a_socket) == []
    assert SECRET not in json.dumps(everything_heard(b_socket, 0.3))


def test_a_notification_for_as_owner_reaches_only_their_socket(live_server_process, tenants):
    from django.db import transaction

    with (
        open_socket(live_server_process, tenants.owner) as a_socket,
        open_socket(live_server_process, tenants.outsider) as b_socket,
    ):
        receive(a_socket), receive(b_socket)
        with transaction.atomic():
            realtime.notify_user_on_commit(tenants.owner.id, build_event("team.updated", team_id=1, name=SECRET))

        assert receive(a_socket)["payload"]["name"] == SECRET
        assert SECRET not in json.dumps(everything_heard(b_socket))


def test_a_visitor_token_of_a_does_not_join_bs_widget(live_server_process, tenants):
    chat_a = Channel.objects.create(
        workspace=tenants.a, kind="webchat", name="A", settings={"allowed_origins": [SHOP]}
    )
    chat_b = Channel.objects.create(
        workspace=tenants.b, kind="webchat", name="B", settings={"allowed_origins": [SHOP]}
    )

    def join(channel, token=""):
        url = f"{live_server_process.ws_url}/ws/widget/{channel.uuid}/"
        with connect(url, additional_headers={"Origin": SHOP}, open_timeout=10) as socket:
            socket.send(json.dumps({"type": "join", "token": token}))
            joined = receive(socket, 10)
        return signing.loads(joined["token"], salt=VISITOR_SALT)["v"], joined

    visitor_of_a, joined_a = join(chat_a)
    visitor_on_b, joined_b = join(chat_b, token=joined_a["token"])

    assert visitor_on_b != visitor_of_a
    assert joined_b["history"] == []
