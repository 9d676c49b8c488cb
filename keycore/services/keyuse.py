"""Key-use recording without a database write per operation, and without a lock on the crypto path.

The crypto path calls :meth:`KeyUseRecorder.record`, which appends one tuple —
(tenant, operation, data label, requesting id, source ip, result, key version,
attribution) — to a deque. ``deque.append`` and ``deque.popleft`` are atomic, so
recording takes no lock, reads no clock and formats nothing: it is the cheapest
thing a Python call can do and still count exactly.

The label, requesting id and source ip are what the caller *claims*. The
attribution is what KeyCore knows: the API key that authenticated the call and
the peer address it came from (:func:`attribution`, an interned tuple).

A tenant in *detailed* mode has each operation recorded on its own
(:meth:`KeyUseRecorder.record_detail`): the same (interned) bucket with the
count, object id, request id, custom values and the time, on a second deque.
The writer groups them into rows of the same buckets as the counts (so sums stay
exact) that also list every operation.

Two daemon threads per process do the rest:

* the *cutter* wakes every ``KEYCORE_KEYUSE_FLUSH_INTERVAL`` seconds (default 1 s)
  **and at every minute boundary**, pops what was recorded since its last cut
  and counts it (C-speed ``Counter`` over ``popleft``), into a batch stamped with
  the minute the batch began — so a batch never spans two minutes;
* the *writer* appends pending batches as aggregated ``KeyUseEvent`` rows on each
  tenant's hash chain (:func:`keycore.services.events.keyuse_append`). A slow or
  failing database delays only the writer; cutting goes on, and pending counts
  are small (one integer per distinct bucket and minute), kept for the next try.
  A row the database refuses while it is reachable (a value it cannot store) is
  isolated: the others are written, that one is logged, counted in
  :attr:`KeyUseRecorder.rejected_uses` and dropped — never retried for ever.

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
import json
import logging
import math
import os
import threading
import time
from collections import Counter, defaultdict, deque
from datetime import UTC, datetime
from itertools import chain, repeat, starmap
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from keycore import metrics
from keycore.models.keys import KEY_VERSION_MAX
from keycore.services.events import keyuse_append

log = logging.getLogger(__name__)

LABEL_MAX = 100
REQUESTING_MAX = 200
SOURCE_IP_MAX = 64
OPERATION_MAX = 16
RESULT_MAX = 40
OBJECT_ID_MAX = 200
REQUEST_ID_MAX = 200
API_KEY_NAME_MAX = 120
#: items counted per step while draining; between steps other threads may run (bounded GIL hold)
DRAIN_CHUNK = 20_000
#: distinct buckets kept interned between cuts before the table starts afresh
BUCKETS_MAX = 50_000
#: distinct (API key, peer address) attributions kept interned before the table starts afresh
ATTRIBUTIONS_MAX = 10_000
#: operations listed in one detailed row at most, and roughly how many bytes of them (a syslog message each)
DETAIL_ROW_OPERATIONS = 100
DETAIL_ROW_BYTES = 16_384


#: who really called, as KeyCore knows it: (API key id, prefix, name, peer address). A plain tuple of
#: strings, interned by :func:`attribution`, so buckets holding it stay cheap to hash and, holding
#: nothing but strings and numbers, are left alone by the garbage collector.
Attribution = tuple


_attributions: dict[tuple, tuple] = {}


def attribution(api_key: Any, peer_ip: str | None) -> Attribution | None:
    """The attribution of calls made with ``api_key`` (an ``ApiKey``, or None in process) from ``peer_ip``.

    What the REST API passes with every crypto call, and what an endpoint that reports uses
    counted elsewhere (the SDK's) passes with its report.
    """
    peer_ip = peer_ip or ""
    if api_key is None:
        if not peer_ip:
            return None
        key: tuple = (None, "", "", peer_ip)
    else:
        key = (str(api_key.uid), api_key.prefix, api_key.name, peer_ip)
    found = _attributions.get(key)
    if found is None:
        if len(_attributions) >= ATTRIBUTIONS_MAX:
            _attributions.clear()  # tuples in flight stay valid: equal ones are equal by value
        found = _attributions.setdefault(key, key)
    return found


# (tenant_id, operation, label, requesting_id, source_ip, result, key_version, attribution)
Bucket = tuple[int, str, str, str, str, str, "int | None", "Attribution | None"]
# (minute as seconds since the epoch // 60, counts)
Batch = tuple[int, dict[Bucket, int]]
# (bucket, count, object_id, request_id, custom, time in seconds since the epoch)
Detail = tuple


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


def _take(queue: deque) -> list:
    """Pop what is in ``queue`` now, in order (in steps, so other threads run between them)."""
    taken: list = []
    remaining = len(queue)
    while remaining > 0:
        step = min(remaining, DRAIN_CHUNK)
        taken.extend(starmap(queue.popleft, repeat((), step)))
        remaining -= step
        if remaining:
            time.sleep(0)
    return taken


class KeyUseRecorder:
    """Per-process key-use counters: a lock-free deque, cut into per-minute batches, written by a thread.

    ``enabled`` switches recording off entirely (the benchmark's "events off").
    ``rejected_rows`` / ``rejected_uses`` count what the database refused and was dropped;
    ``details_folded`` counts detailed operations kept as counts only, because the database
    was too far behind (``KEYCORE_KEYUSE_DETAIL_BACKLOG``).
    """

    def __init__(self, *, interval: float = 1.0, enabled: bool = True, clock=time.time) -> None:
        self.interval = interval
        self.enabled = enabled
        self.clock = clock
        self.rejected_rows = 0
        self.rejected_uses = 0
        self.details_folded = 0
        self._reset_state()

    def _reset_state(self) -> None:
        self._queue: deque = deque()
        self._details: deque = deque()
        self._buckets: dict[Bucket, Bucket] = {}  # interned buckets; dropped by the cutter when it grows
        self._counts = self._queue  # the name the test fixtures clear between tests
        self._lock = threading.Lock()  # cutting and the pending lists
        self._write_lock = threading.Lock()  # one writer at a time
        self._pending: list[Batch] = []
        self._pending_details: list[Detail] = []
        self._unwritten: list[dict[str, Any]] = []  # rows built but not written (the database was unreachable)
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
        via: Attribution | None = None,
    ) -> None:
        """Count ``count`` uses. Strings are truncated when written, not here (keeps this path short)."""
        if self.enabled:
            if count == 1:
                # one shared tuple per bucket: the one built here is freed at once, so a million queued
                # uses are a million references to a few tuples, not a million objects for the GC to walk
                bucket = (tenant_id, operation, label, requesting_id, source_ip, result, key_version, via)
                self._queue.append(self._buckets.setdefault(bucket, bucket))
            else:
                self._queue.append(
                    ((tenant_id, operation, label, requesting_id, source_ip, result, key_version, via), count)
                )
            if self._thread is None:
                self._start()

    def record_detail(
        self,
        tenant_id: int,
        operation: str,
        result: str,
        label: str,
        requesting_id: str,
        source_ip: str,
        key_version: int | None,
        count: int,
        via: Attribution | None,
        object_id: str,
        request_id: str,
        custom: Any,
    ) -> None:
        """Record one operation on its own (a tenant in detailed mode): when, on which object, in which request."""
        if self.enabled:
            bucket = (tenant_id, operation, label, requesting_id, source_ip, result, key_version, via)
            # no empty dict in the tuple: a tuple of strings and numbers is soon untracked by the garbage
            # collector, one holding a dict never is (and a second's worth of them would be walked again and again)
            self._details.append(
                (self._buckets.setdefault(bucket, bucket), count, object_id, request_id, custom or None, self.clock())
            )
            if self._thread is None:
                self._start()

    # -- batches and writing ---------------------------------------------------------------------

    def pending(self) -> int:
        """Uses recorded but not yet written."""
        queued = list(self._queue)  # one C-level copy: no other thread runs meanwhile
        in_queue = sum(item[1] if len(item) == 2 else 1 for item in queued)
        in_queue += sum(item[1] for item in list(self._details))
        with self._lock:
            return (
                in_queue
                + sum(sum(c.values()) for _, c in self._pending)
                + sum(item[1] for item in self._pending_details)
                + sum(row["count"] for row in self._unwritten)
            )

    def cut(self, *, stamp: str = "end") -> int:
        """Close the current batch: count what was recorded since the last cut.

        The flusher thread cuts at every interval and minute boundary and stamps the batch
        with the minute it *began*; an explicit cut (flush, exit) stamps the minute it *ends*.
        Detailed operations carry their own time.
        """
        with self._lock:
            now = self.clock()
            start, self._batch_start = self._batch_start, now
            counts = _drain(self._queue)
            details = _take(self._details)
            if len(self._buckets) > BUCKETS_MAX:
                self._buckets = {}  # a swap, not a clear: a record() in flight keeps the tuple it got
            if details:
                self._pending_details.extend(details)
                self._fold_excess_details()
            detailed = sum(item[1] for item in details)
            # the Prometheus counters, from what was just counted: nothing more on the crypto path
            metrics.count_crypto_operations(
                chain(
                    ((bucket[1], bucket[5], count) for bucket, count in counts.items()),
                    ((item[0][1], item[0][5], item[1]) for item in details),
                )
            )
            if not counts:
                return detailed
            minute = int(start if stamp == "start" else now) // 60
            self._pending.append((minute, counts))
            return sum(counts.values()) + detailed

    def _fold_excess_details(self) -> None:
        """Past the backlog limit, keep the oldest detailed operations as counts only (never lose a use)."""
        excess = len(self._pending_details) - settings.KEYCORE_KEYUSE_DETAIL_BACKLOG
        if excess <= 0:
            return
        folded, self._pending_details = self._pending_details[:excess], self._pending_details[excess:]
        by_minute: dict[int, Counter] = defaultdict(Counter)
        for bucket, count, *_, at in folded:
            by_minute[int(at) // 60][bucket] += count
        self._pending[:0] = [(minute, dict(counts)) for minute, counts in sorted(by_minute.items())]
        self.details_folded += len(folded)
        log.warning(
            "key-use details: %d operations kept as counts only; the database is too far behind "
            "(KEYCORE_KEYUSE_DETAIL_BACKLOG = %d)",
            len(folded),
            settings.KEYCORE_KEYUSE_DETAIL_BACKLOG,
        )

    def write_pending(self) -> int:
        """Write every pending batch; returns the number of uses written.

        If the database cannot be reached, everything stays pending for the next try (and the
        error is raised). If it can, a row it refuses is isolated: the others are written, that
        one is logged, counted and dropped.
        """
        with self._write_lock:
            with self._lock:
                batches, self._pending = self._pending, []
                details, self._pending_details = self._pending_details, []
                rows, self._unwritten = self._unwritten, []
            rows.extend(_rows(batches, details))
            if not rows:
                return 0
            try:
                _append(rows)
            except Exception:
                if _database_reachable():
                    return self._write_isolated(rows)
                self._keep_unwritten(rows)
                raise
            except BaseException:
                self._keep_unwritten(rows)
                raise
            return sum(row["count"] for row in rows)

    def _write_isolated(self, rows: list[dict[str, Any]]) -> int:
        """Write tenant by tenant, then row by row where a tenant's rows fail; drop what the database refuses."""
        by_tenant: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_tenant[row["tenant_id"]].append(row)
        written = 0
        groups = list(by_tenant.values())
        for index, group in enumerate(groups):
            try:
                _append(group)
                written += sum(row["count"] for row in group)
                continue
            except Exception:
                if not _database_reachable():
                    self._keep_unwritten([row for g in groups[index:] for row in g])
                    raise
            for position, row in enumerate(group):
                problem = None
                for _ in range(2):  # once more, in case the first failure was the database's, not the row's
                    try:
                        _append([row])
                    except Exception as exc:
                        if not _database_reachable():
                            self._keep_unwritten(group[position:] + [r for g in groups[index + 1 :] for r in g])
                            raise
                        problem = exc
                    else:
                        problem = None
                        written += row["count"]
                        break
                if problem is not None:
                    self.rejected_rows += 1
                    self.rejected_uses += row["count"]
                    log.error(
                        "the database refused a key-use row; it is dropped (%d uses): %s: %s",
                        row["count"],
                        _describe(row),
                        f"{type(problem).__name__}: {problem}"[:300],
                    )
        return written

    def _keep_unwritten(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._unwritten[:0] = rows

    def flush(self) -> int:
        """Cut now and write everything pending; returns the number of uses written."""
        self.cut(stamp="end")
        return self.write_pending()

    def reset(self) -> None:
        """Forget everything recorded and pending (tests)."""
        with self._write_lock, self._lock:
            self._queue.clear()
            self._details.clear()
            self._pending = []
            self._pending_details = []
            self._unwritten = []

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
        if cut or self._pending or self._pending_details or self._unwritten:
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


def _database_reachable() -> bool:
    """Whether the database answers now: tells a refused row from a database that is down."""
    try:
        if not connection.in_atomic_block:
            close_old_connections()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:
        return False
    return True


def _describe(row: dict[str, Any]) -> str:
    shown = {k: row.get(k) for k in ("tenant_id", "minute", "operation", "result", "label", "requesting_id")}
    shown["key_version"] = row.get("key_version")
    return repr(shown)[:500]


def _attributed(via: Attribution | None) -> tuple[str | None, str, str, str]:
    if not via:
        return None, "", "", ""
    uid, prefix, name, peer = via
    return uid, str(prefix or "")[:16], str(name or "")[:API_KEY_NAME_MAX], str(peer or "")[:SOURCE_IP_MAX]


def _bucket_key(bucket: tuple, minute: int) -> tuple:
    """A bucket as the strings it is written with (equal buckets of different objects merge here)."""
    tenant_id, operation, label, requesting_id, source_ip, result, version, via = bucket
    return (
        tenant_id,
        minute,
        str(operation)[:OPERATION_MAX],
        str(label or "")[:LABEL_MAX],
        str(requesting_id or "")[:REQUESTING_MAX],
        str(source_ip or "")[:SOURCE_IP_MAX],
        str(result)[:RESULT_MAX],
        version if version is None or 0 <= version <= KEY_VERSION_MAX else None,
        *_attributed(via),
    )


def _row(key: tuple, count: int, details: str = "") -> dict[str, Any]:
    tenant_id, minute, operation, label, requesting_id, source_ip, result, version, uid, prefix, name, peer = key
    return {
        "tenant_id": tenant_id,
        "minute": datetime.fromtimestamp(minute * 60, tz=UTC),
        "operation": operation,
        "label": label,
        "requesting_id": requesting_id,
        "source_ip": source_ip,
        "result": result,
        "count": count,
        "key_version": version,
        "api_key_uid": uid,
        "api_key_prefix": prefix,
        "api_key_name": name,
        "peer_ip": peer,
        "details": details,
    }


def _rows(batches: list[Batch], details: list[Detail]) -> list[dict[str, Any]]:
    """The rows to append: one per bucket and minute for counts; for detailed operations, rows of the same
    buckets listing each operation (``[time in ms, object id, request id, custom, count]``, canonical JSON),
    at most ``DETAIL_ROW_OPERATIONS`` and about ``DETAIL_ROW_BYTES`` each."""
    merged: dict[tuple, int] = {}
    for minute, counts in batches:
        for bucket, n in counts.items():
            key = _bucket_key(bucket, minute)
            merged[key] = merged.get(key, 0) + n
    rows = [_row(key, n) for key, n in merged.items()]
    if not details:
        return rows
    grouped: dict[tuple, list[Detail]] = {}
    for item in details:  # the hottest loop of detailed mode: one dict lookup per operation
        grouped.setdefault(item[0], []).append(item)
    keys: dict[tuple, tuple] = {}
    for bucket, items in grouped.items():
        chunk: list[list] = []
        size = n = 0
        chunk_minute = None
        for _, count, object_id, request_id, custom, at in items:
            minute = int(at) // 60
            if chunk and (minute != chunk_minute or len(chunk) >= DETAIL_ROW_OPERATIONS or size >= DETAIL_ROW_BYTES):
                rows.append(_row(keys[bucket, chunk_minute], n, _details_json(chunk)))
                chunk, size, n = [], 0, 0
            if chunk_minute != minute:
                chunk_minute = minute
                if (bucket, minute) not in keys:
                    keys[bucket, minute] = _bucket_key(bucket, minute)
            if type(object_id) is not str or len(object_id) > OBJECT_ID_MAX:
                object_id = str(object_id or "")[:OBJECT_ID_MAX]
            if type(request_id) is not str or len(request_id) > REQUEST_ID_MAX:
                request_id = str(request_id or "")[:REQUEST_ID_MAX]
            if custom:
                custom = _plain_custom(custom)
                size += sum(len(name) + len(str(value)) + 6 for name, value in custom.items())
            else:
                custom = None
            size += 40 + len(object_id) + len(request_id)
            chunk.append([int(at * 1000), object_id, request_id, custom, count])
            n += count
        if chunk:
            rows.append(_row(keys[bucket, chunk_minute], n, _details_json(chunk)))
    return rows


def _plain_custom(custom: Any) -> dict[str, Any] | None:
    """Custom values as JSON can carry them exactly: strings, finite numbers, booleans, null; anything else
    (an in-process caller's object) as its text."""
    try:
        items = dict(custom).items()
    except (TypeError, ValueError):
        return {"value": str(custom)}
    plain: dict[str, Any] = {}
    for name, value in items:
        if value is None or type(value) in (str, bool, int) or (type(value) is float and math.isfinite(value)):
            plain[str(name)] = value
        else:
            plain[str(name)] = str(value)
    return plain


def _details_json(chunk: list[list]) -> str:
    # ASCII-escaped: whatever an in-process caller passed, the text is storable in any database
    return json.dumps(chunk, separators=(",", ":"), sort_keys=True, allow_nan=False, default=str)


def _append(rows: list[dict[str, Any]]) -> None:
    if not connection.in_atomic_block:
        # the writer thread's connection may have gone stale between writes; never close a caller's transaction
        close_old_connections()
    keyuse_append(rows)


recorder = KeyUseRecorder()


def _after_fork_in_child() -> None:
    # a forked worker (gunicorn, Celery prefork) inherits uses that its parent will write,
    # and no threads: start clean
    recorder._reset_state()


os.register_at_fork(after_in_child=_after_fork_in_child)


def record(*args, **kwargs) -> None:
    recorder.record(*args, **kwargs)


def record_reported(
    *,
    tenant_id: int,
    operation: str,
    result: str,
    count: int,
    api_key: Any,
    peer_ip: str | None,
    label: str = "",
    requesting_id: str = "",
    source_ip: str = "",
    key_version: int | None = None,
) -> None:
    """Count uses that happened elsewhere and were reported to KeyCore (the SDK's leased keys), attributed
    to the API key that reported them and the address the report came from, like a crypto call's."""
    if count > 0:
        recorder.record(
            tenant_id,
            operation,
            result,
            label,
            requesting_id,
            source_ip,
            key_version,
            count,
            attribution(api_key, peer_ip),
        )
