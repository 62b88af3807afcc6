"""What Meta's platforms share (WhatsApp Cloud API, Messenger, Instagram): the webhook
handshake with `hub.*` parameters and the `X-Hub-Signature-256` signature of every delivery."""

import hashlib
import hmac

from django.http import HttpResponse


class MetaWebhooks:
    """Mixed into a Connector whose channel keeps Meta's `app_secret` in its credentials."""

    def handshake(self, channel, request) -> HttpResponse:
        params = request.GET
        token = params.get("hub.verify_token", "")
        if params.get("hub.mode") == "subscribe" and hmac.compare_digest(token, channel.verify_token):
            return HttpResponse(params.get("hub.challenge", ""), content_type="text/plain")
        return HttpResponse("verify token mismatch", status=403, content_type="text/plain")

    def verify(self, channel, raw_body: bytes, headers, query=None) -> bool:
        secret = channel.credentials.get("app_secret", "")
        signature = headers.get("X-Hub-Signature-256", "")
        if not secret or not signature.startswith("sha256="):
            return False
        expected = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature.removeprefix("sha256="), expected)
