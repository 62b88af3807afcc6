"""A token bucket per channel in Redis, shared by every worker, so a number's throughput limit
(WhatsApp: 80 messages/s by default) holds however many workers send at once."""

import time

from apps.core.redis import get_redis, key

# KEYS[1] bucket; ARGV: rate per second, capacity, now (ms), tokens wanted, tokens to leave in
# the bucket. Returns {granted, ms to wait when none was granted}.
_TAKE = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 't') or ARGV[2])
local stamp = tonumber(redis.call('HGET', KEYS[1], 's') or ARGV[3])
local rate = tonumber(ARGV[1])
local now = tonumber(ARGV[3])
local reserve = tonumber(ARGV[5])
tokens = math.min(tonumber(ARGV[2]), tokens + (now - stamp) * rate / 1000)
local granted = math.max(0, math.min(tonumber(ARGV[4]), math.floor(tokens - reserve)))
tokens = tokens - granted
local wait = 0
if granted == 0 then
  wait = math.ceil((1 + reserve - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 't', tokens, 's', now)
redis.call('PEXPIRE', KEYS[1], 60000)
return {granted, wait}
"""


def take_tokens(bucket: str, rate_per_second: float, count: int, *, reserve: float = 0) -> tuple[int, float]:
    """Takes up to `count` tokens at once: (how many were taken, seconds to wait when none was).
    A broadcast's sender asks once per 20 ms of sending instead of once per message, and leaves
    `reserve` tokens in the bucket (`bulk_reserve`): what the number can send beyond them is the
    broadcast's, and the reserve is for the replies of live conversations, which take first."""
    rate = max(rate_per_second, 0.01)
    script = get_redis().register_script(_TAKE)
    granted, wait_ms = script(
        keys=[key("bucket", bucket)],
        args=[rate, max(rate, 1), int(time.time() * 1000), max(1, count), reserve],
    )
    return int(granted), int(wait_ms) / 1000


def bulk_reserve(rate_per_second: float) -> float:
    """The tokens bulk sending leaves for live conversations on the same number: a tenth of a
    second's worth. A broadcast at the number's whole rate still gets every token the replies
    do not use; an operator's reply never waits behind 100,000 promotions. None below 10/s: the
    bucket holds a second's tokens, and a reserve as large as that would starve the broadcast."""
    return rate_per_second / 10 if rate_per_second >= 10 else 0.0


def take_token(bucket: str, rate_per_second: float) -> float:
    """Takes one token if there is one and returns 0; else returns the seconds to wait."""
    granted, wait = take_tokens(bucket, rate_per_second, 1)
    return 0.0 if granted else wait


def slow_down(bucket: str, seconds: float, rate_per_second: float) -> None:
    """After a provider's rate-limit error: owe `seconds` worth of tokens, for every worker."""
    tokens = -seconds * max(rate_per_second, 0.01)
    get_redis().hset(key("bucket", bucket), mapping={"t": tokens, "s": int(time.time() * 1000)})
