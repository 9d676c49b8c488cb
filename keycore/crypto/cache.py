"""The in-process cache of unwrapped tenant keys.

Unwrapping a tenant key is a KMS round trip; encrypting a document is a few
microseconds. The cache bridges the two, and is where revocation has to bite:

* every entry expires ``ttl`` seconds after it was stored, so a key disabled
  inside a tenant's KMS stops working within the TTL;
* an explicit revocation bumps a counter in the database (the *epoch*). Given
  an ``epoch_source`` that reads it, the cache checks at most once per
  ``epoch_interval`` seconds and empties itself when the value changed, so a
  revoke reaches every process within about that interval.

One thread reads the epoch while the others go on serving; but what they serve is
only as good as the last read. If a read hangs (a database that stopped answering
without closing the connection), nothing would ever empty the cache again until
its entries expired. So a cache that has not *completed* a read for more than
twice ``epoch_interval`` serves nothing: a caller waits up to one interval for the
read in flight, and then gets :class:`~keycore.errors.RevocationStatusUnknown`
(retryable) instead of a key that may have been revoked meanwhile.

Keys live in process memory only, never in Redis or the database. The hot path
is a clock read, a comparison and a dict lookup under a lock; the epoch check is
amortised over ``epoch_interval``. Hits, misses and evictions are plain integers
bumped under that lock (:attr:`TenantKeyCache.hits` …); ``keycore.metrics`` copies
them into Prometheus counters every few seconds, off the hot path.

Filling the cache races with revocation: a key fetched just before a revoke
could be stored just after the cache was emptied. Callers close that window by
reading :attr:`TenantKeyCache.generation` before fetching and passing it to
:meth:`TenantKeyCache.put`, which drops the entry if the cache was emptied or
invalidated in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from keycore import errors

logger = logging.getLogger(__name__)

#: what is cached: TenantKeyHandle for tenant keys; services may keep other per-tenant
#: lookups that must also be dropped on revocation in a cache of their own
V = TypeVar("V")
_NEVER = float("inf")
_UNKNOWN = object()


class TenantKeyCache(Generic[V]):
    """Thread-safe LRU of :class:`TenantKeyHandle` (or any value) with a per-entry TTL and epoch-driven clearing."""

    def __init__(
        self,
        *,
        ttl: float = 300,
        max_entries: int = 10000,
        epoch_source: Callable[[], int] | None = None,
        epoch_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if epoch_interval < 0:
            raise ValueError("epoch_interval cannot be negative")
        self.ttl = float(ttl)
        self.max_entries = max_entries
        self.epoch_interval = float(epoch_interval)
        self._clock = clock
        self._epoch_source = epoch_source
        self._entries: OrderedDict[Hashable, tuple[V, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._epoch_lock = threading.Lock()
        self._epoch: object = _UNKNOWN
        # The first lookup reads the epoch; without a source there is nothing to check.
        self._next_epoch_check = -_NEVER if epoch_source is not None else _NEVER
        #: since when the entries are known to reflect every revocation: the start of the last completed read
        #: (or the moment a failed read emptied the cache)
        self._checked_at = -_NEVER
        #: what is older than this is not served while another thread's read is in flight
        self.max_staleness = 2 * self.epoch_interval
        #: how long after a read started a caller still waits for it before it refuses
        self._stale_wait = max(self.epoch_interval, 0.25)
        self._read_started_at = -_NEVER
        self._reading = False
        self._generation = 0
        #: lookups that found a live entry / found none (absent or expired); entries dropped to stay within
        #: ``max_entries``. Monotonic for the life of the cache (clearing does not reset them).
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    # -- reads -----------------------------------------------------------------

    def get(self, key: Hashable) -> V | None:
        """The cached handle for ``key``, or None when absent or expired.

        Raises :class:`~keycore.errors.RevocationStatusUnknown` when the revocation
        epoch has not been read for more than ``max_staleness`` seconds.
        """
        now = self._clock()
        if now >= self._next_epoch_check:
            self._check_epoch(now)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            if now >= entry[1]:
                del self._entries[key]
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    @property
    def epoch_read_age(self) -> float | None:
        """Seconds since the revocation epoch was last read completely (None: never, or no epoch source)."""
        if self._epoch_source is None or self._checked_at == -_NEVER:
            return None
        return self._clock() - self._checked_at

    @property
    def generation(self) -> int:
        """Changes whenever entries are invalidated or cleared; see :meth:`put`."""
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<TenantKeyCache entries={len(self._entries)} ttl={self.ttl:g}s max={self.max_entries}>"

    # -- writes ----------------------------------------------------------------

    def put(
        self,
        key: Hashable,
        handle: V,
        *,
        ttl: float | None = None,
        generation: int | None = None,
    ) -> bool:
        """Store ``handle`` for ``ttl`` seconds (default: the cache's TTL); evicts the least recently used.

        With ``generation`` (read from :attr:`generation` before the key was fetched),
        nothing is stored if an invalidation happened since; returns whether it was stored.
        """
        now = self._clock()
        if now >= self._next_epoch_check:
            try:
                self._check_epoch(now)
            except errors.RevocationStatusUnknown:
                return False  # nothing is stored that could not be served
        expires = now + (self.ttl if ttl is None else ttl)
        with self._lock:
            if generation is not None and generation != self._generation:
                return False
            entries = self._entries
            entries[key] = (handle, expires)
            entries.move_to_end(key)
            while len(entries) > self.max_entries:
                entries.popitem(last=False)
                self.evictions += 1
        return True

    def invalidate(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._generation += 1

    def invalidate_where(self, predicate: Callable[[Hashable, V], bool]) -> int:
        """Drop every entry for which ``predicate(key, handle)`` is true; returns how many."""
        with self._lock:
            doomed = [k for k, (handle, _) in self._entries.items() if predicate(k, handle)]
            for k in doomed:
                del self._entries[k]
            self._generation += 1
        return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation += 1

    # -- revocation epoch ------------------------------------------------------

    def observe_epoch(self, epoch: int) -> None:
        """Take an epoch value the caller has just read itself (fresher than the last poll): empty the cache
        if it moved. What hands keys out of the process (the SDK's leases) checks this way on every call,
        so that it never waits for the next poll."""
        with self._epoch_lock:
            if epoch != self._epoch:
                self._epoch = epoch
                self.clear()

    def _check_epoch(self, now: float) -> None:
        # One thread reads the epoch; the others go on with the cache as it is while
        # its last completed read is at most max_staleness old. Past that they wait for
        # the read in flight (at most _stale_wait after it started) rather than serve
        # what a revocation may have changed, and then refuse.
        if not self._epoch_lock.acquire(blocking=False):
            if now - self._checked_at <= self.max_staleness:
                return
            in_flight = now - self._read_started_at if self._reading else 0.0
            if not self._epoch_lock.acquire(timeout=max(self._stale_wait - in_flight, 0.0)):
                raise errors.RevocationStatusUnknown(
                    "KeyCore could not confirm that no key was revoked: its check of the revocation list has not "
                    f"completed for {self._clock() - self._checked_at:.1f}s (is the database answering?). No cached "
                    "key is used until it does; retry shortly."
                )
            now = self._clock()
        try:
            if now < self._next_epoch_check:
                return
            self._read_started_at, self._reading = now, True
            try:
                epoch = self._epoch_source()  # type: ignore[misc]
            except Exception:
                # Revocations cannot be seen right now: fail closed and try again next interval.
                logger.warning("Could not read the key revocation epoch; emptying the tenant key cache.", exc_info=True)
                self._epoch = _UNKNOWN
                self.clear()
                failed_at = self._clock()
                self._checked_at = failed_at  # what is cached from now on was fetched after the failure
                self._next_epoch_check = failed_at + self.epoch_interval
                return
            if epoch != self._epoch:
                self._epoch = epoch
                self.clear()
            # the read reflects every revocation committed before it started
            self._checked_at = now
            self._next_epoch_check = now + self.epoch_interval
        finally:
            self._reading = False
            self._epoch_lock.release()
