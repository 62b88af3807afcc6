import pytest
from django.test import Client

from apps.core.redis import get_redis


@pytest.mark.django_db
def test_healthz_reports_database_and_redis_ok():
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


@pytest.mark.django_db
def test_healthz_answers_503_naming_redis_when_it_is_unreachable(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    get_redis.cache_clear()
    try:
        response = Client().get("/healthz")
    finally:
        get_redis.cache_clear()

    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "ok", "redis": "down"}
