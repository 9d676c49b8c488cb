"""API keys: ``Authorization: Bearer kc_<prefix>_<secret>``.

Only the prefix (for lookup) and a SHA-256 of the whole key are stored (the
format, generation and hash belong to ``keycore.services.apikeys``); the
comparison is constant-time. ``last_used_at`` is updated at most once a minute
per key so authentication stays cheap on the crypto path.

A successful lookup is kept in this process for at most ``KEYCORE_REVOCATION_POLL``
seconds (1 s by default), keyed by the SHA-256 of the presented key. After that
the row is read again, so a revoked, expired, re-scoped or deleted key stops
working everywhere within that interval plus one request — the same two-second
promise as tenant-key revocation, without a query per request. Expiry is also
checked against the clock on every request. Nothing but the hash is used as a
cache key and nothing is cached for a key that failed.
"""

from __future__ import annotations

import hmac
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions

from keycore import selectors
from keycore.models import ApiKey
from keycore.services.apikeys import api_key_mark_used, hash_key, parse_prefix

LAST_USED_RESOLUTION = timedelta(seconds=60)
#: distinct keys remembered per process at most; the cache is emptied when it is full
CACHE_MAX_ENTRIES = 10_000


class _KeyCache:
    """hash of a presented key → (ApiKey with its allowed tenants, monotonic time it was read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[ApiKey, float]] = {}

    def get(self, digest: str, max_age: float) -> ApiKey | None:
        entry = self._entries.get(digest)
        if entry is None or time.monotonic() - entry[1] > max_age:
            return None
        return entry[0]

    def put(self, digest: str, key: ApiKey) -> None:
        with self._lock:
            if len(self._entries) >= CACHE_MAX_ENTRIES:
                self._entries.clear()
            self._entries[digest] = (key, time.monotonic())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


key_cache = _KeyCache()


def _load(prefix: str, digest: str) -> ApiKey | None:
    key = selectors.api_key_for_authentication(prefix)
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    return key


def tenant_allowed(key: ApiKey | None, external_id: str) -> bool:
    """Whether ``key`` may use ``external_id``; keys without a tenant list may use every tenant."""
    allowed = getattr(key, "allowed_tenants", None)
    return allowed is None or external_id in allowed


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        # straight from META: request.headers would build a dict of every header on each call
        header = request._request.META.get("HTTP_AUTHORIZATION", "")
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <api key>'.")
        raw = raw.strip()
        prefix = parse_prefix(raw)
        if prefix is None:
            raise exceptions.AuthenticationFailed("The API key is not valid.")
        digest = hash_key(raw)
        key = key_cache.get(digest, settings.KEYCORE_REVOCATION_POLL)
        if key is None:
            key = _load(prefix, digest)
            if key is None:
                raise exceptions.AuthenticationFailed("The API key is not valid.")
            if key.revoked_at is None:
                key_cache.put(digest, key)
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("The API key was revoked.")
        now = timezone.now()
        if key.expires_at is not None and key.expires_at <= now:
            raise exceptions.AuthenticationFailed("The API key has expired.")
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            api_key_mark_used(key=key, at=now)
        request._request.api_key = key
        return (None, key)

    def authenticate_header(self, request):
        return 'Bearer realm="keycore"'
