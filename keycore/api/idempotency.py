"""``Idempotency-Key`` on POSTs that create something: a retried request gets the first result, not a duplicate.

The first request with a key claims it by inserting an :class:`IdempotencyRecord`
(unique per API key and idempotency key) *before* doing any work, in its own
committed transaction; that row is the lock. Then:

* the work succeeds (2xx): the status and body are stored on the row, and every
  later request with the same key and the same request gets them back, marked
  ``Idempotent-Replayed: true``;
* the work fails (4xx/5xx): the row is deleted, so the client can fix the cause
  and retry with the same key;
* a second request arrives while the first is still running: 409
  ``idempotency-key-in-progress`` with ``Retry-After`` (one creation, never two);
* the same key arrives with another body or on another endpoint: 422
  ``idempotency-key-reused``.

"The same request" is the method, the path and the JSON body compared after
parsing (key order and whitespace do not matter). Records are kept for
``RETENTION`` and purged lazily; a claim whose request died mid-way (a killed
worker) is taken over after ``ABANDONED_AFTER``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import timedelta
from functools import wraps

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from keycore import errors
from keycore.api.problems import IdempotencyKeyInProgress, IdempotencyKeyReused
from keycore.models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200
RETENTION = timedelta(hours=24)
ABANDONED_AFTER = timedelta(minutes=10)
PURGE_EVERY = 600.0  # seconds between purges of expired records, per process
IN_PROGRESS = 0  # status_code of a claimed record whose request has not finished

_purge_lock = threading.Lock()
_purged_at = 0.0


def request_hash(method: str, path: str, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


def _purge_expired() -> None:
    global _purged_at
    with _purge_lock:
        if time.monotonic() - _purged_at < PURGE_EVERY:
            return
        _purged_at = time.monotonic()
    IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - RETENTION).delete()


def _claim(api_key, key: str, method: str, path: str, digest: str) -> tuple[IdempotencyRecord, bool]:
    """(record, True) when this request owns the key; (the earlier record, False) otherwise."""
    fields = {"method": method, "path": path[:500], "request_hash": digest, "status_code": IN_PROGRESS}
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(api_key=api_key, key=key, **fields), True
    except IntegrityError:
        pass
    record = IdempotencyRecord.objects.filter(api_key=api_key, key=key).first()
    if record is None:  # purged in between: claim again
        return _claim(api_key, key, method, path, digest)
    now = timezone.now()
    expired = record.created_at < now - RETENTION
    if expired and IdempotencyRecord.objects.filter(pk=record.pk, created_at=record.created_at).delete()[0]:
        return _claim(api_key, key, method, path, digest)  # an expired record does not bind the key any more
    if (
        record.status_code == IN_PROGRESS
        and record.request_hash == digest
        and record.created_at < now - ABANDONED_AFTER
        and IdempotencyRecord.objects.filter(
            pk=record.pk, status_code=IN_PROGRESS, created_at=record.created_at
        ).update(created_at=now)
    ):
        return record, True  # the first request died mid-way; this one takes over
    return record, False


def idempotent(method):
    """Decorate a view's ``post``: honour the ``Idempotency-Key`` header (optional) as described above."""

    @wraps(method)
    def wrapper(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return method(view, request, *args, **kwargs)
        key = key.strip()
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise errors.InvalidInput(
                f"The {HEADER} header must be 1–{MAX_KEY_LENGTH} printable characters.",
                field_errors={HEADER: ["1–200 printable characters."]},
            )
        digest = request_hash(request.method, request.path, request.body)
        _purge_expired()
        record, owner = _claim(request.auth, key, request.method, request.path, digest)
        if not owner:
            if record.request_hash != digest:
                raise IdempotencyKeyReused(
                    f"The {HEADER} {key!r} was first used for a different request "
                    f"({record.method} {record.path}); use a new key for a new request."
                )
            if record.status_code == IN_PROGRESS:
                raise IdempotencyKeyInProgress(
                    f"The first request with {HEADER} {key!r} is still running; retry shortly to get its result."
                )
            response = Response(record.response_body, status=record.status_code)
            response["Idempotent-Replayed"] = "true"
            return response
        try:
            response = method(view, request, *args, **kwargs)
        except BaseException:
            IdempotencyRecord.objects.filter(pk=record.pk).delete()
            raise
        if 200 <= response.status_code < 300:
            body = json.loads(json.dumps(response.data, cls=JSONEncoder))
            IdempotencyRecord.objects.filter(pk=record.pk).update(status_code=response.status_code, response_body=body)
        else:
            IdempotencyRecord.objects.filter(pk=record.pk).delete()
        return response

    wrapper.idempotent = True  # the schema documents the header on exactly these operations
    return wrapper
