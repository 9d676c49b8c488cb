"""Prometheus metrics of every KeyCore process, and the exposition ``/metrics`` and the workers serve.

Nothing here is labelled with a tenant, a key, a configuration or a secret: labels are bounded sets
(operations, problem types, provider names, route names, job kinds), so a fleet of a million tenants
makes no more series than a fleet of one.

What is counted where:

* **crypto operations** by operation and result (``ok`` or the problem type): counted by the key-use
  recorder's cutter thread from the uses it already aggregates every second
  (:func:`count_crypto_operations`), so the crypto path pays nothing more;
* **key-cache** hits, misses and evictions: plain integers of :class:`~keycore.crypto.cache.TenantKeyCache`,
  copied into counters every ``KEYCORE_METRICS_SYNC_INTERVAL`` seconds by one daemon thread per process
  (a Prometheus counter costs a lock and, in multi-process mode, a write to a memory-mapped file: about
  as much as the cache lookup itself), and at each scrape;
* **KMS calls** by provider, operation and outcome, with a latency histogram: every provider's ``wrap`` and
  ``unwrap``, instrumented once in :class:`~keycore.providers.base.KeyProvider`;
* **revocation-epoch lag**: how old the process's last completed read of the revocation epoch is, while it
  serves keys (a process that served none in the last interval reports 0: it reads before it serves);
* **rekey jobs**: items done and failed and batches committed, by kind, counted on the engine's
  ``batch_committed`` signal; progress of the jobs still running, read from the database at scrape time;
* **event delivery**: events waiting for their destinations, failing destinations and dead letters not
  replayed, read from the database at scrape time;
* **API latency** by route name (``keycore.middleware.MetricsMiddleware``): never the raw path.

Multi-process mode: gunicorn's workers and Celery's prefork children are separate processes, so with
``PROMETHEUS_MULTIPROC_DIR`` set (``config/gunicorn.py`` sets one for gunicorn) each writes its values to
files there and a scrape of any one of them sums them all. A dead worker's files are marked dead when
it exits (gunicorn's ``child_exit``, Celery's ``worker_process_shutdown``): its counters stay in the sums,
its live gauges leave them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE_LATEST", "exposition"]

#: seconds; KMS calls are milliseconds on a LAN and seconds when a KMS struggles (the timeout is 5 s)
KMS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: seconds; a single encrypt is about a millisecond through gunicorn, a portal page tens of milliseconds
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CRYPTO_OPERATIONS = Counter(
    "keycore_crypto_operations",
    "Crypto operations (encrypt, decrypt, rekey, rekey_in) by result: ok, or the problem type.",
    ["operation", "result"],
)
KEY_CACHE = Counter(
    "keycore_key_cache_events",
    "Lookups in the process caches (tenant_keys: unwrapped keys; tenants: resolved tenants): hit, miss, eviction.",
    ["cache", "event"],
)
KMS_CALLS = Counter(
    "keycore_kms_calls",
    "Calls to a KMS by provider, operation and outcome (ok, or the problem type).",
    ["provider", "operation", "outcome"],
)
KMS_SECONDS = Histogram(
    "keycore_kms_call_seconds", "Latency of KMS calls.", ["provider", "operation"], buckets=KMS_BUCKETS
)
REVOCATION_LAG = Gauge(
    "keycore_revocation_epoch_lag_seconds",
    "Age of the last completed read of the revocation epoch by a process serving keys (worst live process).",
    multiprocess_mode="livemax",
)
REKEY_ITEMS = Counter("keycore_rekey_items", "Rekey-job items committed, by job kind and outcome.", ["kind", "outcome"])
REKEY_BATCHES = Counter("keycore_rekey_batches", "Rekey-job batches committed, by job kind.", ["kind"])
HTTP_SECONDS = Histogram(
    "keycore_http_request_seconds",
    "Requests by route name (never the path), method and status class.",
    ["route", "method", "status"],
    buckets=HTTP_BUCKETS,
)


def multiprocess_dir() -> str:
    """The folder of multi-process mode ('' when each process keeps its own values)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


# --- KMS calls -------------------------------------------------------------------------------------


def observe_kms_call(provider: str, operation: str, outcome: str, seconds: float) -> None:
    KMS_CALLS.labels(provider, operation, outcome).inc()
    KMS_SECONDS.labels(provider, operation).observe(seconds)


# --- crypto operations -----------------------------------------------------------------------------


def count_crypto_operations(counts: Iterable[tuple[str, str, int]]) -> None:
    """Add (operation, result, count) triples, already aggregated by the key-use recorder."""
    totals: dict[tuple[str, str], int] = {}
    for operation, result, count in counts:
        totals[operation, result] = totals.get((operation, result), 0) + count
    for (operation, result), count in totals.items():
        CRYPTO_OPERATIONS.labels(operation, result).inc(count)


# --- rekey jobs ------------------------------------------------------------------------------------


def count_rekey_batch(sender: Any, *, done: int = 0, failed: int = 0, **_: Any) -> None:
    """The receiver of the job engine's ``batch_committed`` (connected in ``KeycoreConfig.ready``)."""
    kind = str(getattr(sender, "kind", "unknown"))
    REKEY_BATCHES.labels(kind).inc()
    if done:
        REKEY_ITEMS.labels(kind, "done").inc(done)
    if failed:
        REKEY_ITEMS.labels(kind, "failed").inc(failed)


# --- the process's caches --------------------------------------------------------------------------

_watch_lock = threading.Lock()
#: name → (cache, the (hits, misses, evictions) already counted)
_watched: dict[str, tuple[Any, list[int]]] = {}
_sync_thread: threading.Thread | None = None
_active_since_sync = False


def watch_cache(name: str, cache: Any) -> None:
    """Export ``cache``'s hits, misses and evictions (and, for an epoch-polling cache, the revocation lag)."""
    with _watch_lock:
        _watched[name] = (cache, [cache.hits, cache.misses, cache.evictions])
    _start_sync_thread()


def sync_process_metrics() -> None:
    """Copy what the watched caches counted since the last call into the counters; update the lag gauge."""
    worst_lag = 0.0
    with _watch_lock:
        for name, (cache, seen) in _watched.items():
            now = [cache.hits, cache.misses, cache.evictions]
            for event, before, after in zip(("hit", "miss", "eviction"), seen, now, strict=True):
                if after > before:
                    KEY_CACHE.labels(name, event).inc(after - before)
            served = now[0] + now[1] > seen[0] + seen[1]
            seen[:] = now
            age = cache.epoch_read_age
            if served and age is not None:
                worst_lag = max(worst_lag, age)
    REVOCATION_LAG.set(worst_lag)


def _sync_loop() -> None:
    from django.conf import settings

    while True:
        time.sleep(settings.KEYCORE_METRICS_SYNC_INTERVAL)
        try:
            sync_process_metrics()
        except Exception:  # never let metrics take anything down
            log.warning("could not update the process metrics", exc_info=True)


def _start_sync_thread() -> None:
    global _sync_thread
    with _watch_lock:
        if _sync_thread is None or not _sync_thread.is_alive():
            _sync_thread = threading.Thread(target=_sync_loop, name="keycore-metrics", daemon=True)
            _sync_thread.start()


def _after_fork_in_child() -> None:
    # the thread did not survive the fork; the caches did (with --preload), and their counts are the parent's
    global _sync_thread
    _sync_thread = None
    if _watched:
        for _, (cache, seen) in _watched.items():
            seen[:] = [cache.hits, cache.misses, cache.evictions]
        _start_sync_thread()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- read from the database at scrape time ------------------------------------------------------------


class DatabaseCollector:
    """Fleet-wide figures that live in the database: asked once per scrape, by whichever process answers.

    Each is one aggregate query over indexed columns; none is labelled with a tenant.
    """

    def collect(self):
        try:
            families = list(self._families())
        except Exception:  # the database is down: the process's own figures are still worth a scrape
            log.warning("metrics: the database figures could not be read", exc_info=True)
            families = []
        up = GaugeMetricFamily("keycore_metrics_database_up", "Whether this scrape could read the database figures.")
        up.add_metric([], 1 if families else 0)
        yield from families
        yield up

    def _families(self):
        from django.db.models import CharField, Count, F, OuterRef, Q, Subquery, Sum, Value
        from django.db.models.functions import Cast, Coalesce, Concat

        from keycore.models import DeadLetter, EventChain, EventDestination, RekeyJob, RevocationEpoch
        from keycore.models.events import ReplayState
        from keycore.models.jobs import ACTIVE_JOB_STATES

        jobs = GaugeMetricFamily(
            "keycore_rekey_jobs", "Rekey jobs not finished, by kind and state.", labels=["kind", "state"]
        )
        items = GaugeMetricFamily(
            "keycore_rekey_job_items",
            "Items of the rekey jobs not finished, by kind: total, done, failed (progress = done / total).",
            labels=["kind", "measure"],
        )
        for row in (
            RekeyJob.objects.filter(state__in=ACTIVE_JOB_STATES)
            .values("kind", "state")
            .annotate(n=Count("id"), total=Sum("total"), done=Sum("done"), failed=Sum("failed"))
            .order_by()
        ):
            jobs.add_metric([row["kind"], row["state"]], row["n"])
        for row in (
            RekeyJob.objects.filter(state__in=ACTIVE_JOB_STATES)
            .values("kind")
            .annotate(total=Sum("total"), done=Sum("done"), failed=Sum("failed"))
            .order_by()
        ):
            for measure in ("total", "done", "failed"):
                items.add_metric([row["kind"], measure], row[measure] or 0)
        yield jobs
        yield items

        head = EventChain.objects.filter(
            key=Concat(Value("tenant:"), Cast(OuterRef("tenant_id"), output_field=CharField()))
        ).values("seq")[:1]
        destinations = EventDestination.objects.filter(enabled=True).annotate(head=Coalesce(Subquery(head), Value(0)))
        summary = destinations.aggregate(
            backlog=Sum(F("head") - F("cursor_seq")), enabled=Count("id"), failing=Count("id", filter=Q(failures__gt=0))
        )
        backlog = GaugeMetricFamily(
            "keycore_event_delivery_backlog", "Security events not yet delivered to enabled destinations."
        )
        backlog.add_metric([], max(summary["backlog"] or 0, 0))
        yield backlog
        failing = GaugeMetricFamily(
            "keycore_event_destinations",
            "Enabled event destinations, by whether their last attempt failed.",
            labels=["state"],
        )
        failing.add_metric(["failing"], summary["failing"])
        failing.add_metric(["ok"], summary["enabled"] - summary["failing"])
        yield failing
        dead = GaugeMetricFamily(
            "keycore_event_dead_letters", "Dead letters (events no retry delivered), by replay.", labels=["replay"]
        )
        by_state = dict(DeadLetter.objects.values_list("replay_state").annotate(n=Count("id")).order_by())
        for state in ReplayState:
            dead.add_metric([state.value or "none"], by_state.get(state.value, 0))
        yield dead

        epoch = RevocationEpoch.objects.filter(pk=1).values("value", "changed_at").first()
        value = GaugeMetricFamily("keycore_revocation_epoch", "The revocation epoch (bumped by every revocation).")
        value.add_metric([], (epoch or {}).get("value") or 0)
        yield value


# --- exposition ------------------------------------------------------------------------------------------


def registry() -> CollectorRegistry:
    """What a scrape reads: every process's files in multi-process mode, else this process's registry."""
    folder = multiprocess_dir()
    if folder:
        scrape = CollectorRegistry()
        multiprocess.MultiProcessCollector(scrape, path=folder)
        return scrape
    return REGISTRY


def exposition(*, database: bool = True) -> bytes:
    """The text format of every metric; ``database`` adds the fleet-wide figures read from the database."""
    sync_process_metrics()
    scrape = registry()
    if not database:
        return generate_latest(scrape)
    combined = CollectorRegistry()
    combined.register(_Chain(scrape, DatabaseCollector()))
    return generate_latest(combined)


class _Chain:
    def __init__(self, *sources: Any) -> None:
        self.sources = sources

    def collect(self):
        for source in self.sources:
            yield from source.collect()


def mark_process_dead(pid: int) -> None:
    """Drop a dead process's live gauges from the sums (its counters stay counted)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)


def clear_multiprocess_dir() -> None:
    """Empty the multi-process folder when a server starts, so a restart does not sum a previous run's files."""
    folder = multiprocess_dir()
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.unlink(os.path.join(folder, name))


# --- a Celery worker's own HTTP endpoint -------------------------------------------------------------------


def serve_worker_metrics(address: str, port: int) -> Any:
    """Serve this worker's metrics (its pool's, in multi-process mode) on ``address:port``; returns the server.

    The database figures are left to the web's ``/metrics`` (one place asks the database per scrape).
    """
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=address, registry=_ProcessRegistry())
    return server


class _ProcessRegistry:
    """A registry view that syncs the caches' counters, then reads every process's values."""

    def collect(self):
        sync_process_metrics()
        yield from registry().collect()

    def restricted_registry(self, names: Iterable[str]) -> Any:  # asked for ?name[]=… queries
        return self


def summary(text: str) -> Mapping[str, float]:
    """Sample name with labels → value, from the text format (for tests and the benchmark runner)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out
