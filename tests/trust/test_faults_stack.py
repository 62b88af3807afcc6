"""Faults, each leaving nothing lost and nothing doubled: a worker killed in the middle of
applying inbound webhooks, Redis restarted under connected operators, PostgreSQL restarted under
incoming webhooks, a provider answering errors, and poison messages that always fail.

A worker killed in the middle of an outbound send: tests/conversations/test_faults.py; in the
middle of a broadcast: tests/broadcasts/test_sending.py
(test_a_sender_killed_mid_broadcast_resumes_with_no_one_skipped_and_no_one_sent_twice). Both
compare the simulator's outbox with the database, as the tests here do.

The Redis and PostgreSQL restarts happen on servers these tests start for themselves
(tests/trust/stack.py); the machine's shared servers are never stopped."""

import json
import os
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone

from apps.contacts.services import contact_resolve
from apps.conversations.models import Conversation, InboundEvent, Message
from apps.conversations.services.messages import INBOUND_MAX_ATTEMPTS
from apps.conversations.tasks import deliver_message
from tests.conftest import _wait_for, client_for
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_member, make_workspace
from tests.trust.stack import (
    Operator,
    PrivatePostgres,
    PrivateRedis,
    Provider,
    kill,
    run_django,
    start_daphne,
    start_worker,
    stop_all,
    whatsapp_text,
)

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def private_env(live_env: dict, name: str, **overrides) -> dict:
    """The suite's environment with this test's own Redis keys and Celery queue."""
    prefix = f"faults-{name}-{os.getpid()}"
    return {**live_env, "REDIS_KEY_PREFIX": prefix, "CELERY_QUEUE": prefix, "LOG_LEVEL": "INFO", **overrides}


def stored_once(wamids) -> bool:
    counts = Counter(Message.objects.filter(provider_id__in=list(wamids)).values_list("provider_id", flat=True))
    return set(counts) == set(wamids) and set(counts.values()) == {1}


def all_processed() -> bool:
    return not InboundEvent.objects.exclude(state=InboundEvent.State.PROCESSED).exists()


# A worker killed while applying inbound webhooks ------------------------------------------------


def test_a_worker_killed_while_applying_webhooks_leaves_every_message_stored_exactly_once(live_env, tmp_path):
    channel = make_whatsapp_channel(make_workspace(slug="inbound-kill"))
    env = private_env(live_env, "inbound", CELERY_VISIBILITY_TIMEOUT="2", INBOUND_DRAINERS="1")
    web = start_daphne(env, tmp_path / "daphne.log")
    first = second = None
    try:
        provider = Provider(f"{web.url}/webhooks/{channel.uuid}/")
        wamids = [provider.send("hello", wa_id=f"2010000{0:05d}")]
        first = start_worker(env, tmp_path / "first.log")
        _wait_for(lambda: Message.objects.count() == 1, 60, "the drainer to start", tmp_path / "first.log")
        # The first customer's conversation is held by another session, so the drainer's next batch
        # (a batch applies in one transaction, in a fraction of a second) stops half way: it is
        # killed holding the batch, claimed and not applied, however fast the machine.
        import psycopg

        with psycopg.connect(**connection.get_connection_params()) as holder:
            holder.execute("SELECT 1 FROM conversations_conversation WHERE channel_id = %s FOR UPDATE", [channel.pk])
            wamids += [provider.send(f"order {n}", wa_id=f"2010000{n % 40:05d}") for n in range(120)]
            assert provider.acknowledged() == set(wamids)
            claimed = InboundEvent.objects.filter(state="pending", claimed_at__isnull=False)
            _wait_for(claimed.exists, 60, "the drainer to claim a batch", tmp_path / "first.log")
            time.sleep(0.5)  # the batch reaches the held conversation
            kill(first)
            holder.rollback()
        assert claimed.exists()

        # Two minutes later a dead drainer's claim is stale; the broker hands its task to the next worker.
        InboundEvent.objects.filter(state="pending").update(claimed_at=F("claimed_at") - timedelta(minutes=3))
        time.sleep(2.5)  # past the broker's visibility timeout
        second = start_worker(env, tmp_path / "second.log")
        _wait_for(all_processed, 60, "the redelivered drainer", tmp_path / "second.log")
    finally:
        stop_all(first, second, web.process)

    assert stored_once(wamids)
    assert Message.objects.count() == 121


# Redis restarted under connected operators -----------------------------------------------------


@pytest.fixture
def redis_server():
    server = PrivateRedis()
    server.start()
    yield server
    server.close()


def test_operators_reconnect_and_catch_up_after_redis_restarts_and_no_webhook_is_lost(
    live_env, redis_server, tmp_path
):
    workspace = make_workspace(slug="redis-restart")
    channel = make_whatsapp_channel(workspace)
    supervisor = make_member(workspace, "supervisor").user
    env = private_env(live_env, "redis", REDIS_URL=redis_server.url, CELERY_VISIBILITY_TIMEOUT="5")
    web = start_daphne(env, tmp_path / "daphne.log")
    worker = start_worker(env, tmp_path / "worker.log")
    operator = None
    try:
        cookie = client_for(supervisor).cookies["sessionid"].value
        operator = Operator(web.ws_url, cookie, web.url, workspace.slug)
        provider = Provider(f"{web.url}/webhooks/{channel.uuid}/")
        before = provider.send("before the restart")
        _wait_for(lambda: "before the restart" in operator.message_texts(), 30, "the live event")

        redis_server.stop()
        during = [provider.send(f"while Redis is down {n}") for n in range(3)]
        redis_server.start()
        after = [provider.send(f"after the restart {n}") for n in range(3)]
        provider.retry_unacknowledged()  # the provider's own retries of what was refused
        assert not provider.unacknowledged

        wamids = [before, *during, *after]
        _wait_for(lambda: stored_once(wamids), 60, "every message", tmp_path / "worker.log")
        expected = {f"while Redis is down {n}" for n in range(3)} | {f"after the restart {n}" for n in range(3)}
        caught_up = lambda: expected <= set(operator.message_texts())  # noqa: E731
        _wait_for(caught_up, 30, f"the operator to catch up (has {operator.message_texts()})")
    finally:
        if operator is not None:
            operator.close()
        stop_all(worker, web.process)

    assert operator.reconnects >= 1
    assert Counter(operator.message_texts()) == Counter(["before the restart", *expected])


# PostgreSQL restarted under incoming webhooks --------------------------------------------------

MAKE_CHANNEL = """
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_workspace
print(make_whatsapp_channel(make_workspace(slug="pg-restart")).uuid)
"""

STORED = """
import json
from collections import Counter
from apps.conversations.models import Message
print(json.dumps(Counter(Message.objects.values_list("provider_id", flat=True))))
"""

# What a drainer had claimed when PostgreSQL went away is taken again once its claim is stale,
# by the drainer beat's minute safety net wakes.
TWO_MINUTES_LATER = """
from datetime import timedelta
from django.db import connection
from django.db.models import F
from apps.conversations.models import InboundEvent
from apps.conversations.tasks import drain_inbound
InboundEvent.objects.filter(state="pending").update(claimed_at=F("claimed_at") - timedelta(minutes=3))
drain_inbound()
"""


@pytest.fixture
def postgres_server(live_env):
    server = PrivatePostgres()
    try:
        server.start()
        server.create(copy_of=live_env["DATABASE_URL"])
        yield server
    finally:
        server.close()


def test_webhooks_answer_503_while_postgresql_is_down_and_nothing_acknowledged_is_lost(
    live_env, postgres_server, tmp_path
):
    env = private_env(live_env, "postgres", DATABASE_URL=postgres_server.url)
    channel_uuid = run_django(env, MAKE_CHANNEL)
    web = start_daphne(env, tmp_path / "daphne.log")
    worker = start_worker(env, tmp_path / "worker.log")

    def stored(wamids) -> bool:
        counts = json.loads(run_django(env, STORED))
        return {wamid: counts.get(wamid) for wamid in wamids} == dict.fromkeys(wamids, 1)

    try:
        provider = Provider(f"{web.url}/webhooks/{channel_uuid}/")
        before = [provider.send(f"before {n}") for n in range(3)]
        assert provider.acknowledged() == set(before)

        postgres_server.stop()
        time.sleep(5)  # past the web process's 5 s memory of the channel
        during = [provider.send(f"while PostgreSQL is down {n}") for n in range(3)]
        statuses_while_down = [status for _, status in provider.log[-3:]]
        postgres_server.restart()
        after = [provider.send(f"after {n}") for n in range(3)]
        provider.retry_unacknowledged()  # Meta retries a 5xx for days
        assert not provider.unacknowledged

        _wait_for(lambda: stored([*during, *after]), 60, "processing to resume", tmp_path / "worker.log")
        run_django(env, TWO_MINUTES_LATER)
        _wait_for(lambda: stored([*before, *during, *after]), 60, "every message", tmp_path / "worker.log")
        everything = json.loads(run_django(env, STORED))
    finally:
        stop_all(worker, web.process)

    assert statuses_while_down == [503, 503, 503]
    assert everything == dict.fromkeys([*before, *during, *after], 1)


# The provider answering errors -----------------------------------------------------------------


def queued_reply(channel, text: str, *, wa_id: str = "201001234567") -> Message:
    contact = contact_resolve(channel=channel, external_id=wa_id, phone=f"+{wa_id}")
    conversation, _ = Conversation.objects.get_or_create(
        workspace=channel.workspace,
        contact=contact,
        channel=channel,
        defaults={"window_expires_at": timezone.now() + timedelta(hours=1)},
    )
    return Message.objects.create(
        workspace=channel.workspace,
        conversation=conversation,
        channel=channel,
        direction="out",
        sender_kind="agent",
        text=text,
        state="queued",
    )


def accepted_texts(simulator) -> Counter:
    outbox = simulator.get("/_simulator/outbox", phone_number_id="1000001")
    return Counter(item["body"].get("text", {}).get("body") for item in outbox if item["http_status"] == 200)


@pytest.fixture
def whatsapp(simulator):
    channel = make_whatsapp_channel(make_workspace(slug="provider-faults"), base_url=simulator.url)
    simulator.register(channel)
    for wa_id in ("201001234567", "201007654321"):
        customer_writes = {"phone_number_id": "1000001", "from": wa_id, "type": "text", "text": "hi"}
        simulator.post("/_simulator/inbound", customer_writes)
    return channel


def test_a_reply_the_provider_refuses_with_500s_is_delivered_later_once(whatsapp, simulator, celery_worker_process):
    fault = {"phone_number_id": "1000001", "code": 131000, "http_status": 500, "count": 2}
    simulator.post("/_simulator/faults", fault)
    message = queued_reply(whatsapp, "Your order left the warehouse")
    deliver_message.delay(message.id)

    _wait_for(lambda: Message.objects.get(pk=message.pk).state == "sent", 30, "the retried send")
    assert Message.objects.get(pk=message.pk).attempts == 3
    assert accepted_texts(simulator)["Your order left the warehouse"] == 1


def test_a_reply_whose_answer_times_out_reaches_the_customer_once(whatsapp, simulator, celery_worker_process):
    # The provider holds the request past the connector's 10 s read timeout, then takes it.
    simulator.post("/_simulator/faults", {"phone_number_id": "1000001", "mode": "timeout", "delay": 11, "count": 1})
    message = queued_reply(whatsapp, "Your refund is on its way")
    deliver_message.delay(message.id)

    _wait_for(lambda: Message.objects.get(pk=message.pk).state in ("sent", "failed"), 40, "the send to settle")
    time.sleep(1.5)  # the provider finishes the request it held
    assert accepted_texts(simulator)["Your refund is on its way"] == 1
    message.refresh_from_db()  # not sent again: failed for a person to check, saying why
    assert (message.state, message.error_code) == ("failed", "no_answer")
    assert "may have reached the customer" in message.error_reason


# Poison ---------------------------------------------------------------------------------------


@pytest.fixture
def refused_by_postgresql():
    """A message id PostgreSQL refuses to store (a CHECK constraint only this test has): a
    delivery that parses, and whose every attempt to apply it fails."""
    poison = f"wamid.poison.{time.time_ns()}"
    # DDL takes no parameters: the id (letters, digits and dots) is written in.
    constraint = (
        f"ALTER TABLE conversations_message ADD CONSTRAINT trust_poison CHECK (provider_id <> '{poison}') NOT VALID"
    )
    with connection.cursor() as cursor:
        cursor.execute(f"{constraint} NOT VALID")
    yield poison
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE conversations_message DROP CONSTRAINT trust_poison")


def test_webhooks_that_cannot_be_applied_are_parked_with_their_error_and_the_rest_flow(
    live_server_process, celery_worker_process, tenants, refused_by_postgresql
):
    channel = make_whatsapp_channel(tenants.a)
    provider = Provider(f"{live_server_process.url}/webhooks/{channel.uuid}/")
    poison, body = whatsapp_text("hello", wamid=refused_by_postgresql)
    provider.post(poison, body)
    unparseable, body = whatsapp_text("hello", wamid="wamid." + "X" * 300)  # longer than any provider's
    provider.post(unparseable, body)
    good = []
    for attempt in range(INBOUND_MAX_ATTEMPTS):
        good.append(provider.send(f"fine {attempt}"))
        _wait_for(lambda: stored_once(good), 30, "the messages behind it")
        # A delivery that failed is tried again once its claim is stale (2 minutes later).
        InboundEvent.objects.filter(state="pending").update(claimed_at=F("claimed_at") - timedelta(minutes=3))
    good.append(provider.send("one more"))
    _wait_for(lambda: InboundEvent.objects.filter(state="failed").count() == 2, 30, "the deliveries to be parked")
    _wait_for(lambda: stored_once(good), 30, "the last message")

    refused, malformed = InboundEvent.objects.filter(state="failed").order_by("id")
    assert refused.attempts == INBOUND_MAX_ATTEMPTS and "trust_poison" in refused.error
    assert malformed.attempts == 1 and "at most 191 fit" in malformed.error
    assert not Message.objects.filter(provider_id__in=[poison, unparseable]).exists()
    assert InboundEvent.objects.filter(state="processed").count() == len(good)
    page = client_for(tenants.supervisor).get("/admin/conversations/inboundevent/?state__exact=failed")
    assert page.status_code == 200
    assert "trust_poison" in page.content.decode() and "at most 191 fit" in page.content.decode()


def test_a_reply_that_always_fails_is_parked_with_its_reason_and_the_replies_behind_it_leave(
    whatsapp, simulator, tenants, celery_worker_process
):
    # The provider refuses this number for good (131026: not a WhatsApp user).
    simulator.post("/_simulator/faults", {"phone_number_id": "1000001", "code": 131026, "count": 1})
    poison = queued_reply(whatsapp, "Nobody will read this")
    deliver_message.delay(poison.id)
    behind = [queued_reply(whatsapp, f"Update {n}", wa_id="201007654321") for n in range(3)]
    for message in behind:
        deliver_message.delay(message.id)

    _wait_for(lambda: Message.objects.get(pk=poison.pk).state == "failed", 30, "the poison to be parked")
    _wait_for(lambda: all(m.state == "sent" for m in Message.objects.filter(pk__in=[m.pk for m in behind])), 30, "")
    poison.refresh_from_db()
    assert poison.error_code == "131026" and poison.error_reason
    assert accepted_texts(simulator) == Counter({f"Update {n}": 1 for n in range(3)})
    make_member(whatsapp.workspace, "supervisor", tenants.supervisor)
    page = client_for(tenants.supervisor).get(f"/admin/conversations/message/{poison.pk}/change/")
    assert poison.error_reason in page.content.decode()
