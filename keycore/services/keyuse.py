"""Key-use recording without a database write per operation.

The crypto path calls :func:`record`, which increments an in-memory counter
keyed by (tenant, minute, operation, label, requesting id, source ip, result,
key version). A daemon thread flushes the counters to ``KeyUseEvent`` rows at
most every ``KEYCORE_KEYUSE_FLUSH`` seconds (default 1 s), and once more when the
process exits normally. A hard crash (SIGKILL, power loss) loses at most the
counts of the last flush interval; admin audit events are written in the same
transaction as their change and lose nothing (see docs/events.md).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter
from datetime import UTC, datetime

log = logging.getLogger(__name__)

LABEL_MAX = 100
REQUESTING_MAX = 200

# (tenant_id, minute_epoch, operation, label, requesting_id, source_ip, result, key_version)
Bucket = tuple[int, int, str, str, str, str, str, int | None]


class KeyUseRecorder:
    """Thread-safe counters, swapped out whole on flush so recording never waits on the database."""

    def __init__(self, *, interval: float = 1.0, enabled: bool = True) -> None:
        self.interval = interval
        self.enabled = enabled
        self._lock = threading.Lock()
        self._counts: Counter[Bucket] = Counter()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()

    def record(
        self,
        tenant_id: int,
        operation: str,
        result: str,
        *,
        label: str = "",
        requesting_id: str = "",
        source_ip: str = "",
        key_version: int | None = None,
        count: int = 1,
    ) -> None:
        if not self.enabled:
            return
        bucket = (
            tenant_id,
            int(time.time()) // 60,
            operation,
            label[:LABEL_MAX],
            requesting_id[:REQUESTING_MAX],
            source_ip[:64],
            result,
            key_version,
        )
        with self._lock:
            self._counts[bucket] += count
        if self._thread is None:
            self._start()

    def pending(self) -> int:
        with self._lock:
            return sum(self._counts.values())

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
        atexit.register(self.flush)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:
                log.exception("flushing key-use counts failed; they are kept for the next attempt")

    def flush(self) -> int:
        """Write what was counted since the last flush; returns the number of operations written."""
        with self._flush_lock:
            with self._lock:
                counts, self._counts = self._counts, Counter()
            if not counts:
                return 0
            try:
                _write(counts)
            except Exception:
                with self._lock:  # put them back: nothing is lost by a failed write
                    self._counts.update(counts)
                raise
            return sum(counts.values())

    def stop(self) -> None:
        self._stop.set()
        self.flush()


def _write(counts: Counter[Bucket]) -> None:
    from django.db import close_old_connections, transaction

    from keycore.services.events import keyuse_append

    close_old_connections()
    rows = []
    for (tenant_id, minute, operation, label, requesting_id, source_ip, result, version), n in counts.items():
        rows.append(
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
        )
    with transaction.atomic():
        keyuse_append(rows)


recorder = KeyUseRecorder()


def _after_fork_in_child() -> None:
    # a forked worker (gunicorn, Celery prefork) inherits counts that its parent will flush,
    # and no flusher thread: start clean
    recorder._lock = threading.Lock()
    recorder._flush_lock = threading.Lock()
    recorder._counts = Counter()
    recorder._thread = None
    recorder._stop = threading.Event()


os.register_at_fork(after_in_child=_after_fork_in_child)


def record(*args, **kwargs) -> None:
    recorder.record(*args, **kwargs)
