"""A web process holds at most WEB_DATABASE_CONNECTIONS PostgreSQL connections however many
requests arrive at once (config/asgi.py): the rest wait their turn for one instead of opening
their own until PostgreSQL refuses ("too many clients"), which answered 500s on the busy day."""

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection

from tests.conftest import client_for
from tests.trust.stack import start_daphne, stop_all

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

APP = "parley-pool-test"


def _connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APP])
        return cursor.fetchone()[0]


def test_forty_requests_at_once_share_a_web_process_s_six_connections(live_env, tenants, tmp_path):
    # libpq names the process's connections after PGAPPNAME: only this daphne's are counted.
    env = {**live_env, "WEB_DATABASE_CONNECTIONS": "6", "WEBHOOK_DATABASE_CONNECTIONS": "2", "PGAPPNAME": APP}
    web = start_daphne(env, tmp_path / "daphne.log")
    cookie = client_for(tenants.supervisor).cookies["sessionid"].value
    most, done = 0, threading.Event()

    def watch():
        nonlocal most
        while not done.is_set():
            most = max(most, _connections())
        connection.close()  # this thread's own

    def inbox(_):
        headers = {"Cookie": f"sessionid={cookie}"}
        return httpx.get(f"{web.url}/api/v1/conversations/", headers=headers, timeout=30).status_code

    watcher = threading.Thread(target=watch)
    try:
        watcher.start()
        with ThreadPoolExecutor(max_workers=40) as clients:
            statuses = list(clients.map(inbox, range(120)))
    finally:
        done.set()
        watcher.join()
        stop_all(web.process)

    assert statuses == [200] * 120
    assert 1 <= most <= 6
