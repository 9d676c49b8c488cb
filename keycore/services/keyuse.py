"""Key-use recording without a database write per operation, and without a lock on the crypto path.

The crypto path calls :meth:`KeyUseRecorder.record`, which appends one tuple —
(tenant, operation, data label, requesting id, source ip, result, key version)
— to a deque. ``deque.append`` and ``deque.popleft`` are atomic, so recording
takes no lock, reads no clock and formats nothing: it is the cheapest thing a
Python call can do and still count exactly.

Two daemon threads per process do the rest:

* the *cutter* wakes every ``KEYCORE_KEYUSE_FLUSH_INTERVAL`` seconds (default 1 s)
  **and at every minute boundary**, pops what was recorded since its last cut
  and counts it (C-speed ``Counter`` over ``popleft``), into a batch stamped with
  the minute the batch began — so a batch never spans two minutes;
* the *writer* appends pending batches as aggregated ``KeyUseEvent`` rows on each
  tenant's hash chain (:func:`keycore.services.events.keyuse_append`). A slow or
  failing database delays only the writer; cutting goes on, and pending counts
  are small (one integer per distinct bucket and minute), kept for the next try.

The process flushes once more when it exits normally (``atexit``; Celery pool
children on ``worker_process_shutdown``); an explicit :meth:`flush` stamps its
batch with the minute of the flush.

What a hard crash (SIGKILL, power loss) loses: the uses recorded since the last
successful write — one flush interval when the database keeps up. Admin audit
events are written in the same transaction as their change and lose nothing
(docs/events.md; tests/events/test_events_keyuse_crash.py).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter, deque
from datetime import UTC, datetime
from itertools import repeat, starmap

from django.conf import settings
from django.db import close_old_connections, connection

from keycore.services.events import keyuse_append

log = logging.getLogger(__name__)

LABEL_MAX = 100
REQUESTING_MAX = 200
SOURCE_IP_MAX = 64
OPERATION_MAX = 16
RESULT_MAX = 40
#: items counted per step while draining; between steps other threads may run (bounded GIL hold)
DRAIN_CHUNK = 20_000
#: distinct buckets kept interned between cuts before the table starts afresh
BUCKETS_MAX = 50_000

# (tenant_id, operation, label, requesting_id, source_ip, result, key_version)
Bucket = tuple[int, str, str, str, str, str, "int | None"]
# (minute as seconds since the epoch // 60, counts)
Batch = tuple[int, dict[Bucket, int]]


def _drain(queue: deque) -> dict[Bucket, int]:
    """Pop and count what is in ``queue`` now; what is appended meanwhile stays for the next drain."""
    remaining = len(queue)
    counts: Counter = Counter()
    while remaining > 0:
        step = min(remaining, DRAIN_CHUNK)
        counts.update(starmap(queue.popleft, repeat((), step)))
        remaining -= step
        if remaining:
            time.sleep(0)
    # uses recorded with count > 1 arrive as (bucket, count)
    for item in [item for item in counts if len(item) == 2]:
        bucket, each = item
        counts[bucket] += each * counts.pop(item)
    return dict(counts)


class KeyUseRecorder:
    """Per-process key-use counters: a lock-free deque, cut into per-minute batches, written by a thread.

    ``enabled`` switches recording off entirely (the benchmark's "events off").
    """

    def __init__(self, *, interval: float = 1.0, enabled: bool = True, clock=time.time) -> None:
        self.interval = interval
        self.enabled = enabled
        self.clock = clock
        self._reset_state()

    def _reset_state(self) -> None:
        self._queue: deque = deque()
        self._buckets: dict[Bucket, Bucket] = {}  # interned buckets; dropped by the cutter when it grows
        self._counts = self._queue  # the name the test fixtures clear between tests
        self._lock = threading.Lock()  # cutting and the pending list
        self._write_lock = threading.Lock()  # one writer at a time
        self._pending: list[Batch] = []
        self._batch_start = self.clock()
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_writer = threading.Event()
        self._atexit_registered = getattr(self, "_atexit_registered", False)

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
        if self.enabled:
            if count == 1:
                # one shared tuple per bucket: the one built here is freed at once, so a million queued
                # uses are a million references to a few tuples, not a million objects for the GC to walk
                bucket = (tenant_id, operation, label, requesting_id, source_ip, result, key_version)
                self._queue.append(self._buckets.setdefault(bucket, bucket))
            else:
                self._queue.append(
                    ((tenant_id, operation, label, requesting_id, source_ip, result, key_version), count)
                )
            if self._thread is None:
                self._start()

    # -- batches and writing ---------------------------------------------------------------------

    def pending(self) -> int:
        """Uses recorded but not yet written."""
        queued = list(self._queue)  # one C-level copy: no other thread runs meanwhile
        in_queue = sum(item[1] if len(item) == 2 else 1 for item in queued)
        with self._lock:
            return in_queue + sum(sum(c.values()) for _, c in self._pending)

    def cut(self, *, stamp: str = "end") -> int:
        """Close the current batch: count what was recorded since the last cut.

        The flusher thread cuts at every interval and minute boundary and stamps the batch
        with the minute it *began*; an explicit cut (flush, exit) stamps the minute it *ends*.
        """
        with self._lock:
            now = self.clock()
            start, self._batch_start = self._batch_start, now
            counts = _drain(self._queue)
            if len(self._buckets) > BUCKETS_MAX:
                self._buckets = {}  # a swap, not a clear: a record() in flight keeps the tuple it got
            if not counts:
                return 0
            minute = int(start if stamp == "start" else now) // 60
            self._pending.append((minute, counts))
            return sum(counts.values())

    def write_pending(self) -> int:
        """Write every pending batch; returns the number of uses written. On failure they stay pending."""
        with self._write_lock:
            with self._lock:
                batches, self._pending = self._pending, []
            if not batches:
                return 0
            try:
                _write(batches)
            except BaseException:
                with self._lock:
                    self._pending[:0] = batches
                raise
            return sum(sum(c.values()) for _, c in batches)

    def flush(self) -> int:
        """Cut now and write everything pending; returns the number of uses written."""
        self.cut(stamp="end")
        return self.write_pending()

    def reset(self) -> None:
        """Forget everything recorded and pending (tests)."""
        with self._write_lock, self._lock:
            self._queue.clear()
            self._pending = []

    # -- the threads -------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self.interval = settings.KEYCORE_KEYUSE_FLUSH_INTERVAL
            if not settings.KEYCORE_KEYUSE_AUTOFLUSH:
                self._thread = threading.current_thread()  # marks "started": the owner flushes by hand
                return
            self._batch_start = self.clock()
            self._thread = threading.Thread(target=self._cut_loop, name="keycore-keyuse-cut", daemon=True)
            self._writer = threading.Thread(target=self._write_loop, name="keycore-keyuse-write", daemon=True)
            self._thread.start()
            self._writer.start()
        if not self._atexit_registered:
            self._atexit_registered = True
            atexit.register(self._flush_at_exit)

    def next_wait(self, now: float) -> float:
        """Seconds until the next cut: the flush interval, or just past the next minute boundary if sooner."""
        to_boundary = 60.0 - (now % 60.0)
        return max(0.001, min(self.interval, to_boundary + 0.001))

    def tick(self) -> int:
        """What the cutter does at each wake-up: cut, stamping the batch with the minute it began."""
        cut = self.cut(stamp="start")
        if cut or self._pending:
            self._wake_writer.set()
        return cut

    def _cut_loop(self) -> None:
        while not self._stop.wait(self.next_wait(self.clock())):
            try:
                self.tick()
            except Exception:  # pragma: no cover - counting cannot fail; never let the thread die
                log.exception("cutting key-use counts failed")

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            self._wake_writer.wait(max(self.interval, 0.05))
            self._wake_writer.clear()
            try:
                self.write_pending()
            except Exception:
                log.exception("writing key-use counts failed; they are kept for the next attempt")

    def _flush_at_exit(self) -> None:
        try:
            self.flush()
        except Exception:
            log.exception("flushing key-use counts at exit failed; the counts since the last write are lost")

    def stop(self) -> None:
        self._stop.set()
        self._wake_writer.set()
        self.flush()


def _write(batches: list[Batch]) -> None:
    if not connection.in_atomic_block:
        # the writer thread's connection may have gone stale between writes; never close a caller's transaction
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
    # a forked worker (gunicorn, Celery prefork) inherits uses that its parent will write,
    # and no threads: start clean
    recorder._reset_state()


os.register_at_fork(after_in_child=_after_fork_in_child)


def record(*args, **kwargs) -> None:
    recorder.record(*args, **kwargs)
