"""A worker killed with SIGKILL in the middle of a send: the message is never silently dropped
and never sent twice. The broker hands the unacknowledged task to the next worker, which finds
the message still `sending` and fails it as `interrupted` for a person to check."""

import os
import signal
import time
from datetime import timedelta

import pytest
from celery import Celery
from django.conf import settings
from django.utils import timezone

from apps.contacts.services import contact_resolve
from apps.conversations.models import Conversation, Message
from tests.conftest import BIN, _spawn, _stop, _wait_for
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_workspace

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_a_worker_killed_mid_send_leaves_the_message_for_review_sent_once(live_env, simulator, tmp_path):
    workspace = make_workspace(slug="faults")
    channel = make_whatsapp_channel(workspace, base_url=simulator.url)
    simulator.register(channel)
    simulator.post(
        "/_simulator/inbound", {"phone_number_id": "1000001", "from": "201001234567", "type": "text", "text": "hi"}
    )
    contact = contact_resolve(channel=channel, external_id="201001234567", phone="+201001234567")
    conversation = Conversation.objects.create(
        workspace=workspace, contact=contact, channel=channel, window_expires_at=timezone.now() + timedelta(hours=1)
    )
    message = Message.objects.create(
        workspace=workspace,
        conversation=conversation,
        channel=channel,
        direction="out",
        sender_kind="agent",
        text="Your refund is on its way",
        state="queued",
    )
    # The provider takes 4 s to answer: long enough to kill the worker while it waits.
    simulator.post("/_simulator/faults", {"phone_number_id": "1000001", "mode": "timeout", "delay": 4, "count": 1})

    prefix = f"killtest-{os.getpid()}"
    env = {
        **live_env,
        "REDIS_KEY_PREFIX": prefix,
        "CELERY_QUEUE": "killtest",
        "CELERY_VISIBILITY_TIMEOUT": "2",
        "OUTBOUND_CLAIM_TIMEOUT_SECONDS": "1",
    }
    worker = [
        str(BIN / "celery"),
        "--app",
        "config",
        "worker",
        "--pool",
        "solo",
        "--without-gossip",
        "--without-mingle",
        "--queues",
        "killtest",
        "--loglevel",
        "INFO",
    ]
    first = _spawn(worker, env, tmp_path / "first.log")
    _wait_for(lambda: " ready." in (tmp_path / "first.log").read_text(), 60, "first worker", tmp_path / "first.log")

    # Not set as current: shared tasks would otherwise send through this app for the rest of the suite.
    producer = Celery(broker=settings.CELERY_BROKER_URL, set_as_current=False)
    producer.conf.broker_transport_options = {"global_keyprefix": f"{prefix}:"}
    producer.send_task("conversations.deliver_message", args=[message.id], queue="killtest")

    _wait_for(lambda: Message.objects.get(pk=message.pk).state == "sending", 30, "the send to start")
    # Claimed is not yet on the wire: kill only once the provider holds the request (its fault taken).
    _wait_for(lambda: not simulator.get("/_simulator/faults", phone_number_id="1000001"), 30, "the request to arrive")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    time.sleep(3)  # past the broker's visibility timeout

    second = _spawn(worker, env, tmp_path / "second.log")
    try:
        _wait_for(
            lambda: Message.objects.get(pk=message.pk).state == "failed",
            60,
            "the redelivered task",
            tmp_path / "second.log",
        )
    finally:
        _stop(second)
        producer.close()

    message.refresh_from_db()
    assert message.error_code == "interrupted"
    assert "may not have reached" in message.error_reason
    time.sleep(1.5)  # the simulator finishes the slow send it was given
    sent = [
        item
        for item in simulator.get("/_simulator/outbox", phone_number_id="1000001")
        if item["body"].get("text", {}).get("body") == "Your refund is on its way"
    ]
    assert len(sent) == 1
