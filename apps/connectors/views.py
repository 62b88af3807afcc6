"""The public webhook endpoint every provider calls: /webhooks/<channel uuid>/.

It verifies the signature on the raw bytes, stores the delivery and answers at once; a worker
does the rest (apps/conversations/services.inbound_event_process)."""

import logging

from django.db import DatabaseError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from apps.connectors.models import Channel
from apps.connectors.registry import connector_for
from apps.conversations.services import inbound_event_store

logger = logging.getLogger(__name__)
MAX_WEBHOOK_BYTES = 5 * 1024 * 1024
KEPT_HEADERS = ("Content-Type", "User-Agent", "X-Hub-Signature-256", "X-Telegram-Bot-Api-Secret-Token")


def _error(code: str, detail: str, status: int) -> JsonResponse:
    return JsonResponse({"code": code, "detail": detail}, status=status)


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
    body = request.body
    if len(body) > MAX_WEBHOOK_BYTES:
        return _error("too_large", "Payload too large.", 413)
    if not connector.verify(channel, body, request.headers):
        return _error("bad_signature", "The request signature does not match this channel's secret.", 401)
    headers = {name: request.headers[name] for name in KEPT_HEADERS if name in request.headers}
    try:
        inbound_event_store(channel=channel, body=body, headers=headers)
    except DatabaseError:
        logger.exception("could not store a webhook for channel %s", channel.pk)
        return _error("unavailable", "Try again later.", 503)
    return connector.acknowledge()
