"""Request quotas of KMS configurations for background work: one token bucket per configuration.

A configuration's ``rate_limit`` (requests per second, 0 = unlimited) bounds what
rekey jobs and scheduled rotations send to that KMS, across *all* workers: the
bucket lives in Redis when ``REDIS_URL`` is set (one Lua script, atomic, Redis's
clock), otherwise in the database (a row per configuration, taken under a row
lock). Either way it holds a count and a time, never a key.

The bucket is a debt bucket: :func:`kms_acquire` takes ``n`` tokens at once and,
when the bucket goes below zero, sleeps until the debt is paid. Its capacity
(the burst) is a tenth of a second's worth, at least one request, so over any
interval ``t`` at most ``rate * t + burst`` requests start.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import transaction

from keycore.models.jobs import KmsRateBucket

log = logging.getLogger(__name__)

#: longest single sleep; a worker re-asks after it, so a changed rate applies quickly
MAX_SLEEP = 5.0

_SCRIPT = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate) - want
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
if tokens >= 0 then
  return '0'
end
return tostring(-tokens / rate)
"""

_redis_lock = threading.Lock()
_redis_client = None
_script = None


def burst(rate: float) -> float:
    return max(1.0, rate / 10.0)


def _redis_take(key: str, rate: float, n: int) -> float:
    global _redis_client, _script
    if _script is None:
        with _redis_lock:
            if _script is None:
                _redis_client = redis.Redis.from_url(settings.REDIS_URL)
                _script = _redis_client.register_script(_SCRIPT)
    return float(_script(keys=[key], args=[rate, burst(rate), n]))


def _database_take(config_id: int, rate: float, n: int) -> float:
    capacity = burst(rate)
    now = time.time()
    with transaction.atomic():
        bucket, _ = KmsRateBucket.objects.select_for_update(no_key=True).get_or_create(
            config_id=config_id, defaults={"tokens": capacity, "refilled_at": now}
        )
        tokens = min(capacity, bucket.tokens + max(0.0, now - bucket.refilled_at) * rate) - n
        KmsRateBucket.objects.filter(pk=config_id).update(tokens=tokens, refilled_at=now)
    return 0.0 if tokens >= 0 else -tokens / rate


def backend() -> str:
    return "redis" if getattr(settings, "REDIS_URL", None) else "database"


def kms_acquire(config, n: int = 1, *, sleep: Callable[[float], None] = time.sleep, using: str | None = None) -> float:
    """Wait until ``n`` requests to ``config``'s KMS fit its quota; returns the seconds waited.

    Call it outside any transaction that holds locks: it may sleep.
    """
    rate = float(config.rate_limit or 0)
    if rate <= 0 or n <= 0:
        return 0.0
    using = using or backend()
    if using == "redis":
        wait = _redis_take(f"keycore:kms-quota:{config.uid.hex}", rate, n)
    else:
        wait = _database_take(config.pk, rate, n)
    waited = 0.0
    while wait > 0:
        step = min(wait, MAX_SLEEP)
        sleep(step)
        waited += step
        wait -= step
    if waited:
        log.debug("waited %.3fs for %d request(s) to KMS configuration %s", waited, n, config.uid)
    return waited


def requests_allowed(rate: float, seconds: float) -> int:
    """Upper bound of requests started in any interval of ``seconds`` (what the tests check)."""
    return math.floor(rate * seconds + burst(rate)) + 1
