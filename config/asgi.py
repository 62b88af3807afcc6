"""HTTP and websockets in one ASGI application, served by daphne (see Procfile)."""

import gc
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def _pooled_database_connections() -> None:
    """Each request runs on a thread of its own under ASGI, and each thread opened a connection of
    its own: fifty operators replying at once while webhooks and broadcasts ran went past
    PostgreSQL's max_connections ("sorry, too many clients already": 500s). A web process now
    borrows from one pool (psycopg_pool, through Django's "pool" option) of what is left of
    WEB_DATABASE_CONNECTIONS once the webhook threads have their own (apps/connectors/views.py:
    they must answer 503 at once while PostgreSQL is down, not wait on a pool); a request that
    finds it all lent waits up to 10 s. Workers keep one connection each (config/celery.py), so
    this is the web process's own choice, made before any connection. (The test process imports
    this module for its `application`, and keeps its own connections.)"""
    from django.conf import settings

    database = settings.DATABASES["default"]
    size = _request_connections()
    serving = "pytest" not in sys.modules and settings.WEB_DATABASE_CONNECTIONS > 0
    if serving and database["CONN_MAX_AGE"] == 0:  # Django refuses a pool with kept connections
        database.setdefault("OPTIONS", {})["pool"] = {"min_size": min(2, size), "max_size": size, "timeout": 10}


def _request_connections() -> int:
    """The connections a web process's requests and sockets share: WEB_DATABASE_CONNECTIONS less
    the webhook threads' own. Its requests run on as many threads (apps/core/handlers.py): a
    request past that would only wait for a connection."""
    from django.conf import settings

    return max(1, settings.WEB_DATABASE_CONNECTIONS - settings.WEBHOOK_DATABASE_CONNECTIONS)


_pooled_database_connections()
django.setup(set_prefix=False)

from apps.core.handlers import ThreadedASGIHandler  # noqa: E402  (needs Django set up first)

django_asgi_app = ThreadedASGIHandler(threads=_request_connections())

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from apps.connectors.views import webhook_asgi  # noqa: E402
from config.routing import public_websocket_urlpatterns, websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                # Providers' webhooks skip Django's request handler and middleware: the same view,
                # on a few threads that keep their database connection (apps/connectors/views.py).
                path("webhooks/<uuid:channel_uuid>/", webhook_asgi),
                re_path(r"", django_asgi_app),
            ]
        ),
        "websocket": URLRouter(
            [
                # The chat widget lives on shops' own sites: its consumer checks the origin against
                # the channel's allowed origins itself, and has no session.
                *public_websocket_urlpatterns,
                # Everything else is for signed-in people on Parley's own pages.
                re_path(r"", AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))),
            ]
        ),
    }
)


def _without_form_parsing(request_class) -> None:
    """Twisted parses every POST body that says it is a form into `request.args`, and reads the
    Content-Type of every POST with the `email` package to find out (a seventh of daphne's CPU
    under a burst of webhooks). Daphne never reads `args`: the ASGI application gets the raw
    body. Twisted's Request takes `parsePOSTFormSubmission=False` for this; daphne's subclass
    passes nothing, so its requests are told after they are made."""
    made = request_class.__init__

    def __init__(self, *args, **kwargs):
        made(self, *args, **kwargs)
        self._parsePOSTFormSubmission = False

    request_class.__init__ = __init__


try:
    from daphne.http_protocol import WebRequest
except ImportError:  # served by another ASGI server
    pass
else:
    _without_form_parsing(WebRequest)

# What is loaded by now (Django, the URL conf, every app's modules) lives as long as the process.
# Frozen out of the garbage collector's sight, a full collection walks only what was made since,
# not the whole heap: bench.inbound saw full collections of 120 to 330 ms in daphne under a burst,
# holding every webhook in flight (the acknowledgement's p99 was 210 to 260 ms; 60 to 95 ms after). The
# server's per-request objects (daphne's, Twisted's) make cycles: the youngest generation is
# collected every 20,000 allocations rather than 700, so the older ones run far less often.
gc.collect()
gc.freeze()
gc.set_threshold(20_000, 20, 10)
