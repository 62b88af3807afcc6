"""config/asgi.py's changes to how daphne serves."""

from types import SimpleNamespace

from daphne.http_protocol import WebRequest
from twisted.web.test.requesthelper import DummyChannel

import config.asgi  # noqa: F401 (applies them)


def test_daphnes_requests_leave_form_bodies_to_django():
    """Twisted would parse a form POST's body (and every POST's Content-Type, with the email
    package) into `args`, which daphne never reads: Django parses the body it is handed. (Forms
    posted through daphne itself: the browser tests sign in with one.)"""
    channel = DummyChannel()
    channel.factory = SimpleNamespace(server=SimpleNamespace(protocol_connected=lambda request: None))
    request = WebRequest(channel)
    assert request._parsePOSTFormSubmission is False
