"""Requests per API key (the rate is ``KEYCORE_API_RATE``, e.g. ``100000/min``), shared by all processes.

DRF's ``SimpleRateThrottle`` keeps a list of every request time in the cache, which
at 100,000 requests a minute is a 100,000-element list read and written per
request. This is a fixed-window counter instead, and each process batches its
increments: it adds what it counted to the shared counter (Redis in production)
at most every ``SYNC_INTERVAL`` seconds, and on every request once the window is
near its limit. A key can therefore overshoot by at most what the processes
admit in one sync interval — never by much, and never near the limit, where the
counter is exact. Keys without auth (the schema and docs pages) count per IP.

If the shared cache is down, requests are let through (and it is logged): a rate
limit must not take the crypto API down with it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from keycore.services.audit import client_ip

log = logging.getLogger(__name__)

SYNC_INTERVAL = 0.2
#: above this share of the limit every request goes to the shared counter
EXACT_FROM = 0.8
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _Window:
    __slots__ = ("known", "pending", "synced_at", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.known = 0  # the shared count at the last sync, our increments included
        self.pending = 0  # admitted here since then
        self.synced_at = 0.0


_lock = threading.Lock()
_windows: dict[str, _Window] = {}
_last_warning = 0.0


def reset() -> None:
    """Forget this process's counts (tests)."""
    with _lock:
        _windows.clear()


@functools.lru_cache(maxsize=16)
def parse_rate(rate: str) -> tuple[int, int]:
    """``"100000/min"`` → (100000, 60): requests, and the window in seconds (s, m, h or d)."""
    number, _, period = rate.partition("/")
    return int(number), _PERIODS[period.strip()[:1].lower()]


def _shared_add(key: str, amount: int, ttl: int) -> int:
    if cache.add(key, amount, ttl):
        return amount
    try:
        return cache.incr(key, amount)
    except ValueError:  # expired between add and incr
        cache.set(key, amount, ttl)
        return amount


class ApiKeyRateThrottle(BaseThrottle):
    """Requests per API key per window, counted across every process."""

    scope = "api_key"

    def __init__(self) -> None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        self.limit, self.duration = parse_rate(rate) if rate else (None, None)
        self._wait: float | None = None

    def ident_for(self, request) -> str:
        if request.auth is None:
            # not DRF's get_ident: without NUM_PROXIES it takes the whole X-Forwarded-For, which the caller writes
            return "ip:" + (client_ip(request) or "unknown")
        return "key:" + request.auth.prefix

    def allow_request(self, request, view) -> bool:
        if self.limit is None:
            return True
        ident = self.ident_for(request)
        now = time.time()
        window = int(now // self.duration)
        with _lock:
            state = _windows.get(ident)
            if state is None or state.window != window:
                state = _windows[ident] = _Window(window)
            state.pending += 1
            estimate = state.known + state.pending
            if estimate >= self.limit * EXACT_FROM or now - state.synced_at >= SYNC_INTERVAL:
                key = f"keycore:throttle:{ident}:{self.duration}:{window}"
                try:
                    state.known = _shared_add(key, state.pending, self.duration + 5)
                    state.pending = 0
                    state.synced_at = now
                except Exception:
                    _warn_unavailable()
                    return True
                estimate = state.known
            if estimate > self.limit:
                self._wait = (window + 1) * self.duration - now
                return False
        return True

    def wait(self) -> float | None:
        return self._wait


def _warn_unavailable() -> None:
    global _last_warning
    if time.monotonic() - _last_warning > 60:
        _last_warning = time.monotonic()
        log.warning("the shared cache is unavailable; API rate limits are not enforced meanwhile", exc_info=True)
