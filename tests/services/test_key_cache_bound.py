"""``KEYCORE_KEY_CACHE_SIZE`` bounds what a process keeps when it touches more tenants than fit.

A web worker serving a million tenants, or a Celery worker walking all of them, touches each tenant's
configuration and key once in a while. Everything it keeps per tenant — unwrapped keys, resolved tenants,
built providers (which hold a local KEK in the clear) — must stay within the bound, or memory grows with the
fleet and key material outlives the cache that is supposed to forget it.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from keycore.services import keyring
from keycore.services.crypto import CallMeta, crypto_encrypt
from keycore.services.keyuse import recorder
from keycore.services.tenants import NewTenant, tenant_create_many

pytestmark = pytest.mark.django_db
BOUND = 40


@pytest.fixture
def small_caches(settings):
    settings.KEYCORE_KEY_CACHE_SIZE = BOUND
    keyring.clear_caches()
    keyring._key_cache = keyring._tenant_cache = None  # rebuilt with the bound above
    yield
    keyring.clear_caches()
    keyring._key_cache = keyring._tenant_cache = None


def _touch(tenants, meta) -> None:
    for tenant in tenants:
        crypto_encrypt(tenant=tenant.external_id, fields={"f": b"x" * 64}, meta=meta)
    recorder.flush()  # key-use counts wait for the recorder's next write (every second), then go
    gc.collect()


def test_a_process_touching_more_tenants_than_fit_keeps_only_the_bound(small_caches, actor):
    made = tenant_create_many(items=[NewTenant(f"t-{i:04d}", f"Tenant {i}") for i in range(6 * BOUND)], actor=actor)
    meta = CallMeta(requesting_id="tests")
    tracemalloc.start()  # before the first entry: entries evicted later must count as freed
    try:
        _touch(made[: 2 * BOUND], meta)  # the caches are full from here on
        full = tracemalloc.take_snapshot()
        _touch(made[2 * BOUND :], meta)  # four times as many tenants again
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert len(keyring.key_cache()) <= BOUND
    assert len(keyring.tenant_cache()) <= BOUND
    assert len(keyring._providers) <= BOUND, "every configuration ever used keeps a provider (and its KEK)"
    # what KeyCore's own code holds on to (Django keeps a bounded log of recent queries of its own; the
    # key-use recorder interns its buckets up to its own BUCKETS_MAX, whatever the cache's bound)
    ours = [tracemalloc.Filter(True, "*/keycore/*"), tracemalloc.Filter(False, "*/keycore/services/keyuse.py")]
    diffs = after.filter_traces(ours).compare_to(full.filter_traces(ours), "lineno")
    grown = sum(stat.size_diff for stat in diffs)
    # flat: 160 more tenants leave less behind than 40 cached ones take (about 1 KiB each: key, provider, lookup)
    assert grown < 16 * 1024, f"memory grew by {grown:,} bytes after the caches were full:\n" + "\n".join(
        str(d) for d in diffs[:8]
    )
