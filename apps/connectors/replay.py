"""Replayed webhooks: where a provider signs a moment (WeChat's timestamp and nonce, the custom
channel's `t=`), a delivery is taken only while that moment is fresh and only once. What each
provider does is in docs/security.md, "Replayed webhooks".

Someone who captured a signed request (from a log, a proxy, a browser's history of a WeChat URL)
can send it again. Inside the freshness window the signature still holds, so the request's
signed parts are remembered in Redis (`SET NX EX`) until they could no longer pass the window,
and a second request with them is refused. The webhook view forgets them again when the
delivery was not kept after all (refused as malformed, or the database was down), so the
sender's retry of the very same request is taken."""

import hashlib
import logging

import redis

from apps.core.redis import get_redis, key

logger = logging.getLogger(__name__)


class WebhookRefused(Exception):
    """A verified-looking request refused for a reason its sender should read (stale, replayed):
    the webhook answers 401 with this `code` and `detail` and stores nothing."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


def replayed(detail: str) -> WebhookRefused:
    return WebhookRefused("replayed", detail)


def _name(channel, scheme: str, signed: str) -> str:
    return key("webhook-seen", scheme, channel.uuid, hashlib.sha256(signed.encode()).hexdigest())


def first_delivery(channel, scheme: str, signed: str, *, seconds: int) -> bool:
    """Whether these signed parts are new on this channel; remembers them for `seconds`."""
    try:
        return bool(get_redis().set(_name(channel, scheme, signed), "1", nx=True, ex=seconds))
    except redis.RedisError:
        # Signature and freshness still hold; refusing every delivery during a Redis outage would
        # lose customers' messages once the provider's retries run out. The pipeline's dedupe by
        # provider id still keeps a replayed message from being stored twice.
        logger.warning("webhook replay check skipped: Redis is unavailable", exc_info=True)
        return True


def forget_delivery(channel, scheme: str, signed: str) -> None:
    """The delivery was not kept: the same signed request may come again (a retry)."""
    try:
        get_redis().delete(_name(channel, scheme, signed))
    except redis.RedisError:
        logger.warning("could not forget a refused webhook's signature: Redis is unavailable", exc_info=True)
