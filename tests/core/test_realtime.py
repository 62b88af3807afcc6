"""The realtime path end to end: a real websocket client on a live daphne, the Redis channel
layer, and events published by services, including from a Celery task in a real worker."""

import json
from collections import deque
from contextlib import contextmanager
from datetime import timedelta
from weakref import WeakKeyDictionary

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from apps.core import realtime
from apps.core.events import UnknownEvent, build_event
from apps.workspaces import services
from apps.workspaces.models import AgentStatus
from apps.workspaces.tasks import sweep_absent_agents
from tests.conftest import client_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def open_socket(live, user, workspace_slug=None):
    cookie = client_for(user).cookies[settings.SESSION_COOKIE_NAME].value
    query = f"?workspace={workspace_slug}" if workspace_slug else ""
    return connect(
        f"{live.ws_url}/ws/{query}",
        additional_headers={"Cookie": f"sessionid={cookie}", "Origin": live.url},
        open_timeout=10,
    )


# The events of a batched frame ({"type": "events", ...}) after the one `receive_type` returned:
# the next call looks there first (a message's "sent" and "read" can come in one frame).
_unread: WeakKeyDictionary = WeakKeyDictionary()


def receive(socket, timeout=10):
    if _unread.get(socket):
        return _unread[socket].popleft()
    return json.loads(socket.recv(timeout=timeout))


def receive_type(socket, event_type, timeout=10):
    while True:
        frame = receive(socket, timeout)
        events = deque(frame["events"] if frame["type"] == "events" else [frame])
        while events:
            event = events.popleft()
            if event["type"] == event_type:
                _unread.setdefault(socket, deque()).extendleft(reversed(events))
                return event


def assert_silent(socket, seconds=1.0):
    with pytest.raises(TimeoutError):
        socket.recv(timeout=seconds)


def test_anonymous_socket_is_refused(live_server_process):
    with pytest.raises(InvalidStatus):
        connect(
            f"{live_server_process.ws_url}/ws/",
            additional_headers={"Origin": live_server_process.url},
        )


def test_socket_from_a_foreign_origin_is_refused(live_server_process, tenants):
    cookie = client_for(tenants.teammate).cookies[settings.SESSION_COOKIE_NAME].value
    with pytest.raises(InvalidStatus):
        connect(
            f"{live_server_process.ws_url}/ws/",
            additional_headers={"Cookie": f"sessionid={cookie}", "Origin": "https://evil.example"},
        )


def test_member_socket_says_hello_with_its_workspace(live_server_process, tenants):
    with open_socket(live_server_process, tenants.teammate) as socket:
        hello = receive(socket)

    assert hello["type"] == "hello"
    assert hello["workspace"] == {"id": tenants.a.id, "slug": "alpha"}
    assert hello["role"] == "agent"


def test_outsider_cannot_join_another_workspaces_group(live_server_process, tenants):
    with pytest.raises(InvalidStatus):
        open_socket(live_server_process, tenants.outsider, workspace_slug="alpha")


def test_event_published_after_commit_reaches_only_its_workspace(live_server_process, tenants):
    member = tenants.teammate.memberships.get()
    with (
        open_socket(live_server_process, tenants.supervisor) as inside,
        open_socket(live_server_process, tenants.outsider) as outside,
    ):
        receive_type(inside, "hello")
        receive_type(outside, "hello")

        with transaction.atomic():
            services.agent_status_set(membership=member, status="online")
            assert_silent(inside, 0.5)  # nothing leaves before the commit

        event = receive_type(inside, "agent.status")
        assert event["payload"]["membership_id"] == member.id
        assert event["payload"]["status"] == "online"
        assert_silent(outside)


def test_event_from_a_celery_task_in_a_real_worker_reaches_the_socket(
    live_server_process, celery_worker_process, tenants
):
    member = tenants.teammate.memberships.get()
    services.agent_status_set(membership=member, status="online")
    AgentStatus.objects.filter(membership=member).update(last_seen_at=timezone.now() - timedelta(minutes=10))
    with open_socket(live_server_process, tenants.supervisor) as socket:
        receive_type(socket, "hello")

        sweep_absent_agents.delay()

        event = receive_type(socket, "agent.status", timeout=30)
    assert event["payload"] == {
        "user_id": tenants.teammate.id,
        "membership_id": member.id,
        "status": "offline",
        "capacity": 5,
        "reason": "no_heartbeat",
    }
    assert AgentStatus.objects.get(membership=member).status == "offline"


def test_reconnecting_socket_catches_up_on_missed_events(live_server_process, tenants):
    member = tenants.teammate.memberships.get()
    with open_socket(live_server_process, tenants.supervisor) as socket:
        last_seen = receive_type(socket, "hello")["last_event_id"]

    services.agent_status_set(membership=member, status="away")  # while disconnected
    services.agent_status_set(membership=member, status="online")

    with open_socket(live_server_process, tenants.supervisor) as socket:
        receive_type(socket, "hello")
        socket.send(json.dumps({"type": "resync", "since": last_seen}))
        missed = receive_type(socket, "resync")["events"]

    assert [e["payload"]["status"] for e in missed] == ["away", "online"]
    assert missed[0]["id"] < missed[1]["id"] or len(missed[0]["id"]) < len(missed[1]["id"])


@contextmanager
def author_and_colleague(live, tenants):
    """Two sockets of workspace A past their hello, and the author's socket id."""
    with open_socket(live, tenants.supervisor) as author, open_socket(live, tenants.owner) as colleague:
        socket_id = receive_type(author, "hello")["socket_id"]
        receive_type(colleague, "hello")
        yield author, colleague, socket_id


def test_authors_own_socket_gets_no_echo(live_server_process, tenants):
    with author_and_colleague(live_server_process, tenants) as (author, colleague, socket_id):
        event = build_event("team.updated", team_id=tenants.team_a.id, name="Orders")
        realtime.publish(tenants.a.id, event, origin=socket_id)

        assert receive_type(colleague, "team.updated")["origin"] == socket_id
        assert_silent(author)


def test_a_batch_of_events_arrives_in_one_frame_in_order_without_the_authors_own(live_server_process, tenants):
    with author_and_colleague(live_server_process, tenants) as (author, colleague, socket_id):
        with realtime.batched():  # as the inbound drainer publishes a batch of deliveries
            for name in ("One", "Two"):
                realtime.publish(tenants.a.id, build_event("team.updated", team_id=tenants.team_a.id, name=name))
            realtime.publish(
                tenants.a.id, build_event("team.updated", team_id=tenants.team_a.id, name="Mine"), origin=socket_id
            )

        frame = receive(colleague)
        assert frame["type"] == "events"
        assert [event["payload"]["name"] for event in frame["events"]] == ["One", "Two", "Mine"]
        ids = [event["id"] for event in frame["events"]]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))  # stream order
        frame = receive(author)
        assert [event["payload"]["name"] for event in frame["events"]] == ["One", "Two"]


def test_every_socket_of_a_workspace_gets_a_burst_once_and_in_order(live_server_process, tenants):
    """A web process reads the workspace's stream once for all its sockets (apps/core/hub.py) and
    hands each what it read: nothing skipped, nothing twice, in the stream's order."""
    names = [f"Team {n}" for n in range(60)]
    with author_and_colleague(live_server_process, tenants) as (one, other, _):
        for name in names:
            realtime.publish(tenants.a.id, build_event("team.updated", team_id=tenants.team_a.id, name=name))

        for socket in (one, other):
            seen = []
            while len(seen) < len(names):
                frame = receive(socket)
                events = frame["events"] if frame["type"] == "events" else [frame]
                seen += [event["payload"]["name"] for event in events if event["type"] == "team.updated"]
            assert seen == names
            assert_silent(socket, 0.5)


def test_unknown_socket_message_gets_an_error_not_a_disconnect(live_server_process, tenants):
    with open_socket(live_server_process, tenants.teammate) as socket:
        receive_type(socket, "hello")
        socket.send(json.dumps({"type": "launch-missiles"}))
        assert receive(socket) == {"type": "error", "code": "unknown_message"}
        socket.send(json.dumps({"type": "resync", "since": "'; DROP"}))
        assert receive(socket) == {"type": "error", "code": "invalid_since"}
        socket.send(json.dumps({"type": "ping"}))
        assert receive(socket) == {"type": "pong"}


def test_event_schema_refuses_unknown_types_and_fields():
    with pytest.raises(UnknownEvent):
        build_event("no.such.event")
    with pytest.raises(UnknownEvent):
        build_event("team.updated", team_id=1)


def test_ping_from_an_open_tab_keeps_the_agent_present(live_server_process, tenants):
    member = tenants.teammate.memberships.get()
    long_ago = timezone.now() - timedelta(minutes=10)
    AgentStatus.objects.filter(membership=member).update(status="online", last_seen_at=long_ago)
    with open_socket(live_server_process, tenants.teammate) as socket:
        receive_type(socket, "hello")
        socket.send(json.dumps({"type": "ping"}))
        receive_type(socket, "pong")

    assert AgentStatus.objects.get(membership=member).last_seen_at > long_ago
    assert sweep_absent_agents() == 0
