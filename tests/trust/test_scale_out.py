"""Scale-out: two web processes and two workers against one PostgreSQL and one Redis. Nothing
one process knows is needed by another: an operator connected to web process A sees, live, a
customer's message whose webhook reached web process B and which either worker applied."""

import os

import pytest

from apps.conversations.models import Message
from tests.conftest import _wait_for, client_for
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_member, make_workspace
from tests.trust.stack import Operator, Provider, spawn_daphne, spawn_worker, stop_all, wait_web, wait_worker

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_an_operator_on_one_web_process_sees_live_a_message_that_arrived_through_another(live_env, tmp_path):
    workspace = make_workspace(slug="scale-out")
    channel = make_whatsapp_channel(workspace)
    supervisor = make_member(workspace, "supervisor").user
    prefix = f"scale-out-{os.getpid()}"
    env = {**live_env, "REDIS_KEY_PREFIX": prefix, "CELERY_QUEUE": prefix, "LOG_LEVEL": "INFO"}
    web_a, web_b = (spawn_daphne(env, tmp_path / f"daphne-{name}.log") for name in "ab")
    workers = [spawn_worker(env, tmp_path / f"worker-{n}.log") for n in (1, 2)]
    operator = None
    try:
        wait_web(web_a), wait_web(web_b)
        for n in (1, 2):
            wait_worker(tmp_path / f"worker-{n}.log")
        cookie = client_for(supervisor).cookies["sessionid"].value
        operator = Operator(web_a.ws_url, cookie, web_a.url, workspace.slug)
        provider = Provider(f"{web_b.url}/webhooks/{channel.uuid}/")
        texts = [f"Where is my order {n}?" for n in range(6)]
        for n, text in enumerate(texts):
            provider.send(text, wa_id=f"20100000{n:04d}")

        _wait_for(lambda: sorted(operator.message_texts()) == texts, 30, "the operator on web A to see them")
    finally:
        if operator is not None:
            operator.close()
        stop_all(*workers, web_a.process, web_b.process)

    assert operator.reconnects == 0
    assert Message.objects.filter(channel=channel).count() == len(texts)
    logs = [(tmp_path / f"worker-{n}.log").read_text() for n in (1, 2)]
    assert any("drain_inbound_events" in log and "succeeded" in log for log in logs)
