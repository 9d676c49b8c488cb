"""Key-use recording without a database write per operation.

The crypto path calls :meth:`KeyUseRecorder.record`, which adds to an in-memory
counter keyed by (tenant, operation, data label, requesting id, source ip,
result, key version) under one uncontended lock: no clock read, no string
work, no allocation beyond the key tuple. Every counter belongs to a *batch*;
the batch is stamped with the minute of its first use.

A daemon thread cuts the batch every ``KEYCORE_KEYUSE_FLUSH_INTERVAL`` seconds
(default 1 s) *and at every minute boundary*, so a batch never spans two
minutes, and writes it as aggregated ``KeyUseEvent`` rows on each tenant's hash
chain (:func:`keycore.services.events.keyuse_append`). The process flushes once
more when it exits normally (``atexit``; Celery pool children flush on
``worker_process_shutdown``).

What a hard crash (SIGKILL, power loss) loses: the counts recorded since the
last successful flush — at most one flush interval. A flush that fails (database
down) keeps its batches and retries them with the next one. Admin audit events
are written in the same transaction as their change and lose nothing (see
docs/events.md, tested in tests/events/test_events_keyuse_crash.py).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from datetime import UTC, datetime

log = logging.getLogger(__name__)

LABEL_MAX = 100
REQUESTING_MAX = 200
SOURCE_IP_MAX = 64
OPERATION_MAX = 16
RESULT_MAX = 40

# (tenant_id, operation, label, requesting_id, source_ip, result, key_version)
Bucket = tuple[int, str, str, str, str, str, "int | None"]
# (minute as seconds since the epoch // 60, counts)
Batch = tuple[int, dict[Bucket, int]]


class KeyUseRecorder:
    """Per-process key-use counters, cut into per-minute batches and written by a flusher thread.

    ``enabled`` switches recording off entirely (the benchmark's "events off").
    """

    def __init__(self, *, interval: float = 1.0, enabled: bool = True, clock=time.time) -> None:
        self.interval = interval
        self.enabled = enabled
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: dict[Bucket, int] = {}
        self._first_use = 0.0
        self._pending: list[Batch] = []
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._atexit_registered = False

    # -- the hot path ------------------------------------------------------------------------

    def record(
        self,
        tenant_id: int,
        operation: str,
        result: str,
        label: str = "",
        requesting_id: str = "",
        source_ip: str = "",
        key_version: int | None = None,
        count: int = 1,
    ) -> None:
        """Count ``count`` uses. Strings are truncated when written, not here (keeps this path short)."""
        if not self.enabled:
            return
        bucket = (tenant_id, operation, label, requesting_id, source_ip, result, key_version)
        with self._lock:
            counts = self._counts
            seen = counts.get(bucket)
            if seen is None:
                if not counts:
                    self._first_use = self.clock()
                counts[bucket] = count
            else:
                counts[bucket] = seen + count
        if self._thread is None:
            self._start()

    # -- batches and flushing --------------------------------------------------------------------

    def pending(self) -> int:
        """Operations counted but not yet written."""
        with self._lock:
            current = sum(self._counts.values())
        return current + sum(sum(c.values()) for _, c in list(self._pending))

    def cut(self) -> None:
        """Close the current batch (stamped with the minute of its first use) and start a new one."""
        with self._lock:
            counts, self._counts = self._counts, {}
            first_use = self._first_use
        if counts:
            self._pending.append((int(first_use) // 60, counts))

    def flush(self) -> int:
        """Cut the batch and write every pending batch; returns the number of operations written.

        On failure the batches stay pending (nothing is lost while the process lives) and the
        error propagates.
        """
        with self._flush_lock:
            self.cut()
            batches, self._pending = self._pending, []
            if not batches:
                return 0
            try:
                _write(batches)
            except BaseException:
                self._pending[:0] = batches
                raise
            return sum(sum(c.values()) for _, c in batches)

    def reset(self) -> None:
        """Forget everything counted and pending (tests)."""
        with self._flush_lock, self._lock:
            self._counts = {}
            self._pending = []

    def _start(self) -> None:
        from django.conf import settings

        with self._lock:
            if self._thread is not None:
                return
            self.interval = settings.KEYCORE_KEYUSE_FLUSH_INTERVAL
            if not settings.KEYCORE_KEYUSE_AUTOFLUSH:
                self._thread = threading.current_thread()  # marks "started": the owner flushes by hand
                return
            self._thread = threading.Thread(target=self._run, name="keycore-keyuse-flush", daemon=True)
            self._thread.start()
        if not self._atexit_registered:
            self._atexit_registered = True
            atexit.register(self._flush_at_exit)

    def next_wait(self, now: float) -> float:
        """Seconds until the next cut: the flush interval, or the next minute boundary if sooner."""
        to_boundary = 60.0 - (now % 60.0)
        return max(0.001, min(self.interval, to_boundary + 0.001))

    def _run(self) -> None:
        while not self._stop.wait(self.next_wait(self.clock())):
            try:
                self.flush()
            except Exception:
                log.exception("flushing key-use counts failed; they are kept for the next attempt")

    def _flush_at_exit(self) -> None:
        try:
            self.flush()
        except Exception:
            log.exception("flushing key-use counts at exit failed; the counts since the last flush are lost")

    def stop(self) -> None:
        self._stop.set()
        self.flush()


def _write(batches: list[Batch]) -> None:
    from django.db import close_old_connections, connection

    from keycore.services.events import keyuse_append

    if not connection.in_atomic_block:
        # the flusher thread's connection may have gone stale between flushes; never close a caller's transaction
        close_old_connections()
    merged: dict[tuple, int] = {}
    for minute, counts in batches:
        for (tenant_id, operation, label, requesting_id, source_ip, result, version), n in counts.items():
            key = (
                tenant_id,
                minute,
                str(operation)[:OPERATION_MAX],
                str(label or "")[:LABEL_MAX],
                str(requesting_id or "")[:REQUESTING_MAX],
                str(source_ip or "")[:SOURCE_IP_MAX],
                str(result)[:RESULT_MAX],
                version,
            )
            merged[key] = merged.get(key, 0) + n
    rows = [
        {
            "tenant_id": tenant_id,
            "minute": datetime.fromtimestamp(minute * 60, tz=UTC),
            "operation": operation,
            "label": label,
            "requesting_id": requesting_id,
            "source_ip": source_ip,
            "result": result,
            "count": n,
            "key_version": version,
        }
        for (tenant_id, minute, operation, label, requesting_id, source_ip, result, version), n in merged.items()
    ]
    keyuse_append(rows)


recorder = KeyUseRecorder()


def _after_fork_in_child() -> None:
    # a forked worker (gunicorn, Celery prefork) inherits counts that its parent will flush,
    # and no flusher thread: start clean
    recorder._lock = threading.Lock()
    recorder._flush_lock = threading.Lock()
    recorder._counts = {}
    recorder._pending = []
    recorder._thread = None
    recorder._stop = threading.Event()


os.register_at_fork(after_in_child=_after_fork_in_child)


def record(*args, **kwargs) -> None:
    recorder.record(*args, **kwargs)
