"""`Idempotency-Key` on API POSTs: the first answer to a key is kept for 24 hours and given again
to every repeat (with `Idempotent-Replayed: true`), so a client that retried after a timeout
never creates twice. Keys are per caller (its token, or its session) and per path; a key reused
with another body is refused; one still being answered is a 409 to come back later."""

import hashlib
import json

from django.http import HttpResponse, JsonResponse

from apps.core.redis import get_redis, key

TTL_SECONDS = 24 * 3600
PENDING_SECONDS = 60
HEADER = "Idempotency-Key"


def _caller(request) -> str:
    credential = request.headers.get("Authorization") or request.COOKIES.get("sessionid", "")
    return hashlib.sha256(credential.encode()).hexdigest()[:32]


def _fingerprint(request) -> str:
    # A file upload is not read into memory here just to compare it; its size stands for it.
    if request.content_type == "multipart/form-data":
        return f"multipart:{request.headers.get('Content-Length', '')}"
    return hashlib.sha256(request.body).hexdigest()


class IdempotencyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        idempotency_key = request.headers.get(HEADER, "")
        if request.method != "POST" or not request.path.startswith("/api/") or not idempotency_key:
            return self.get_response(request)
        if len(idempotency_key) > 255:
            return JsonResponse({"code": "invalid", "detail": f"{HEADER} has at most 255 characters."}, status=400)
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
        slot = key("idempotency", _caller(request), hashlib.sha256(request.path.encode()).hexdigest()[:16], digest)
        fingerprint = _fingerprint(request)
        redis = get_redis()
        if not redis.set(slot, json.dumps({"pending": True, "body": fingerprint}), nx=True, ex=PENDING_SECONDS):
            return self._replay(redis.get(slot), fingerprint)
        response = self.get_response(request)
        if response.status_code >= 500 or response.status_code in (401, 429) or getattr(response, "streaming", False):
            redis.delete(slot)  # nothing was decided: the client may try again with the same key
            return response
        stored = {
            "body": fingerprint,
            "status": response.status_code,
            "content_type": response.get("Content-Type", "application/json"),
            "content": response.content.decode("utf-8", errors="replace"),
        }
        redis.set(slot, json.dumps(stored), ex=TTL_SECONDS)
        return response

    @staticmethod
    def _replay(raw: bytes | None, fingerprint: str) -> HttpResponse:
        stored = json.loads(raw) if raw else {"pending": True, "body": fingerprint}
        if stored["body"] != fingerprint:
            return JsonResponse(
                {"code": "idempotency_key_reused", "detail": f"This {HEADER} was used with another request body."},
                status=422,
            )
        if stored.get("pending"):
            return JsonResponse(
                {"code": "idempotency_in_progress", "detail": "The first request with this key is still running."},
                status=409,
            )
        response = HttpResponse(stored["content"], status=stored["status"], content_type=stored["content_type"])
        response["Idempotent-Replayed"] = "true"
        return response
