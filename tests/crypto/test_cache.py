"""The tenant-key cache: TTL, LRU bound, revocation epoch, threads. No sleeping: the clock is injected."""

from __future__ import annotations

import os
import threading

import pytest

from keycore import errors
from keycore.crypto.cache import TenantKeyCache
from keycore.crypto.envelope import TenantKeyHandle, new_tenant_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Epoch:
    """A revocation counter as the database would hold it; counts how often it is read."""

    def __init__(self) -> None:
        self.value = 0
        self.reads = 0
        self.broken = False

    def __call__(self) -> int:
        self.reads += 1
        if self.broken:
            raise ConnectionError("database unavailable")
        return self.value


def handle(version: int = 1) -> TenantKeyHandle:
    return TenantKeyHandle(os.urandom(16), version, new_tenant_key())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def epoch() -> Epoch:
    return Epoch()


def test_a_stored_handle_is_returned(clock):
    cache = TenantKeyCache(clock=clock)
    h = handle()
    cache.put(("t", 1), h)
    assert cache.get(("t", 1)) is h
    assert cache.get(("t", 2)) is None
    assert len(cache) == 1


def test_entries_expire_after_the_ttl(clock):
    cache = TenantKeyCache(ttl=300, clock=clock)
    h = handle()
    cache.put("k", h)
    clock.advance(299.9)
    assert cache.get("k") is h
    clock.advance(0.1)
    assert cache.get("k") is None
    assert len(cache) == 0


def test_the_ttl_is_per_entry(clock):
    cache = TenantKeyCache(ttl=300, clock=clock)
    cache.put("early", handle())
    clock.advance(200)
    cache.put("late", handle())
    cache.put("short", handle(), ttl=10)
    clock.advance(11)
    assert cache.get("short") is None
    clock.advance(100)
    assert cache.get("early") is None
    assert cache.get("late") is not None


def test_reading_does_not_extend_the_ttl(clock):
    cache = TenantKeyCache(ttl=60, clock=clock)
    cache.put("k", handle())
    for _ in range(5):
        clock.advance(10)
        assert cache.get("k") is not None
    clock.advance(10)
    assert cache.get("k") is None


def test_the_least_recently_used_entry_is_evicted_at_the_bound(clock):
    cache = TenantKeyCache(max_entries=3, clock=clock)
    for key in "abc":
        cache.put(key, handle())
    cache.get("a")  # now b is the least recently used
    cache.put("d", handle())
    assert len(cache) == 3
    assert cache.get("b") is None
    assert all(cache.get(k) is not None for k in "acd")


def test_the_bound_holds_under_many_puts(clock):
    cache = TenantKeyCache(max_entries=100, clock=clock)
    h = handle()
    for i in range(10_000):
        cache.put(i, h)
    assert len(cache) == 100
    assert cache.get(9_999) is h
    assert cache.get(0) is None


def test_putting_an_existing_key_replaces_it_and_refreshes_it(clock):
    cache = TenantKeyCache(ttl=100, max_entries=2, clock=clock)
    first, second = handle(), handle()
    cache.put("a", first)
    cache.put("b", handle())
    clock.advance(90)
    cache.put("a", second)
    cache.put("c", handle())  # evicts b, not the refreshed a
    clock.advance(50)
    assert cache.get("a") is second
    assert cache.get("b") is None


def test_invalidate_and_clear(clock):
    cache = TenantKeyCache(clock=clock)
    a1, a2, b1 = handle(1), handle(2), handle(1)
    cache.put(("a", 1), a1)
    cache.put(("a", 2), a2)
    cache.put(("b", 1), b1)
    cache.invalidate(("a", 1))
    cache.invalidate("never stored")
    assert cache.get(("a", 1)) is None
    assert cache.get(("a", 2)) is a2
    assert cache.invalidate_where(lambda key, h: key[0] == "a") == 1
    assert cache.get(("a", 2)) is None
    assert cache.get(("b", 1)) is b1
    assert cache.invalidate_where(lambda key, h: h.tenant_uid == b1.tenant_uid) == 1
    cache.put("x", handle())
    cache.clear()
    assert len(cache) == 0


def test_a_changed_epoch_empties_the_cache_within_the_interval(clock, epoch):
    cache = TenantKeyCache(epoch_source=epoch, epoch_interval=1.0, clock=clock)
    cache.put("k", handle())
    assert cache.get("k") is not None
    epoch.value += 1  # a revocation somewhere
    clock.advance(0.5)
    assert cache.get("k") is not None  # not checked yet: at most one interval stale
    clock.advance(0.5)
    assert cache.get("k") is None


def test_an_unchanged_epoch_keeps_the_cache(clock, epoch):
    cache = TenantKeyCache(epoch_source=epoch, epoch_interval=1.0, clock=clock)
    cache.put("k", handle())
    for _ in range(10):
        clock.advance(1.0)
        assert cache.get("k") is not None


def test_the_epoch_is_read_at_most_once_per_interval(clock, epoch):
    cache = TenantKeyCache(epoch_source=epoch, epoch_interval=1.0, clock=clock)
    cache.put("k", handle())
    for _ in range(1000):
        cache.get("k")
        clock.advance(0.01)  # ten seconds in all
    assert 10 <= epoch.reads <= 11


def test_an_unreadable_epoch_fails_closed(clock, epoch, caplog):
    cache = TenantKeyCache(epoch_source=epoch, epoch_interval=1.0, clock=clock)
    cache.put("k", handle())
    epoch.broken = True
    clock.advance(1.0)
    assert cache.get("k") is None
    assert "revocation epoch" in caplog.text
    epoch.broken = False
    cache.put("k", handle())
    clock.advance(1.0)
    cache.get("k")  # the first good read after a failure re-establishes the baseline
    cache.put("k", handle())
    clock.advance(1.0)
    assert cache.get("k") is not None


def test_without_an_epoch_source_nothing_is_checked(clock):
    cache = TenantKeyCache(clock=clock)
    cache.put("k", handle())
    clock.advance(299)
    assert cache.get("k") is not None


def test_a_put_racing_an_invalidation_is_dropped(clock, epoch):
    cache = TenantKeyCache(epoch_source=epoch, clock=clock)
    cache.get("k")
    generation = cache.generation  # read before fetching the key from the database and the KMS
    epoch.value += 1  # ...the key is revoked meanwhile
    clock.advance(1.0)
    cache.get("other")  # the epoch check empties the cache
    assert cache.put("k", handle(), generation=generation) is False
    assert cache.get("k") is None
    assert cache.put("k", handle(), generation=cache.generation) is True
    assert cache.get("k") is not None


def test_an_explicit_invalidation_also_drops_racing_puts(clock):
    cache = TenantKeyCache(clock=clock)
    generation = cache.generation
    cache.invalidate(("t", 1))
    assert cache.put(("t", 1), handle(), generation=generation) is False


@pytest.mark.parametrize(
    "kwargs", [{"ttl": 0}, {"ttl": -1}, {"max_entries": 0}, {"epoch_interval": -1}], ids=lambda k: str(k)
)
def test_nonsense_settings_are_refused(kwargs):
    with pytest.raises(ValueError):  # noqa: PT011 - the message is for the operator, the type is what matters
        TenantKeyCache(**kwargs)


def test_repr_shows_no_keys(clock):
    cache = TenantKeyCache(clock=clock)
    h = handle()
    cache.put("k", h)
    assert "entries=1" in repr(cache)


def test_threads_share_the_cache_safely(epoch):
    """Smoke test: many threads reading, writing, invalidating and clearing; the bound holds, nothing raises."""
    cache = TenantKeyCache(max_entries=50, epoch_source=epoch, epoch_interval=0.0)
    handles = [handle(v) for v in range(200)]
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        try:
            start.wait()
            for i in range(3000):
                key = (seed * 7 + i) % 200
                if i % 3 == 0:
                    cache.put(key, handles[key])
                got = cache.get(key)
                assert got is None or got is handles[key]
                if i % 97 == 0:
                    cache.invalidate(key)
                if i % 500 == 0:
                    epoch.value += 1
                if i % 701 == 0:
                    cache.invalidate_where(lambda k, h: k % 2 == 0)
                assert len(cache) <= 50
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(cache) <= 50


class HangingEpoch(Epoch):
    """An epoch read that blocks until released, as a query on a database that stopped answering."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> int:
        if self.hang.is_set():
            self.entered.set()
            self.release.wait(timeout=30)
        return super().__call__()


def _read_in_thread(cache: TenantKeyCache, key) -> threading.Thread:
    thread = threading.Thread(target=cache.get, args=(key,), daemon=True)
    thread.start()
    return thread


def test_a_hung_epoch_read_stops_every_thread_from_serving_after_two_intervals(clock):
    epoch = HangingEpoch()
    cache = TenantKeyCache(ttl=300, epoch_source=epoch, epoch_interval=1.0, clock=clock)
    cache.put("k", handle())
    assert cache.get("k") is not None
    epoch.hang.set()
    clock.advance(1.0)
    poller = _read_in_thread(cache, "k")  # this thread's read of the epoch hangs
    assert epoch.entered.wait(timeout=5)
    try:
        clock.advance(0.9)
        assert cache.get("k") is not None  # the last completed read is 1.9 s old: still served
        clock.advance(0.2)
        with pytest.raises(errors.RevocationStatusUnknown, match="revocation list has not completed"):
            cache.get("k")  # 2.1 s: a revocation may have happened meanwhile
        with pytest.raises(errors.RevocationStatusUnknown):
            cache.get("other")
        assert cache.put("new", handle()) is False  # nothing is stored that could not be served
    finally:
        epoch.release.set()
        poller.join(timeout=5)
    assert cache.get("k") is not None  # the read completed (epoch unchanged): served again


def test_a_caller_waits_for_a_read_in_flight_instead_of_refusing_after_a_quiet_spell(clock):
    """After minutes without traffic, the first read is old news: the next callers wait for it, briefly."""
    epoch = HangingEpoch()
    cache = TenantKeyCache(ttl=3600, epoch_source=epoch, epoch_interval=1.0, clock=clock)
    cache.put("k", handle())
    cache.get("k")
    clock.advance(600)
    epoch.hang.set()
    poller = _read_in_thread(cache, "k")
    assert epoch.entered.wait(timeout=5)
    threading.Timer(0.05, epoch.release.set).start()  # the read completes 50 ms later
    assert cache.get("k") is not None
    poller.join(timeout=5)


def test_a_revocation_seen_by_the_read_in_flight_is_not_served_to_the_waiting_caller(clock):
    epoch = HangingEpoch()
    cache = TenantKeyCache(ttl=3600, epoch_source=epoch, epoch_interval=1.0, clock=clock)
    cache.put("k", handle())
    cache.get("k")
    clock.advance(600)
    epoch.value += 1  # revoked while nobody was looking
    epoch.hang.set()
    poller = _read_in_thread(cache, "k")
    assert epoch.entered.wait(timeout=5)
    threading.Timer(0.05, epoch.release.set).start()
    assert cache.get("k") is None
    poller.join(timeout=5)
