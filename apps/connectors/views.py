"""The public endpoints of channels: the webhook every provider calls (/webhooks/<channel uuid>/),
and the web chat widget's script, file uploads and file links, which a shop's own site calls.

The webhook verifies the signature on the raw bytes, stores the delivery and answers at once; a
worker does the rest (apps/conversations/services.inbound_event_process)."""

import json
import logging
from functools import cache
from pathlib import Path

from django.conf import settings
from django.core import signing
from django.db import DatabaseError
from django.http import Http404, HttpResponse, JsonResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import csrf_exempt

from apps.connectors import selectors, services
from apps.connectors.consumers import origin_allowed, widget_config
from apps.connectors.models import Channel
from apps.connectors.providers.webchat import FILE_SALT
from apps.connectors.registry import connector_for
from apps.conversations.services import inbound_event_store
from apps.conversations.views import file_response
from apps.core.exceptions import DomainError

logger = logging.getLogger(__name__)
KEPT_HEADERS = ("Content-Type", "User-Agent", "X-Hub-Signature-256")
WIDGET_SOURCE = Path(settings.BASE_DIR) / "static" / "widget" / "parley-widget.js"


def _error(code: str, detail: str, status: int, fields: dict | None = None) -> JsonResponse:
    return JsonResponse({"code": code, "detail": detail, **({"fields": fields} if fields else {})}, status=status)


@csrf_exempt
def webhook(request, channel_uuid):
    try:
        channel = Channel.objects.select_related("workspace").filter(uuid=channel_uuid, enabled=True).first()
    except DatabaseError:
        return _error("unavailable", "Try again later.", 503)  # the provider will retry
    if channel is None:
        return _error("not_found", "No such channel.", 404)
    connector = connector_for(channel)
    if request.method == "GET":
        return connector.handshake(channel, request)
    if request.method != "POST":
        return _error("method_not_allowed", "Use POST.", 405)
    if int(request.headers.get("Content-Length") or 0) > connector.max_webhook_bytes:
        return _error("too_large", "Payload too large.", 413)
    # Read from the stream, not request.body: that refuses anything over Django's 2.5 MB
    # DATA_UPLOAD_MAX_MEMORY_SIZE, and an email with attachments is bigger.
    body = request.read(connector.max_webhook_bytes + 1)
    if len(body) > connector.max_webhook_bytes:
        return _error("too_large", "Payload too large.", 413)
    if not connector.verify(channel, body, request.headers, request.GET):
        return _error("bad_signature", "The request signature does not match this channel's secret.", 401)
    problem = connector.reject(channel, body, request.headers)
    if problem:
        return _error("invalid_payload", problem, 400)
    headers = {name: request.headers[name] for name in KEPT_HEADERS if name in request.headers}
    try:
        inbound_event_store(channel=channel, body=body, headers=headers)
    except DatabaseError:
        logger.exception("could not store a webhook for channel %s", channel.pk)
        return _error("unavailable", "Try again later.", 503)
    return connector.acknowledge(channel, body)


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
        status = 413 if error.code == "too_large" else 415 if error.code == "unsupported_file" else 400
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
