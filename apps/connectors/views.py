"""The public endpoints of channels: the webhook every provider calls (/webhooks/<channel uuid>/),
and the web chat widget's script, file uploads and file links, which a shop's own site calls.

The webhook verifies the signature on the raw bytes, stores the delivery and answers at once; a
worker does the rest (apps/conversations/services.inbound_event_process). Under ASGI it is served
by `webhook_asgi` (routed in config/asgi.py), outside Django's request handler; the test client and
WSGI reach the same view through config/urls.py."""

import asyncio
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

from django.conf import settings
from django.core import signing
from django.core.handlers.asgi import ASGIRequest
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections
from django.http import Http404, HttpResponse, JsonResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import csrf_exempt

from apps.connectors import selectors, services
from apps.connectors.consumers import origin_allowed, widget_config
from apps.connectors.providers.webchat import FILE_SALT
from apps.connectors.registry import connector_for, connectors
from apps.connectors.replay import WebhookRefused
from apps.conversations.services import inbound_event_store
from apps.conversations.views import file_response
from apps.core.exceptions import DomainError

logger = logging.getLogger(__name__)
KEPT_HEADERS = ("Content-Type", "User-Agent", "X-Hub-Signature-256")
WIDGET_SOURCE = Path(settings.BASE_DIR) / "static" / "widget" / "parley-widget.js"


def _error(code: str, detail: str, status: int, fields: dict | None = None) -> JsonResponse:
    return JsonResponse({"code": code, "detail": detail, **({"fields": fields} if fields else {})}, status=status)


@csrf_exempt
def webhook(request, channel_uuid, channel_max_age: float = 0):
    try:
        channel = selectors.webhook_channel_get(channel_uuid=channel_uuid, max_age=channel_max_age)
    except DatabaseError:
        return _error("unavailable", "Try again later.", 503)  # the provider will retry
    if channel is None:
        return _error("not_found", "No such channel.", 404)
    connector = connector_for(channel)
    if request.method == "GET":
        return connector.handshake(channel, request)
    if request.method != "POST":
        return _error("method_not_allowed", "Use POST.", 405)
    declared = request.headers.get("Content-Length") or "0"
    if not declared.isascii() or not declared.isdigit():
        return _error("bad_request", "Content-Length must be a number of bytes.", 400)
    if int(declared) > connector.max_webhook_bytes:
        return _error("too_large", "Payload too large.", 413)
    # Read from the stream, not request.body: that refuses anything over Django's 2.5 MB
    # DATA_UPLOAD_MAX_MEMORY_SIZE, and an email with attachments is bigger.
    body = request.read(connector.max_webhook_bytes + 1)
    if len(body) > connector.max_webhook_bytes:
        return _error("too_large", "Payload too large.", 413)
    try:
        verified = connector.verify(channel, body, request.headers, request.GET)
    except WebhookRefused as refused:  # stale or replayed (apps/connectors/replay.py)
        return _error(refused.code, refused.detail, 401)
    if not verified:
        return _error("bad_signature", "The request signature does not match this channel's secret.", 401)
    problem = connector.reject(channel, body, request.headers)
    if problem:
        connector.forget(channel, body, request.headers, request.GET)
        return _error("invalid_payload", problem, 400)
    headers = {name: request.headers[name] for name in KEPT_HEADERS if name in request.headers}
    try:
        inbound_event_store(channel=channel, body=body, headers=headers)
    except DatabaseError:
        logger.exception("could not store a webhook for channel %s", channel.pk)
        connector.forget(channel, body, request.headers, request.GET)
        return _error("unavailable", "Try again later.", 503)
    return connector.acknowledge(channel, body)


# The webhook under ASGI -----------------------------------------------------------------------
#
# Through Django's ASGI handler a webhook cost three times a trivial view: a thread made for each
# request (ThreadSensitiveContext), the page middleware (sessions, locale, idempotency...), the
# request signals' hops to that thread, and a new PostgreSQL connection each time (CONN_MAX_AGE
# is 0 under ASGI). A provider's webhook needs none of it. Here the same `webhook` view runs on
# a few long-lived threads, each keeping its own connection: one hop per webhook, and never more
# than WEBHOOK_DATABASE_CONNECTIONS connections per web process, however many requests wait.
# The channel is read again after a few seconds, not for every delivery (selectors.webhook_channel_get).
WEBHOOK_CHANNEL_MAX_AGE = 5.0


@cache
def _webhook_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=settings.WEBHOOK_DATABASE_CONNECTIONS, thread_name_prefix="webhook", initializer=_own_connection
    )


def _own_connection() -> None:
    """A webhook thread connects to PostgreSQL itself, outside the web process's pool
    (config/asgi.py): with PostgreSQL down a pool makes every borrower wait its whole timeout, and
    a provider waiting that long for a 503 gives up on the request (an answer it never saw),
    while a connection of the thread's own is refused at once. The pool is the rest of the
    process's budget: its size leaves these threads' connections out."""
    default = connections[DEFAULT_DB_ALIAS]
    options = default.settings_dict.get("OPTIONS", {})
    if "pool" in options:
        unpooled = {**default.settings_dict, "OPTIONS": {k: v for k, v in options.items() if k != "pool"}}
        connections[DEFAULT_DB_ALIAS] = default.__class__(unpooled, DEFAULT_DB_ALIAS)


@cache
def _largest_webhook() -> int:
    return max(connector.max_webhook_bytes for connector in connectors().values())


def _webhook_on_thread(request, channel_uuid) -> HttpResponse:
    try:
        return webhook(request, channel_uuid, channel_max_age=WEBHOOK_CHANNEL_MAX_AGE)
    finally:
        if connection.errors_occurred:
            # Possibly PostgreSQL restarted under us (the view answered 503): the next webhook on
            # this thread connects afresh instead of failing on a dead connection forever.
            connection.close()


async def _read_body(scope, receive) -> bytes | None:
    """The request body, at most one byte over the largest any channel accepts (the view answers
    413 for that); None when the client went away."""
    limit = _largest_webhook() + 1
    declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
    if declared.isdigit() and int(declared) > limit:
        return b""  # the view refuses it by its Content-Length, unread
    chunks, size = [], 0
    while size < limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def webhook_asgi(scope, receive, send) -> None:
    body = await _read_body(scope, receive)
    if body is None:
        return
    request = ASGIRequest(scope, io.BytesIO(body))
    channel_uuid = scope["url_route"]["kwargs"]["channel_uuid"]
    loop = asyncio.get_running_loop()
    try:
        response = await loop.run_in_executor(_webhook_threads(), _webhook_on_thread, request, channel_uuid)
    except Exception:
        logger.exception("webhook for channel %s failed", channel_uuid)
        response = _error("server_error", "Something went wrong.", 500)
    content = response.content
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
    if not response.has_header("Content-Length"):
        headers.append((b"Content-Length", str(len(content)).encode()))  # else a chunked reply
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": content})


# Web chat ------------------------------------------------------------------------------------


@cache
def _widget_source() -> str:
    return WIDGET_SOURCE.read_text()


@cache_control(public=True, max_age=300)
def widget_script(request, channel_uuid):
    """`<script src="https://parley.example.com/widget/<uuid>.js" async></script>`: the whole
    widget, with the channel's look and pre-chat form baked in."""
    channel = selectors.webchat_channel_get(channel_uuid=channel_uuid)
    if channel is None:
        return HttpResponse("/* Parley: no such web chat channel */", status=404, content_type="text/javascript")
    config = {"channel": str(channel.uuid), **widget_config(channel)}
    # json.dumps does not escape "</script>"; the config is data, keep it from closing anything.
    source = _widget_source().replace("__PARLEY_CONFIG__", json.dumps(config).replace("</", "<\\/"))
    return HttpResponse(source, content_type="text/javascript; charset=utf-8")


def _cors(request, channel, response):
    """The widget calls from the shop's origin; only the channel's allowed origins may read."""
    origin = request.headers.get("Origin", "")
    if origin and origin_allowed(channel, {b"origin": origin.encode("latin-1", "replace")}):
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Headers"] = "X-Parley-Visitor"
        response["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response["Vary"] = "Origin"
    return response


@csrf_exempt  # no cookies are involved: the visitor token in a header is the credential
def widget_upload(request, channel_uuid):
    """A visitor's file, kept until the message that carries it (a token) is processed."""
    channel = selectors.webchat_channel_get(channel_uuid=channel_uuid)
    if channel is None:
        return _error("not_found", "No such web chat channel.", 404)
    if request.method == "OPTIONS":
        return _cors(request, channel, HttpResponse(status=204))
    if request.method != "POST":
        return _cors(request, channel, _error("method_not_allowed", "Use POST.", 405))
    visitor = services.visitor_from_token(channel, request.headers.get("X-Parley-Visitor", ""))
    if visitor is None:
        return _cors(request, channel, _error("invalid_visitor", "Join the chat before sending files.", 401))
    if not origin_allowed(channel, {b"origin": request.headers.get("Origin", "").encode("latin-1", "replace")}):
        return _error("forbidden_origin", "This site may not use this chat.", 403)
    upload = request.FILES.get("file")
    if upload is None:
        return _cors(request, channel, _error("invalid", "Send the file as multipart field 'file'.", 400))
    try:
        token = services.webchat_upload_store(channel=channel, visitor=visitor, upload=upload)
    except DomainError as error:
        status = (
            413 if error.code == "too_large" else 415 if error.code in ("unsupported_file", "type_mismatch") else 400
        )
        return _cors(request, channel, _error(error.code, error.detail, status))
    body = {"upload": token, "filename": upload.name, "content_type": upload.content_type, "size": upload.size}
    return _cors(request, channel, JsonResponse(body, status=201))


def widget_file(request, channel_uuid, attachment_uuid):
    """A file of the visitor's own conversation, by a link signed for that visitor."""
    channel = selectors.webchat_channel_get(channel_uuid=channel_uuid)
    try:
        grant = signing.loads(request.GET.get("t", ""), salt=FILE_SALT)
    except signing.BadSignature:
        raise Http404 from None
    if channel is None or grant.get("a") != str(attachment_uuid):
        raise Http404
    found = selectors.webchat_attachment_get(channel=channel, visitor_id=grant["v"], attachment_uuid=attachment_uuid)
    if found is None or not found.file:
        raise Http404
    return file_response(found)
