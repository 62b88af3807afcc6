"""A token bucket per channel in Redis, shared by every worker, so a number's throughput limit
(WhatsApp: 80 messages/s by default) holds however many workers send at once."""

import time

from apps.core.redis import get_redis, key

# KEYS[1] bucket; ARGV: rate per second, capacity, now (ms). Returns ms to wait (0 = go).
_TAKE = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 't') or ARGV[2])
local stamp = tonumber(redis.call('HGET', KEYS[1], 's') or ARGV[3])
local rate = tonumber(ARGV[1])
local now = tonumber(ARGV[3])
tokens = math.min(tonumber(ARGV[2]), tokens + (now - stamp) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 't', tokens, 's', now)
redis.call('PEXPIRE', KEYS[1], 60000)
return wait
"""


def take_token(bucket: str, rate_per_second: float) -> float:
    """Takes one token if there is one and returns 0; else returns the seconds to wait."""
    rate = max(rate_per_second, 0.01)
    script = get_redis().register_script(_TAKE)
    wait_ms = script(keys=[key("bucket", bucket)], args=[rate, max(rate, 1), int(time.time() * 1000)])
    return int(wait_ms) / 1000


def slow_down(bucket: str, seconds: float, rate_per_second: float) -> None:
    """After a provider's rate-limit error: owe `seconds` worth of tokens, for every worker."""
    tokens = -seconds * max(rate_per_second, 0.01)
    get_redis().hset(key("bucket", bucket), mapping={"t": tokens, "s": int(time.time() * 1000)})
