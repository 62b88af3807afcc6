import sys

from django.db import OperationalError, connection
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache

from apps.core.api.errors import error_body
from apps.core.redis import get_redis


def _check(probe) -> str:
    try:
        probe()
    except Exception:
        return "down"
    return "ok"


def _ping_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def ping(request):
    """The cheapest view there is: the ceiling the benchmarks compare against."""
    return HttpResponse("pong", content_type="text/plain")


@never_cache
def healthz(request):
    checks = {"database": _check(_ping_database), "redis": _check(lambda: get_redis().ping())}
    healthy = all(state == "ok" for state in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", **checks}, status=200 if healthy else 503)


def _error(request, status: int, code: str, detail: str, template: str):
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(code, detail), status=status)
    return render(request, template, {"detail": detail}, status=status)


def bad_request(request, exception=None):
    return _error(request, 400, "bad_request", _("The request could not be understood."), "400.html")


def permission_denied(request, exception=None):
    return _error(request, 403, "permission_denied", _("You may not do this."), "403.html")


def page_not_found(request, exception=None):
    return _error(request, 404, "not_found", _("Not found."), "404.html")


def server_error(request):
    if isinstance(sys.exc_info()[1], OperationalError):
        # PostgreSQL unreachable, or every connection of this web process's pool lent for 10 s
        # (config/asgi.py): nothing is wrong with the request, so say when to try again.
        detail = _("Parley is busy or cannot reach its database just now. Try again in a few seconds.")
        response = _error(request, 503, "unavailable", detail, "500.html")
        response["Retry-After"] = "5"
        return response
    return _error(request, 500, "server_error", _("Something went wrong on our side."), "500.html")
