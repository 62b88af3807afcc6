"""config/asgi.py's changes to how daphne serves: Twisted's form parsing left out, and Django's
request handler run whole on one thread per request."""

import asyncio
import csv
import io
import json
import threading
from types import SimpleNamespace

import pytest
from channels.testing import HttpCommunicator
from daphne.http_protocol import WebRequest
from django.core.signals import request_finished, request_started
from twisted.web.test.requesthelper import DummyChannel

from apps.analytics import export
from apps.analytics.api import views as report_views
from config.asgi import application
from tests.analytics import test_reports_api
from tests.analytics.test_reports_api import EXPORT, LIST, RANGE

reports = test_reports_api.reports  # three cycles in workspace A, one in B


def test_daphnes_requests_leave_form_bodies_to_django():
    """Twisted would parse a form POST's body (and every POST's Content-Type, with the email
    package) into `args`, which daphne never reads: Django parses the body it is handed. (Forms
    posted through daphne itself: the browser tests sign in with one.)"""
    channel = DummyChannel()
    channel.factory = SimpleNamespace(server=SimpleNamespace(protocol_connected=lambda request: None))
    request = WebRequest(channel)
    assert request._parsePOSTFormSubmission is False


# Django's request handler on a few threads (apps/core/handlers.py) --------------------------------
#
# Driven in-process through the real ASGI application; the request threads' rows are their own
# connection's, so these tests use a transactional database.


def exchange(path: str, headers: dict | None = None, *, leave_after_pieces: int | None = None, then=None) -> list:
    """The ASGI messages the application sends for a GET of `path`; with `leave_after_pieces`, the
    client goes away after that many pieces of the body (and `then` runs once it has)."""
    headers = {"Host": "localhost", **(headers or {})}
    encoded = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

    async def run() -> list:
        communicator = HttpCommunicator(application, "GET", path, headers=encoded)
        await communicator.send_input({"type": "http.request", "body": b""})
        sent = []
        while not sent or sent[-1]["type"] != "http.response.body" or sent[-1].get("more_body"):
            sent.append(await communicator.receive_output(timeout=10))
            pieces = [message for message in sent if message["type"] == "http.response.body"]
            if leave_after_pieces is not None and len(pieces) == leave_after_pieces:
                await communicator.send_input({"type": "http.disconnect"})
                await asyncio.sleep(0.2)  # the handler hears it
                then()
                await communicator.wait(timeout=10)
                break
        return sent

    return asyncio.run(run())


def body_of(sent: list) -> bytes:
    return b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")


@pytest.mark.django_db(transaction=True)
def test_a_request_is_served_whole_on_one_of_the_request_threads(reports):
    """Middleware, view and the request signals on one thread (the connection is borrowed and
    given back there), not a hop to a new thread for each middleware as Django's ASGI handler."""
    tenants, mine, _ = reports
    threads = []

    def note(**kwargs):
        threads.append(threading.current_thread().name)

    request_started.connect(note)
    request_finished.connect(note)
    try:
        sent = exchange(f"{LIST}?{RANGE}", {"Authorization": f"Bearer {tenants.token_a}"})
    finally:
        request_started.disconnect(note)
        request_finished.disconnect(note)

    assert sent[0]["status"] == 200
    assert [row["conversation_id"] for row in json.loads(body_of(sent))["results"]] == [
        cycle.conversation_id for cycle in mine
    ]
    assert len(threads) == 2 and len(set(threads)) == 1 and threads[0].startswith("http")


@pytest.mark.django_db(transaction=True)
def test_a_page_sets_its_cookies_and_another_workspaces_token_reads_only_its_own(reports):
    tenants, _, theirs_only = reports

    page = exchange("/login/")
    theirs = exchange(f"{LIST}?{RANGE}", {"Authorization": f"Bearer {tenants.token_b}"})

    assert page[0]["status"] == 200 and b"csrftoken=" in dict(page[0]["headers"])[b"Set-Cookie"]
    rows = json.loads(body_of(theirs))["results"]
    assert theirs[0]["status"] == 200 and [row["conversation_id"] for row in rows] == [theirs_only.conversation_id]


@pytest.mark.django_db(transaction=True)
def test_an_export_is_sent_a_piece_at_a_time_as_the_request_thread_reads_it(reports, monkeypatch):
    tenants, mine, _ = reports
    monkeypatch.setattr(export, "CSV_CHUNK", 1)

    sent = exchange(f"{EXPORT}?{RANGE}", {"Authorization": f"Bearer {tenants.token_a}"})

    pieces = [message for message in sent[1:] if message.get("body")]
    assert sent[0]["status"] == 200 and len(pieces) == 3  # the header with the first row, then a row each
    assert all(message["more_body"] for message in pieces) and not sent[-1].get("more_body")
    rows = list(csv.DictReader(io.StringIO(body_of(sent).decode())))
    assert [int(row["conversation_id"]) for row in rows] == [cycle.conversation_id for cycle in mine]


@pytest.mark.django_db(transaction=True)
def test_a_client_gone_mid_download_stops_the_reading(reports, monkeypatch):
    tenants, *_ = reports
    read, more = [], threading.Event()

    def slow_export(cycles, names):
        for number in range(5):
            read.append(number)
            yield f"piece {number}\n".encode()
            more.wait(10)  # the client leaves after the first piece

    monkeypatch.setattr(report_views, "export_csv_stream", slow_export)

    sent = exchange(
        f"{EXPORT}?{RANGE}", {"Authorization": f"Bearer {tenants.token_a}"}, leave_after_pieces=1, then=more.set
    )

    assert body_of(sent) == b"piece 0\n"
    assert read == [0, 1]  # the piece read when it left was not sent, and no more was read
