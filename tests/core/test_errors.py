"""What Django's last-resort handler answers (apps/core/views.server_error)."""

import json

import pytest
from django.db import OperationalError
from django.test import RequestFactory

from apps.core.views import server_error


def _answer(path: str, error: Exception):
    try:
        raise error
    except Exception:  # Django calls the handler while handling the request's exception
        return server_error(RequestFactory().get(path))


def test_the_database_away_or_busy_is_a_503_to_try_again():
    """Every connection of the web process's pool lent for 10 s (or PostgreSQL down) is no fault
    of the request: the client is told to come back, not that something broke."""
    response = _answer("/api/v1/conversations/", OperationalError("couldn't get a connection after 10.00 sec"))

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert json.loads(response.content)["code"] == "unavailable"


@pytest.mark.django_db
def test_a_page_gets_the_503_as_an_error_page():
    response = _answer("/inbox/", OperationalError("the database system is starting up"))

    assert response.status_code == 503
    assert b"Try again in a few seconds" in response.content


def test_any_other_failure_stays_a_500():
    response = _answer("/api/v1/conversations/", ValueError("a bug"))

    assert response.status_code == 500
    assert json.loads(response.content)["code"] == "server_error"
