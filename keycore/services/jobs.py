"""Rekey jobs: move tenant keys under new keys at any scale, committed in units, never losing a key.

Kinds (see ``docs/jobs.md``):

* **rewrap** — a tenant's tenant keys from one configuration to another (started
  by :func:`keycore.services.keys.kms_config_make_primary`);
* **kek_rotation** — a new KEK inside every vendor-provided (local) configuration,
  or one: the configuration keeps the old KEK as "previous" until its tenant keys
  are rewrapped, then forgets it;
* **root_rotation** — every sealed secret (KMS credentials, local KEKs, MFA
  secrets) re-sealed under the current root key while the old one is still
  configured in ``KEYCORE_ROOT_KEY_PREVIOUS``;
* **key_retirement** — destroy an old tenant-key version once the application has
  rekeyed its data, or once the grace period is over and the tenant confirms.

A job is a row; its work is split into :class:`~keycore.models.jobs.RekeyJobChunk`
rows (id ranges), and Celery tasks carry only ids. A chunk is worked in
*batches*; each batch is one transaction that writes the new state of its items
**and** moves the chunk's cursor and the job's counters, after checking that this
worker still holds the chunk's lease. So a killed worker, a re-delivered task,
a dropped database connection or a second worker on the same chunk can neither
repeat committed work nor skip any; on top of that every item is idempotent by
its own state (a key with a verified wrap under the target is not wrapped
again), so a retry of a whole job redoes only what is missing.

A tenant key is never left without a usable wrap: new wraps are verified (unwrap
and compare, plus the key's check value) before they are written, the old
configuration stays decrypt-only until the job finishes, and old wraps go only
when every key has a verified new one.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import random
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, models, transaction
from django.db.models import BigIntegerField, Exists, F, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Cast, Substr
from django.utils import timezone

from keycore import errors
from keycore.crypto.envelope import key_check_value
from keycore.models import AuditEvent, EventChain, KmsConfig, RekeyJob, Tenant, TenantKey, TenantKeyWrap
from keycore.models.jobs import ACTIVE_JOB_STATES, ChunkState, JobKind, JobState, RekeyJobChunk
from keycore.models.keys import UNWRAP_STATES, ConfigState, HistoryAction, TenantKeyState
from keycore.models.tenants import TenantStatus
from keycore.providers.base import WrapContext
from keycore.providers.registry import get_provider_class, provider_names
from keycore.services.audit import (
    Actor,
    audit_payload,
    audit_record,
    chain_key,
    chain_sign,
    event_digest,
    normalise_ip,
    scrub,
)
from keycore.services.kms_quota import kms_acquire

log = logging.getLogger(__name__)

SUBJECT_TENANT_KEY = "tenant_key"
SUBJECT_CONFIG = "kms_config"
SUBJECT_AUTHENTICATOR = "authenticator"


# --- tuning (settings, or the environment for worker processes) ---------------------------


def _setting(name: str, default: float) -> float:
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def chunk_size() -> int:
    """Items per chunk (one task); sized so a chunk ends well within the broker's visibility timeout."""
    return int(_setting("KEYCORE_JOB_CHUNK_SIZE", 2000))


def batch_size() -> int:
    """Items per transaction for work done in process (local KEKs, re-sealing)."""
    return int(_setting("KEYCORE_JOB_BATCH_SIZE", 500))


def remote_batch_size() -> int:
    """Items per transaction when every item is a round trip to a remote KMS."""
    return int(_setting("KEYCORE_JOB_REMOTE_BATCH_SIZE", 25))


def lease_seconds() -> float:
    """How long a worker owns a chunk without renewing (it renews with every batch)."""
    return _setting("KEYCORE_JOB_LEASE_SECONDS", 60.0)


def retry_delay(attempt: int) -> float:
    """Exponential backoff with jitter for a paused chunk: 1, 2, 4 … seconds, capped."""
    base = _setting("KEYCORE_JOB_RETRY_BASE", 1.0)
    cap = _setting("KEYCORE_JOB_RETRY_MAX", 300.0)
    ceiling = min(cap, base * 2 ** min(attempt, 16))
    return ceiling / 2 + random.random() * ceiling / 2


def retirement_grace_days() -> int:
    return int(_setting("KEYCORE_KEY_RETIREMENT_GRACE_DAYS", 30))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _visibility_timeout() -> float:
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    return float(options.get("visibility_timeout") or 3600)


# --- outcomes the tasks act on -------------------------------------------------------------


class ChunkBusy(Exception):
    """Another worker holds the chunk's lease; ask again after ``wait`` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"chunk leased for another {wait:.1f}s")
        self.wait = wait


class ChunkPaused(Exception):
    """A KMS (or the worker's configuration) is not usable right now; the chunk retries after ``delay``."""

    def __init__(self, error: errors.KeyCoreError, delay: float) -> None:
        super().__init__(error.detail)
        self.error = error
        self.delay = delay


class _LeaseLost(Exception):
    """Another worker took the chunk over (our lease expired): drop this batch, stop."""


class _JobStopped(Exception):
    """The job was cancelled or finished meanwhile."""


class _Restart(Exception):
    """Something this batch relied on changed before it could commit; compute it again."""


class _Contention(errors.KeyCoreError):
    code = "job-contention"
    title = "Rows kept changing under the job"
    retryable = True


#: a batch recomputed this often in a row pauses the chunk instead (it retries later)
MAX_RESTARTS = 20


class JobBlocked(errors.Conflict):
    """The job cannot go on until someone acts (the target key is revoked…); it fails with this reason."""


# --- fault points (tests only) ---------------------------------------------------------------

_fault_hits: dict[str, int] = defaultdict(int)


def _fault_point(name: str) -> None:
    """Test hook: ``KEYCORE_TEST_FAULTS`` names faults the fault tests inject into a worker.

    Honoured only when the process runs tests (``settings.TESTING``). Entries are
    comma-separated ``action:point:arg``: ``sleep:<point>:<seconds>`` slows every
    hit; ``dbdrop:<point>:<n>`` loses the database connection at the n-th hit (on
    PostgreSQL by waiting for the test to terminate this backend, announced
    through a file in ``KEYCORE_TEST_FAULT_DIR``; on SQLite by making the next
    statement fail as a dropped connection would).
    """
    spec = os.environ.get("KEYCORE_TEST_FAULTS")
    if not spec or not getattr(settings, "TESTING", False):
        return
    for entry in spec.split(","):
        action, _, rest = entry.partition(":")
        point, _, arg = rest.partition(":")
        if point != name:
            continue
        if action == "sleep":
            time.sleep(float(arg))
        elif action == "dbdrop":
            _fault_hits[name] += 1
            if _fault_hits[name] == int(arg or 1):
                _drop_connection(name)


def _drop_connection(point: str) -> None:
    from pathlib import Path

    folder = Path(os.environ.get("KEYCORE_TEST_FAULT_DIR", "."))
    if connection.vendor == "postgresql":
        pid = connection.cursor().connection.info.backend_pid
        marker = folder / f"dbdrop-{pid}"
        marker.write_text(point)
        deadline = time.monotonic() + 30
        while marker.exists() and time.monotonic() < deadline:  # the test terminates our backend, then removes it
            time.sleep(0.02)
        return

    def dropped(execute, sql, params, many, context):
        connection.execute_wrappers.remove(dropped)
        from django.db import OperationalError

        raise OperationalError("simulated loss of the database connection")

    connection.execute_wrappers.append(dropped)
    (folder / f"dbdrop-{os.getpid()}").write_text(point)


# --- starting jobs -----------------------------------------------------------------------------


def _started_by(actor: Actor):
    return actor.user if actor.user is not None and actor.user.pk else None


def _enqueue_job(job: RekeyJob) -> None:
    from keycore.tasks import run_rekey_job

    job_id = job.pk
    transaction.on_commit(lambda: run_rekey_job.delay(job_id))


def job_start_rewrap(*, tenant: Tenant, source: KmsConfig | None, target: KmsConfig, actor: Actor) -> RekeyJob:
    """Start moving every live tenant key of ``tenant`` under ``target`` (in the caller's transaction).

    A running rewrap of the same tenant towards another configuration is superseded (cancelled).
    """
    now = timezone.now()
    superseded = RekeyJob.objects.filter(tenant=tenant, kind=JobKind.REWRAP, state__in=ACTIVE_JOB_STATES).exclude(
        target_config=target
    )
    superseded.update(
        state=JobState.CANCELLED,
        finished_at=now,
        retry_at=None,
        last_error="Superseded by a newer change of the primary key.",
    )
    total = TenantKey.objects.filter(tenant=tenant).exclude(state=TenantKeyState.DESTROYED).count()
    job = RekeyJob.objects.create(
        kind=JobKind.REWRAP,
        tenant=tenant,
        source_config=source,
        target_config=target,
        scope=f"tenant {tenant.external_id}: {source.name if source else 'no key'} → {target.name}"[:200],
        total=total,
        started_by=_started_by(actor),
        started_by_label=actor.label[:200],
    )
    audit_record(
        actor=actor,
        action="rekey_job.started",
        tenant=tenant,
        target=job,
        target_repr=f"rewrap to {target.name}",
        changes={"kind": [None, job.kind], "total": [None, total]},
    )
    _enqueue_job(job)
    return job


def rotatable_providers() -> list[str]:
    """Providers whose configurations hold their own KEK and can rotate it in place."""
    names = []
    for name in provider_names():
        cls = get_provider_class(name)
        if all(hasattr(cls, attr) for attr in ("rotate_kek", "drop_previous", "needs_rewrap", "wrap_key_id")):
            names.append(name)
    return names


def _rotatable_configs():
    return KmsConfig.objects.filter(provider__in=rotatable_providers(), sealed_secrets__isnull=False).exclude(
        state__in=[ConfigState.RETIRED, ConfigState.DESTROYED]
    )


def job_start_kek_rotation(*, actor: Actor, config: KmsConfig | None = None) -> RekeyJob:
    """Rotate the KEK of one vendor-provided configuration, or of every one (all tenants) when ``config`` is None.

    Each configuration gets a new KEK; its tenant keys are rewrapped under it and
    the old KEK is dropped in the same transaction (or kept, for unwrap only, if a
    wrap could not be moved). Returns the job; the work runs on the workers.
    """
    with transaction.atomic():
        if config is not None:
            config = KmsConfig.objects.select_related("tenant").get(pk=config.pk)
            if config.provider not in rotatable_providers():
                raise errors.InvalidInput(f"{config.name} keeps its key in an external KMS; rotate it there.")
            if config.state in (ConfigState.RETIRED, ConfigState.DESTROYED) or not config.sealed_secrets:
                raise errors.Conflict(f"{config.name} is {config.get_state_display().lower()}.")
        busy = RekeyJob.objects.filter(kind=JobKind.KEK_ROTATION, state__in=ACTIVE_JOB_STATES)
        if config is not None:
            busy = busy.filter(Q(target_config=config) | Q(tenant__isnull=True))
        if busy.exists():
            raise errors.Conflict("A KEK rotation covering these keys is already running; wait for it or cancel it.")
        tenant = config.tenant if config is not None else None
        scope = f"{config.name} of tenant {tenant.external_id}" if config is not None else "every vendor-provided KEK"
        job = RekeyJob.objects.create(
            kind=JobKind.KEK_ROTATION,
            tenant=tenant,
            target_config=config,
            scope=scope[:200],
            started_by=_started_by(actor),
            started_by_label=actor.label[:200],
        )
        audit_record(
            actor=actor,
            action="rekey_job.started",
            tenant=tenant,
            target=job,
            target_repr=f"KEK rotation: {scope}"[:300],
            changes={"kind": [None, job.kind]},
        )
        _enqueue_job(job)
    return job


def job_start_root_rotation(*, actor: Actor) -> RekeyJob:
    """Re-seal every sealed secret under the current root key (``KEYCORE_ROOT_KEY``).

    Start it after making the new root key current and listing the old one in
    ``KEYCORE_ROOT_KEY_PREVIOUS`` on every process; when it succeeds, the old key
    can be removed. Workers whose current root key differs from this process's
    pause the job instead of sealing under the wrong key.
    """
    from keycore.sealing import root_keyring

    keyring = root_keyring()
    with transaction.atomic():
        if RekeyJob.objects.filter(kind=JobKind.ROOT_ROTATION, state__in=ACTIVE_JOB_STATES).exists():
            raise errors.Conflict("A root-key rotation is already running.")
        job = RekeyJob.objects.create(
            kind=JobKind.ROOT_ROTATION,
            scope=f"every sealed secret, to root key {keyring.current_id}",
            params={"root_key_id": keyring.current_id, "accepted_key_ids": keyring.key_ids},
            started_by=_started_by(actor),
            started_by_label=actor.label[:200],
        )
        audit_record(
            actor=actor,
            action="rekey_job.started",
            target=job,
            target_repr=f"root-key rotation to {keyring.current_id}",
            changes={"kind": [None, job.kind], "root_key_id": [None, keyring.current_id]},
        )
        _enqueue_job(job)
    return job


def _waiting_reason(version: int, grace_until) -> str:
    return (
        f"Waiting for confirmation that the application has rekeyed its data off tenant key v{version} "
        f"(or, after the grace period ends on {grace_until:%Y-%m-%d %H:%M} UTC, for the tenant to confirm)."
    )


def job_start_key_retirement(*, key: TenantKey, actor: Actor, grace_days: int | None = None) -> RekeyJob:
    """Retire an old tenant-key version: decrypt-only now, destroyed once confirmed.

    The key turns *retiring* (new data already uses the newest version; old data
    still decrypts and :func:`keycore.services.crypto.crypto_rekey` moves it to the
    newest). The job waits (paused, with the reason) for
    :func:`job_confirm_key_retirement`. The newest active version cannot be retired.
    """
    grace_days = retirement_grace_days() if grace_days is None else max(0, int(grace_days))
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update(no_key=True).get(pk=key.tenant_id)
        key = TenantKey.objects.select_for_update(no_key=True).get(pk=key.pk)
        if key.state == TenantKeyState.DESTROYED:
            raise errors.Conflict(f"Tenant key v{key.version} is already destroyed.")
        if RekeyJob.objects.filter(tenant_key=key, kind=JobKind.KEY_RETIREMENT, state__in=ACTIVE_JOB_STATES).exists():
            raise errors.Conflict(f"Tenant key v{key.version} is already being retired.")
        newest = (
            TenantKey.objects.filter(tenant=tenant, state=TenantKeyState.ACTIVE)
            .exclude(pk=key.pk)
            .order_by("-version")
            .first()
        )
        if newest is None or newest.version < key.version:
            raise errors.Conflict(
                f"Tenant key v{key.version} is the newest version; create a new version first, then retire this one."
            )
        now = timezone.now()
        grace_until = now + timedelta(days=grace_days)
        before = key.state
        key.state = TenantKeyState.RETIRING
        key.retiring_at = key.retiring_at or now
        key.save(update_fields=["state", "retiring_at"])
        job = RekeyJob.objects.create(
            kind=JobKind.KEY_RETIREMENT,
            tenant=tenant,
            tenant_key=key,
            state=JobState.PAUSED,
            scope=f"tenant key v{key.version} of tenant {tenant.external_id}"[:200],
            params={"version": key.version, "grace_until": grace_until.isoformat(), "confirmed": False},
            total=1,
            pause_reason=_waiting_reason(key.version, grace_until)[:500],
            started_by=_started_by(actor),
            started_by_label=actor.label[:200],
        )
        audit_record(
            actor=actor,
            action="tenant_key.retiring",
            tenant=tenant,
            target=key,
            target_repr=f"tenant key v{key.version}",
            changes={"state": [before, key.state], "grace_until": [None, grace_until.isoformat()]},
        )
    return job


def job_confirm_key_retirement(*, job: RekeyJob, actor: Actor, rekeyed: bool) -> RekeyJob:
    """Let a waiting retirement destroy its tenant-key version.

    ``rekeyed=True``: the application states it has rekeyed every EDEK off the
    version (allowed at any time). ``rekeyed=False``: the tenant accepts that data
    still under it becomes unreadable (allowed only after the grace period).
    """
    with transaction.atomic():
        job = (
            RekeyJob.objects.select_for_update(no_key=True, of=("self",))
            .select_related("tenant", "tenant_key")
            .get(pk=job.pk)
        )
        if job.kind != JobKind.KEY_RETIREMENT:
            raise errors.InvalidInput("Only tenant-key retirements wait for a confirmation.")
        if job.state != JobState.PAUSED or job.params.get("confirmed"):
            raise errors.Conflict(f"The retirement is {job.get_state_display().lower()}; nothing to confirm.")
        grace_until = datetime.fromisoformat(job.params["grace_until"])
        if not rekeyed and timezone.now() < grace_until:
            raise errors.Conflict(
                f"The grace period ends on {grace_until:%Y-%m-%d %H:%M} UTC; until then the retirement needs the "
                "application's confirmation that its data was rekeyed."
            )
        job.params = {
            **job.params,
            "confirmed": True,
            "confirmed_by": actor.label[:200],
            "confirmed_as": "rekeyed" if rekeyed else "grace period over",
        }
        job.state = JobState.PENDING
        job.pause_reason = ""
        job.save(update_fields=["params", "state", "pause_reason", "updated_at"])
        audit_record(
            actor=actor,
            action="rekey_job.confirmed",
            tenant=job.tenant,
            target=job,
            changes={"confirmed_as": [None, job.params["confirmed_as"]]},
        )
        _enqueue_job(job)
    return job


def job_cancel(*, job: RekeyJob, actor: Actor) -> RekeyJob:
    """Stop a job after its current batch. Work already committed stays (it is all verified and consistent).

    Cancelling a tenant-key retirement makes the key active again.
    """
    with transaction.atomic():
        job = RekeyJob.objects.select_for_update(no_key=True).get(pk=job.pk)
        if job.state not in ACTIVE_JOB_STATES:
            raise errors.Conflict(
                f"The job is {job.get_state_display().lower()}; only waiting, running or paused jobs can be cancelled."
            )
        before = job.state
        job.state = JobState.CANCELLED
        job.finished_at = timezone.now()
        job.retry_at = None
        job.save(update_fields=["state", "finished_at", "retry_at", "updated_at"])
        if job.kind == JobKind.KEY_RETIREMENT and job.tenant_key_id:
            TenantKey.objects.filter(pk=job.tenant_key_id, state=TenantKeyState.RETIRING).update(
                state=TenantKeyState.ACTIVE, retiring_at=None
            )
        audit_record(
            actor=actor,
            action="rekey_job.cancelled",
            tenant=job.tenant,
            target=job,
            changes={"state": [before, job.state]},
        )
    return job


def job_retry(*, job: RekeyJob, actor: Actor) -> RekeyJob:
    """Run a failed, cancelled or paused job again: only what is not done yet is redone."""
    with transaction.atomic():
        job = RekeyJob.objects.select_for_update(no_key=True).get(pk=job.pk)
        if job.state not in (JobState.FAILED, JobState.PAUSED, JobState.CANCELLED):
            raise errors.Conflict("Only failed, paused or cancelled jobs can be retried.")
        if job.kind == JobKind.KEY_RETIREMENT and not job.params.get("confirmed"):
            raise errors.Conflict("This retirement waits for a confirmation, not for a retry.")
        if job.kind == JobKind.REWRAP and job.state == JobState.CANCELLED:
            target = KmsConfig.objects.filter(pk=job.target_config_id).first()
            if target is None or not target.is_primary:
                raise errors.Conflict("The job's target is no longer the primary key; it was superseded.")
        before = job.state
        # chunks that had failures start over; their items are idempotent, so done ones are only counted again
        for chunk in (
            RekeyJobChunk.objects.select_for_update(no_key=True)
            .filter(job=job)
            .exclude(state=ChunkState.DONE, failed=0)
        ):
            job.done -= chunk.done if chunk.failed else 0
            job.failed -= chunk.failed
            if chunk.failed:
                chunk.cursor, chunk.done = chunk.first_id - 1, 0
                if chunk.state == ChunkState.DONE:
                    job.chunks_done -= 1
            chunk.failed = 0
            chunk.state = ChunkState.PENDING
            chunk.lease_owner, chunk.lease_until = "", None
            chunk.save()
        sums = RekeyJobChunk.objects.filter(job=job).aggregate(done=Sum("done"), failed=Sum("failed"))
        job.done, job.failed = sums["done"] or 0, sums["failed"] or 0
        job.state = JobState.PENDING
        job.pause_reason = ""
        job.retry_at = None
        job.finished_at = None
        job.save()
        audit_record(
            actor=actor,
            action="rekey_job.retried",
            tenant=job.tenant,
            target=job,
            changes={"state": [before, job.state]},
        )
        _enqueue_job(job)
    return job


# --- planning ----------------------------------------------------------------------------------------


def _id_ranges(ids: list[int], size: int) -> list[tuple[int, int, int]]:
    return [(ids[i], ids[min(i + size, len(ids)) - 1], min(size, len(ids) - i)) for i in range(0, len(ids), size)]


def _plan_subjects(job: RekeyJob) -> list[tuple[str, list[int], int]]:
    """(subject, ordered ids, chunk size) for each kind of row the job works on."""
    size = chunk_size()
    if job.kind == JobKind.REWRAP:
        ids = list(
            TenantKey.objects.filter(tenant_id=job.tenant_id)
            .exclude(state=TenantKeyState.DESTROYED)
            .order_by("id")
            .values_list("id", flat=True)
        )
        rated = KmsConfig.objects.filter(pk__in=[job.source_config_id, job.target_config_id], rate_limit__gt=0)
        for config in rated:
            # a chunk must end well within the visibility timeout: two requests per key at the quota
            size = max(1, min(size, int(config.rate_limit * _visibility_timeout() / 6)))
        return [(SUBJECT_TENANT_KEY, ids, size)]
    if job.kind == JobKind.KEK_ROTATION:
        configs = _rotatable_configs()
        if job.target_config_id:
            configs = configs.filter(pk=job.target_config_id)
        return [(SUBJECT_CONFIG, list(configs.order_by("id").values_list("id", flat=True)), size)]
    if job.kind == JobKind.ROOT_ROTATION:
        from allauth.mfa.models import Authenticator

        configs = KmsConfig.objects.filter(sealed_secrets__isnull=False).order_by("id").values_list("id", flat=True)
        authenticators = Authenticator.objects.order_by("id").values_list("id", flat=True)
        return [(SUBJECT_CONFIG, list(configs), size), (SUBJECT_AUTHENTICATOR, list(authenticators), size)]
    if job.kind == JobKind.KEY_RETIREMENT:
        return [(SUBJECT_TENANT_KEY, [job.tenant_key_id] if job.tenant_key_id else [], 1)]
    raise errors.InvalidInput(f"Unknown job kind {job.kind!r}.")


def job_plan(job_id: int) -> list[int]:
    """Split the job into chunks (once) and return the ids of chunks that still have work."""
    with transaction.atomic():
        job = RekeyJob.objects.select_for_update(no_key=True).get(pk=job_id)
        if job.state not in ACTIVE_JOB_STATES:
            return []
        if job.kind == JobKind.KEY_RETIREMENT and not job.params.get("confirmed"):
            return []
        if not job.chunks_total:
            chunks, total = [], 0
            for subject, ids, size in _plan_subjects(job):
                for first, last, count in _id_ranges(ids, size):
                    chunks.append(
                        RekeyJobChunk(
                            job=job,
                            seq=len(chunks),
                            subject=subject,
                            first_id=first,
                            last_id=last,
                            cursor=first - 1,
                            total=count,
                        )
                    )
                    total += count
            RekeyJobChunk.objects.bulk_create(chunks, batch_size=1000)
            job.total, job.chunks_total = total, len(chunks)
            job.save(update_fields=["total", "chunks_total", "updated_at"])
            if not chunks:
                transaction.on_commit(lambda: _maybe_finish(job_id))
        return list(
            RekeyJobChunk.objects.filter(job_id=job_id).exclude(state=ChunkState.DONE).values_list("id", flat=True)
        )


def job_mark_enqueued(chunk_ids: list[int]) -> None:
    RekeyJobChunk.objects.filter(pk__in=chunk_ids).update(enqueued_at=timezone.now())


# --- running a chunk ---------------------------------------------------------------------------------


@dataclass
class _Progress:
    cursor: int
    done: int = 0
    failed: int = 0
    error: str = ""
    audit: list[tuple[int, str, str, str, dict[str, Any]]] = field(default_factory=list)


@contextmanager
def _batch(chunk_id: int, worker: str, cursor: int) -> Iterator[_Progress]:
    """One unit of work: the caller's writes, the chunk's cursor and the job's counters commit together.

    Refuses (rolls back) when another worker took the chunk over or the job stopped.
    """
    with transaction.atomic():
        chunk = RekeyJobChunk.objects.select_for_update(no_key=True).get(pk=chunk_id)
        if chunk.lease_owner != worker or chunk.cursor != cursor:
            raise _LeaseLost()
        state = RekeyJob.objects.filter(pk=chunk.job_id).values_list("state", flat=True).get()
        if state not in ACTIVE_JOB_STATES:
            raise _JobStopped()
        progress = _Progress(cursor=cursor)
        yield progress
        if progress.cursor == cursor:
            raise AssertionError("a batch must move the cursor")
        now = timezone.now()
        chunk.cursor = progress.cursor
        chunk.done += progress.done
        chunk.failed += progress.failed
        chunk.lease_until = now + timedelta(seconds=lease_seconds())
        chunk.state = ChunkState.RUNNING
        if progress.error:
            chunk.last_error = progress.error
        chunk.save(update_fields=["cursor", "done", "failed", "lease_until", "state", "last_error", "updated_at"])
        job_fields: dict[str, Any] = {
            "done": F("done") + progress.done,
            "failed": F("failed") + progress.failed,
            "updated_at": now,
        }
        if progress.error:
            job_fields["last_error"] = progress.error
        RekeyJob.objects.filter(pk=chunk.job_id).update(**job_fields)
        # work went through: whatever paused the job is over
        RekeyJob.objects.filter(pk=chunk.job_id, state__in=[JobState.PENDING, JobState.PAUSED]).update(
            state=JobState.RUNNING, pause_reason="", retry_at=None
        )


def _claim(chunk_id: int, worker: str) -> RekeyJobChunk | None:
    """Take the chunk's lease, or None when there is nothing to do. Raises ChunkBusy when it is leased."""
    with transaction.atomic():
        chunk = (
            RekeyJobChunk.objects.select_for_update(no_key=True, of=("self",)).select_related("job").get(pk=chunk_id)
        )
        job = chunk.job
        if chunk.state == ChunkState.DONE or job.state not in ACTIVE_JOB_STATES:
            return None
        now = timezone.now()
        if chunk.lease_owner and chunk.lease_owner != worker and chunk.lease_until and chunk.lease_until > now:
            raise ChunkBusy((chunk.lease_until - now).total_seconds() + 0.5)
        chunk.lease_owner = worker
        chunk.lease_until = now + timedelta(seconds=lease_seconds())
        chunk.state = ChunkState.RUNNING
        chunk.attempts += 1
        chunk.save(update_fields=["lease_owner", "lease_until", "state", "attempts", "updated_at"])
        RekeyJob.objects.filter(pk=job.pk, state=JobState.PENDING).update(state=JobState.RUNNING, updated_at=now)
        RekeyJob.objects.filter(pk=job.pk, started_at__isnull=True).update(started_at=now)
    return chunk


def _release(chunk_id: int, worker: str, **fields: Any) -> None:
    RekeyJobChunk.objects.filter(pk=chunk_id, lease_owner=worker).update(
        lease_owner="", lease_until=None, updated_at=timezone.now(), **fields
    )


def _pause(chunk: RekeyJobChunk, worker: str, exc: errors.KeyCoreError, attempt: int) -> ChunkPaused:
    delay = retry_delay(attempt)
    now = timezone.now()
    _release(chunk.pk, worker, state=ChunkState.PAUSED, last_error=exc.detail)
    RekeyJob.objects.filter(pk=chunk.job_id, state__in=ACTIVE_JOB_STATES).update(
        state=JobState.PAUSED,
        pause_reason=f"{exc.title}: {exc.detail}"[:500],
        last_error=exc.detail,
        retry_at=now + timedelta(seconds=delay),
        updated_at=now,
    )
    log.warning("rekey job %s paused (%s); retrying in %.1fs", chunk.job_id, exc.code, delay)
    return ChunkPaused(exc, delay)


def job_run_chunk(chunk_id: int, *, attempt: int = 0, worker: str | None = None) -> bool:
    """Work one chunk to its end; True when it is done (or there is nothing left for it).

    Raises ChunkBusy (another worker holds it), ChunkPaused (a KMS is down: the job
    is paused with the reason; retry after ``delay``), or a database error (the
    batch in flight rolled back; retry).
    """
    worker = worker or worker_name()
    chunk = _claim(chunk_id, worker)
    if chunk is None:
        return True
    job = chunk.job
    handler = _HANDLERS[(job.kind, chunk.subject)]
    cursor = chunk.cursor
    restarts = 0
    try:
        while True:
            try:
                next_cursor = handler(job, chunk, worker, cursor)
            except _Restart:
                restarts += 1
                if restarts >= MAX_RESTARTS:
                    raise _Contention("The rows of this chunk kept changing; it tries again later.") from None
                continue
            restarts = 0
            if next_cursor is None:
                break
            cursor = next_cursor
    except _LeaseLost:
        return False
    except _JobStopped:
        _release(chunk.pk, worker)
        return False
    except JobBlocked as exc:
        _release(chunk.pk, worker, last_error=exc.detail)
        _fail_job(job.pk, exc.detail)
        return False
    except errors.KeyCoreError as exc:
        if exc.retryable:
            raise _pause(chunk, worker, exc, attempt) from exc
        _release(chunk.pk, worker, last_error=exc.detail)
        raise
    except (OperationalError, InterfaceError):
        # the connection is gone (the batch in flight rolled back); let the retry take the chunk at once
        connection.close()
        try:
            _release(chunk.pk, worker)
        except (OperationalError, InterfaceError):
            log.warning("could not release chunk %s after losing the database", chunk.pk)
        raise
    _complete_chunk(chunk.pk, job.pk, worker)
    _maybe_finish(job.pk)
    return True


def _complete_chunk(chunk_id: int, job_id: int, worker: str) -> None:
    """Mark the chunk done; planned items that needed nothing by the time we got there count as done."""
    with transaction.atomic():
        chunk = RekeyJobChunk.objects.select_for_update(no_key=True).get(pk=chunk_id)
        if chunk.lease_owner != worker or chunk.state == ChunkState.DONE:
            return
        skipped = max(0, chunk.total - chunk.done - chunk.failed)
        chunk.done += skipped
        chunk.state = ChunkState.DONE
        chunk.lease_owner, chunk.lease_until = "", None
        chunk.save(update_fields=["done", "state", "lease_owner", "lease_until", "updated_at"])
        RekeyJob.objects.filter(pk=job_id).update(
            chunks_done=F("chunks_done") + 1, done=F("done") + skipped, updated_at=timezone.now()
        )


def _fail_job(job_id: int, reason: str) -> None:
    with transaction.atomic():
        job = RekeyJob.objects.select_for_update(no_key=True, of=("self",)).select_related("tenant").get(pk=job_id)
        if job.state not in ACTIVE_JOB_STATES:
            return
        job.state = JobState.FAILED
        job.last_error = reason
        job.pause_reason = ""
        job.retry_at = None
        job.finished_at = timezone.now()
        job.save(update_fields=["state", "last_error", "pause_reason", "retry_at", "finished_at", "updated_at"])
        audit_record(
            actor=Actor.system("rekey-job"),
            action="rekey_job.failed",
            tenant=job.tenant,
            target=job,
            changes={"done": [None, job.done], "failed": [None, job.failed], "reason": [None, reason[:300]]},
        )


# --- rewrap: a tenant's keys under another configuration ----------------------------------------------


def _config_stamp(config_id: int) -> tuple[Any, ...] | None:
    row = KmsConfig.objects.filter(pk=config_id).values_list("state", "settings", "sealed_secrets").first()
    if row is None:
        return None
    return (row[0], json.dumps(row[1], sort_keys=True), bytes(row[2] or b""))


def _rewrap_batch(job: RekeyJob, chunk: RekeyJobChunk, worker: str, cursor: int) -> int | None:
    from keycore.services.keys import provider_for, unwrap_raw, wrap_context

    keys = list(
        TenantKey.objects.filter(tenant_id=job.tenant_id, id__gt=cursor, id__lte=chunk.last_id)
        .exclude(state=TenantKeyState.DESTROYED)
        .order_by("id")[: batch_size()]
    )
    if not keys:
        return None
    tenant = Tenant.objects.get(pk=job.tenant_id)
    target = KmsConfig.objects.filter(pk=job.target_config_id).first()
    if target is None:
        raise JobBlocked("The target configuration was deleted.")
    if target.state not in UNWRAP_STATES:
        raise JobBlocked(
            f"The target key {target.name} is {target.get_state_display().lower()}; re-enable it, then retry the job."
        )
    stamp = _config_stamp(target.pk)
    provider = provider_for(target)
    in_process = not get_provider_class(target.provider).periodic_health_check
    if not in_process:
        keys = keys[: remote_batch_size()]
    for key in keys:
        key.tenant = tenant
    verified = set(
        TenantKeyWrap.objects.filter(tenant_key__in=keys, kms_config=target, verified_at__isnull=False).values_list(
            "tenant_key_id", flat=True
        )
    )
    wraps: dict[int, list[TenantKeyWrap]] = defaultdict(list)
    for wrap in (
        TenantKeyWrap.objects.filter(tenant_key__in=keys)
        .select_related("kms_config")
        .order_by("-kms_config__is_primary", "-id")
    ):
        wraps[wrap.tenant_key_id].append(wrap)
    new_wraps: list[TenantKeyWrap] = []
    done = failed = 0
    last_error = ""
    reached = cursor
    transient: errors.KeyCoreError | None = None
    now = timezone.now()
    for key in keys:
        if key.pk in verified:
            done += 1
            reached = key.pk
            continue
        try:
            usable = [w for w in wraps[key.pk] if w.kms_config.state in UNWRAP_STATES]
            if usable:
                kms_acquire(usable[0].kms_config, 1)
            raw = unwrap_raw(tenant, key, wraps[key.pk])
            context = wrap_context(target, tenant, key.version)
            kms_acquire(target, 2)
            wrapped = provider.wrap(raw, context)
            if not hmac.compare_digest(provider.unwrap(wrapped, context), raw):
                raise errors.KmsMisconfigured(f"Verification of the new wrap under {target.name} failed.")
        except errors.KeyCoreError as exc:
            if exc.retryable:
                transient = exc
                break
            failed += 1
            last_error = f"tenant key v{key.version}: {exc.detail}"
            reached = key.pk
            continue
        new_wraps.append(TenantKeyWrap(tenant_key=key, kms_config=target, wrapped=wrapped, verified_at=now))
        done += 1
        reached = key.pk
    if reached != cursor:
        with _batch(chunk.pk, worker, cursor) as progress:
            Tenant.objects.select_for_update(no_key=True).filter(
                pk=tenant.pk
            ).first()  # wraps of a tenant are written in turn
            if _config_stamp(target.pk) != stamp:
                raise _Restart()  # the target's KEK or state changed meanwhile: wrap again under what it is now
            TenantKeyWrap.objects.bulk_create(
                new_wraps,
                update_conflicts=True,
                unique_fields=["tenant_key", "kms_config"],
                update_fields=["wrapped", "verified_at"],
            )
            _fault_point("rewrap_written")
            progress.cursor, progress.done, progress.failed, progress.error = reached, done, failed, last_error
    _fault_point("batch_committed")
    if transient is not None:
        raise transient
    return reached


def _finish_rewrap(job: RekeyJob) -> None:
    from keycore.services.keys import bump_epoch

    live = TenantKey.objects.filter(tenant_id=job.tenant_id).exclude(state=TenantKeyState.DESTROYED)
    under_target = TenantKeyWrap.objects.filter(
        tenant_key=OuterRef("pk"), kms_config_id=job.target_config_id, verified_at__isnull=False
    )
    missing = live.exclude(Exists(under_target)).count()
    if missing:
        job.failed = max(job.failed, missing)
        job.last_error = job.last_error or f"{missing} tenant key(s) have no verified wrap under the target."
        return
    source = KmsConfig.objects.filter(pk=job.source_config_id).first()
    if source is not None and source.state == ConfigState.DECRYPT_ONLY and not job.failed:
        # every key has a verified wrap under the target: the old ones under the decrypt-only source can go
        TenantKeyWrap.objects.filter(kms_config=source, tenant_key__tenant_id=job.tenant_id).delete()
        bump_epoch()


# --- KEK rotation: a new KEK inside each local configuration ------------------------------------------


def _update_rows(model, columns: list[tuple[str, str]], rows: list[tuple], match: tuple[str, str] | None = None) -> int:
    """``UPDATE model SET columns WHERE id = row[0] [AND match = row[-1]]`` for many rows at once; rows changed.

    ``columns`` are (column, PostgreSQL type); a row is (id, *values[, expected]).
    PostgreSQL: the rows go by binary COPY into a temporary table (emptied at
    commit), then one ``UPDATE … FROM`` — the cheapest way in and no statement
    that grows with the batch. SQLite: ``executemany``.
    """
    if not rows:
        return 0
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            names = ["id", *(name for name, _ in columns), *(["expected"] if match else [])]
            types = ["int8", *(kind for _, kind in columns), *([match[1]] if match else [])]
            scratch = f"keycore_job_{model._meta.model_name}_{len(columns)}{'_cas' if match else ''}"
            definition = ", ".join(f"{name} {kind}" for name, kind in zip(names, types, strict=True))
            assignments = ", ".join(f"{quote(name)} = v.{name}" for name, _ in columns)
            condition = f"t.id = v.id AND t.{quote(match[0])} = v.expected" if match else "t.id = v.id"
            with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as raw:
                raw.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {scratch} ({definition}) ON COMMIT DELETE ROWS")
                raw.execute(f"TRUNCATE {scratch}")
                with raw.copy(f"COPY {scratch} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(types)
                    for row in rows:
                        copy.write_row(row)
                raw.execute(
                    f"UPDATE {table} AS t SET {assignments} FROM {scratch} AS v WHERE {condition}"  # noqa: S608
                )
                return raw.rowcount
        assignments = ", ".join(f"{quote(name)} = %s" for name, _ in columns)
        condition = f"id = %s AND {quote(match[0])} = %s" if match else "id = %s"
        ordered = [(*row[1 : len(columns) + 1], row[0], *row[len(columns) + 1 :]) for row in rows]
        cursor.executemany(f"UPDATE {table} SET {assignments} WHERE {condition}", ordered)  # noqa: S608
        return cursor.rowcount


def _insert_rows(model, rows: list[dict[str, Any]]) -> None:
    """Insert rows (attname → value) of ``model`` at once: COPY on PostgreSQL, executemany elsewhere."""
    if not rows:
        return
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    if connection.vendor == "postgresql":
        from psycopg.types.json import Jsonb

        jsons = [isinstance(f, models.JSONField) for f in fields]
        statement = f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN"
        with (
            connection.wrap_database_errors,
            psycopg.Cursor(connection.connection) as raw,
            raw.copy(statement) as copy,
        ):
            for row in rows:
                copy.write_row(
                    [Jsonb(row[f.attname]) if j else row.get(f.attname) for f, j in zip(fields, jsons, strict=True)]
                )
        return
    # as the ORM would: each field prepares its own value (dates, JSON, addresses)
    values = [[f.get_db_prep_save(row.get(f.attname), connection) for f in fields] for row in rows]
    marks = ", ".join(["%s"] * len(fields))
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({marks})", values)  # noqa: S608


def _bulk_update_wraps(rows: list[tuple[int, bytes]], now) -> None:
    _update_rows(TenantKeyWrap, [("wrapped", "bytea"), ("verified_at", "timestamptz")], [(*r, now) for r in rows])


def _bulk_swap_sealed(rows: list[tuple[int, bytes, bytes]]) -> int:
    """Set ``sealed_secrets`` = new where it still is old (compare-and-set); returns rows changed."""
    now = timezone.now()
    return _update_rows(
        KmsConfig,
        [("sealed_secrets", "bytea"), ("updated_at", "timestamptz")],
        [(pk, new, now, old) for pk, old, new in rows],
        match=("sealed_secrets", "bytea"),
    )


class _EventRow(dict):
    """An audit row as attname → value, readable as attributes by ``audit_payload``."""

    __getattr__ = dict.get


def _audit_tenants(actor: Actor, action: str, rows: list[tuple[int, str, str, str, dict[str, Any]]]) -> None:
    """Append one audit event per (tenant id, target type, target id, target repr, changes) to its tenant's chain.

    ``changes`` must be JSON-ready and hold no secret: callers pass fixed keys
    (fingerprints, counts, the job), checked once here with ``scrub``.

    The same chain rules as :func:`keycore.services.audit.audit_record`, set-based:
    heads locked in tenant order (as key-use flushes lock them), hashes chained,
    rows inserted at once, heads moved and re-signed at once.
    """
    if not rows:
        return
    sample = rows[0][4]
    if scrub(sample) != sample or json.loads(json.dumps(sample)) != sample:
        raise errors.InvalidInput("Set-based audit events take plain, secret-free changes only.")
    now = timezone.now()
    keys = sorted({chain_key(tenant_id) for tenant_id, *_ in rows})

    def lock(wanted):
        chains = EventChain.objects.select_for_update(no_key=True).filter(key__in=wanted)
        ordered = chains.order_by(Cast(Substr("key", 8), BigIntegerField()))
        ordered = ordered.values_list("pk", "key", "seq", "last_hash")
        return {key: [pk, seq, last] for pk, key, seq, last in ordered}

    heads = lock(keys)
    if len(heads) < len(keys):  # a tenant without any event yet
        EventChain.objects.bulk_create([EventChain(key=k) for k in keys if k not in heads], ignore_conflicts=True)
        heads.update(lock([k for k in keys if k not in heads]))
    common = {
        "action": action,
        "actor_user_id": actor.user.pk if actor.user is not None and actor.user.pk else None,
        "actor_api_key_id": actor.api_key.pk if actor.api_key is not None else None,
        "actor_label": actor.label[:200],
        "source_ip": normalise_ip(actor.source_ip),
        "user_agent": actor.user_agent[:300],
        "created_at": now,
    }
    events = []
    for tenant_id, target_type, target_id, target_repr, changes in sorted(rows, key=lambda row: row[0]):
        key = chain_key(tenant_id)
        head = heads[key]
        head[1] += 1
        event = _EventRow(
            common,
            tenant_id=tenant_id,
            chain=key,
            seq=head[1],
            prev_hash=head[2],
            target_type=target_type[:40],
            target_id=target_id[:64],
            target_repr=target_repr[:300],
            changes=changes,
        )
        event["hash"] = head[2] = event_digest(head[2], audit_payload(event))
        events.append(event)
    _insert_rows(AuditEvent, events)
    moved = []
    for key, (pk, seq, last) in heads.items():  # what advance_head does, for many heads in one statement
        moved.append((pk, seq, last, *chain_sign("head", key, seq, last)))
    _update_rows(
        EventChain, [("seq", "int8"), ("last_hash", "text"), ("head_key_id", "text"), ("head_mac", "text")], moved
    )


def _kek_batch(job: RekeyJob, chunk: RekeyJobChunk, worker: str, cursor: int) -> int | None:
    from keycore.sealing import CONFIG_SECRETS, root_keyring

    candidates = list(
        _rotatable_configs()
        .filter(id__gt=cursor, id__lte=chunk.last_id)
        .order_by("id")
        .values_list("id", "tenant_id")[: batch_size()]
    )
    if not candidates:
        return None
    last = candidates[-1][0]
    # ranges and subqueries, not lists of ids: the statements stay small whatever the batch size
    in_batch = _rotatable_configs().filter(id__gt=cursor, id__lte=last)
    marker = job.uid.hex
    keyring = root_keyring()
    with _batch(chunk.pk, worker, cursor) as progress:
        # tenant rows first: creating a tenant key locks its tenant, so no wrap appears under an old KEK meanwhile
        tenants = {
            pk: (uid, ext)
            for pk, uid, ext in Tenant.objects.select_for_update(no_key=True)
            .filter(pk__in=in_batch.values("tenant_id"))
            .order_by("pk")
            .values_list("pk", "uid", "external_id")
        }
        configs = list(
            in_batch.order_by("id").values_list(
                "id", "uid", "tenant_id", "provider", "name", "settings", "sealed_secrets"
            )
        )
        wraps: dict[int, list[tuple[int, bytes, int, bytes]]] = defaultdict(list)
        for wrap_id, config_id, wrapped, version, check in TenantKeyWrap.objects.filter(
            kms_config_id__gt=cursor, kms_config_id__lte=last
        ).values_list("id", "kms_config_id", "wrapped", "tenant_key__version", "tenant_key__check_value"):
            wraps[config_id].append((wrap_id, bytes(wrapped), version, bytes(check)))
        wrap_rows: list[tuple[int, bytes]] = []
        sealed_rows: list[tuple[int, bytes, bytes]] = []
        progress.done += len(candidates) - len(configs)  # retired or destroyed meanwhile: nothing to rotate
        for config_id, config_uid, tenant_id, provider, name, config_settings, blob in configs:
            tenant_uid, external_id = tenants[tenant_id]
            cls = get_provider_class(provider)
            blob = bytes(blob)
            try:
                secrets = json.loads(keyring.unseal(blob, purpose=CONFIG_SECRETS, context=str(config_uid)))
                if secrets.get("rotation") == marker:
                    new_secrets = secrets  # rotated by this job already (a retry): only finish its rewraps
                else:
                    new_secrets = {**cls.rotate_kek(secrets), "rotation": marker}
                current = cls(config_settings, new_secrets)
                before = current.previous_key_ids[0] if new_secrets is not secrets else current.current_key_id
            except errors.KeyCoreError as exc:
                progress.failed += 1
                progress.error = f"{name} of tenant {external_id}: {exc.detail}"
                continue
            moved, stuck = 0, set()
            for wrap_id, wrapped, version, check in wraps[config_id]:
                try:
                    if not current.needs_rewrap(wrapped):
                        continue
                    context = WrapContext(tenant_uid.hex, external_id, config_uid.hex, version)
                    raw = current.unwrap(wrapped, context)
                    if not hmac.compare_digest(key_check_value(raw), check):
                        raise errors.KmsMisconfigured("the unwrapped key does not match its check value")
                    rewrapped = current.wrap(raw, context)
                    if not hmac.compare_digest(current.unwrap(rewrapped, context), raw):
                        raise errors.KmsMisconfigured("the new wrap did not verify")
                except errors.KeyCoreError as exc:
                    stuck.add(cls.wrap_key_id(wrapped))  # its KEK stays, for unwrap only
                    progress.error = f"{name} of tenant {external_id}, tenant key v{version}: {exc.detail}"
                    continue
                wrap_rows.append((wrap_id, rewrapped))
                moved += 1
            # the old KEK goes in this same transaction, unless a wrap still needs it
            final = {**cls.drop_previous(new_secrets, stuck), "rotation": marker}
            sealed = keyring.seal(
                json.dumps(final, sort_keys=True).encode(), purpose=CONFIG_SECRETS, context=str(config_uid)
            )
            sealed_rows.append((config_id, blob, sealed))
            if stuck:
                progress.failed += 1
            else:
                progress.done += 1
            progress.audit.append(
                (
                    tenant_id,
                    "kmsconfig",
                    str(config_uid),
                    f"{name}: KEK rotated",
                    {
                        "fingerprint": [before, current.current_key_id],
                        "tenant_keys_rewrapped": [None, moved],
                        "job": [None, str(job.uid)],
                    },
                )
            )
        now = timezone.now()
        _bulk_update_wraps(wrap_rows, now)
        _fault_point("kek_between_writes")
        if _bulk_swap_sealed(sealed_rows) != len(sealed_rows):
            raise _Restart()  # a configuration's secrets changed under us: roll back, read again
        _audit_tenants(Actor.system("kek-rotation"), "kms_config.kek_rotated", progress.audit)
        progress.cursor = last
        # other processes rebuild their provider for a configuration when its sealed secrets change
    _fault_point("batch_committed")
    return progress.cursor


# --- root-key rotation: re-seal every sealed secret ---------------------------------------------------


def _check_root_key(job: RekeyJob):
    from keycore.sealing import root_keyring

    keyring = root_keyring()
    wanted = job.params.get("root_key_id")
    if keyring.current_id != wanted:
        raise errors.KmsMisconfigured(
            f"This worker seals under root key {keyring.current_id}, but the job moves secrets to {wanted}: "
            "give every process the same KEYCORE_ROOT_KEY (and the old key in KEYCORE_ROOT_KEY_PREVIOUS)."
        )
    return keyring


class _WrongRootKey(errors.KmsUnreachable):
    """A worker with another root key: retryable, so the chunk waits for a correctly configured worker."""

    code = "root-key-mismatch"
    title = "Worker has another root key"


def _root_config_batch(job: RekeyJob, chunk: RekeyJobChunk, worker: str, cursor: int) -> int | None:
    from keycore.sealing import CONFIG_SECRETS

    try:
        keyring = _check_root_key(job)
    except errors.KmsMisconfigured as exc:
        raise _WrongRootKey(exc.detail) from exc
    rows = list(
        KmsConfig.objects.filter(id__gt=cursor, id__lte=chunk.last_id)
        .order_by("id")
        .values_list("id", "uid", "sealed_secrets")[: batch_size()]
    )
    if not rows:
        return None
    swaps, done, failed, last_error = [], 0, 0, ""
    for pk, uid, blob in rows:
        if blob is None:
            done += 1  # destroyed meanwhile: nothing sealed left
            continue
        blob = bytes(blob)
        try:
            if keyring.needs_reseal(blob):
                swaps.append((pk, blob, keyring.reseal(blob, purpose=CONFIG_SECRETS, context=str(uid))))
            done += 1
        except errors.KeyCoreError as exc:
            failed += 1
            last_error = f"KMS configuration {uid}: {exc.detail}"
    with _batch(chunk.pk, worker, cursor) as progress:
        # a secret replaced meanwhile was sealed under the current key already; the final check confirms it
        _bulk_swap_sealed(swaps)
        progress.cursor, progress.done, progress.failed, progress.error = rows[-1][0], done, failed, last_error
    return progress.cursor


def _reseal_values(value: Any, keyring, marker: str, purpose: str) -> tuple[Any, int]:
    """``value`` (JSON) with every sealed string re-sealed; and how many were."""
    import base64

    if isinstance(value, str) and value.startswith(marker):
        blob = base64.b64decode(value[len(marker) :])
        if not keyring.needs_reseal(blob):
            return value, 0
        new = keyring.reseal(blob, purpose=purpose, context="allauth")
        return marker + base64.b64encode(new).decode(), 1
    if isinstance(value, dict):
        out, count = {}, 0
        for name, item in value.items():
            out[name], n = _reseal_values(item, keyring, marker, purpose)
            count += n
        return out, count
    if isinstance(value, list):
        items = [_reseal_values(item, keyring, marker, purpose) for item in value]
        return [item for item, _ in items], sum(n for _, n in items)
    return value, 0


def _root_authenticator_batch(job: RekeyJob, chunk: RekeyJobChunk, worker: str, cursor: int) -> int | None:
    from allauth.mfa.models import Authenticator

    from keycore.accounts import MFAAdapter

    try:
        keyring = _check_root_key(job)
    except errors.KmsMisconfigured as exc:
        raise _WrongRootKey(exc.detail) from exc
    ids = list(
        Authenticator.objects.filter(id__gt=cursor, id__lte=chunk.last_id)
        .order_by("id")
        .values_list("id", flat=True)[: batch_size()]
    )
    if not ids:
        return None
    with _batch(chunk.pk, worker, cursor) as progress:
        for authenticator in Authenticator.objects.select_for_update(no_key=True).filter(pk__in=ids).order_by("id"):
            try:
                data, count = _reseal_values(authenticator.data, keyring, MFAAdapter.MARKER, MFAAdapter.PURPOSE)
            except (errors.KeyCoreError, ValueError) as exc:
                progress.failed += 1
                progress.error = f"MFA authenticator {authenticator.pk}: {getattr(exc, 'detail', exc)}"
                continue
            if count:
                Authenticator.objects.filter(pk=authenticator.pk).update(data=data)
            progress.done += 1
        progress.cursor = ids[-1]
    return progress.cursor


def root_rotation_leftovers() -> dict[str, int]:
    """How many sealed secrets are still under a root key other than the current one (0, 0 when done)."""
    from allauth.mfa.models import Authenticator

    from keycore.accounts import MFAAdapter
    from keycore.sealing import root_keyring

    keyring = root_keyring()
    configs = sum(
        1
        for blob in KmsConfig.objects.filter(sealed_secrets__isnull=False)
        .values_list("sealed_secrets", flat=True)
        .iterator(chunk_size=5000)
        if keyring.needs_reseal(bytes(blob))
    )

    class _Probe:
        def needs_reseal(self, blob):
            return keyring.needs_reseal(blob)

        def reseal(self, blob, **kwargs):
            return blob

    mfa = 0
    for data in Authenticator.objects.values_list("data", flat=True).iterator(chunk_size=5000):
        mfa += _reseal_values(data, _Probe(), MFAAdapter.MARKER, MFAAdapter.PURPOSE)[1]
    return {"kms_configs": configs, "mfa_secrets": mfa}


# --- tenant-key retirement ----------------------------------------------------------------------------


def _retire_batch(job: RekeyJob, chunk: RekeyJobChunk, worker: str, cursor: int) -> int | None:
    from keycore.services.keys import _history, bump_epoch

    if cursor >= chunk.last_id:
        return None
    with _batch(chunk.pk, worker, cursor) as progress:
        tenant = Tenant.objects.select_for_update(no_key=True).get(pk=job.tenant_id)
        key = TenantKey.objects.select_for_update(no_key=True).get(pk=chunk.last_id)
        progress.cursor = key.pk
        if key.state == TenantKeyState.DESTROYED:
            progress.done = 1
            return progress.cursor
        newest = TenantKey.objects.filter(tenant=tenant, state=TenantKeyState.ACTIVE).order_by("-version").first()
        if key.state != TenantKeyState.RETIRING or newest is None or newest.version < key.version:
            progress.failed = 1
            progress.error = f"Tenant key v{key.version} is {key.state} and the newest version; it was not destroyed."
            return progress.cursor
        wraps = TenantKeyWrap.objects.filter(tenant_key=key).delete()[0]
        key.state = TenantKeyState.DESTROYED
        key.destroyed_at = timezone.now()
        key.save(update_fields=["state", "destroyed_at"])
        primary = KmsConfig.objects.filter(tenant=tenant, is_primary=True).first()
        actor = Actor(label=job.params.get("confirmed_by") or "system:key-retirement")
        _history(tenant, primary, HistoryAction.KEY_DESTROYED, actor, f"tenant key v{key.version}")
        audit_record(
            actor=actor,
            action="tenant_key.destroyed",
            tenant=tenant,
            target=key,
            target_repr=f"tenant key v{key.version}",
            changes={"state": [TenantKeyState.RETIRING, TenantKeyState.DESTROYED], "wraps_deleted": [None, wraps]},
        )
        bump_epoch()
        progress.done = 1
    return progress.cursor


_HANDLERS = {
    (JobKind.REWRAP, SUBJECT_TENANT_KEY): _rewrap_batch,
    (JobKind.KEK_ROTATION, SUBJECT_CONFIG): _kek_batch,
    (JobKind.ROOT_ROTATION, SUBJECT_CONFIG): _root_config_batch,
    (JobKind.ROOT_ROTATION, SUBJECT_AUTHENTICATOR): _root_authenticator_batch,
    (JobKind.KEY_RETIREMENT, SUBJECT_TENANT_KEY): _retire_batch,
}


# --- finishing ---------------------------------------------------------------------------------------


def _maybe_finish(job_id: int) -> RekeyJob | None:
    """Close the job once every chunk is done: kind-specific clean-up, final state, audit event."""
    with transaction.atomic():
        job = RekeyJob.objects.select_for_update(no_key=True, of=("self",)).select_related("tenant").get(pk=job_id)
        if job.state not in ACTIVE_JOB_STATES:
            return job
        if RekeyJobChunk.objects.filter(job=job).exclude(state=ChunkState.DONE).exists():
            return None
        job.chunks_done = job.chunks_total
        if job.kind == JobKind.REWRAP:
            _finish_rewrap(job)
        elif job.kind == JobKind.ROOT_ROTATION and not job.failed:
            left = root_rotation_leftovers()
            passes = int(job.params.get("passes", 1))
            if any(left.values()) and passes >= 3:
                job.failed = sum(left.values())
                job.last_error = (
                    f"{left['kms_configs']} KMS secret(s) and {left['mfa_secrets']} MFA secret(s) are still sealed "
                    "under an old root key after three passes: some process still seals with the old key."
                )
            elif any(left.values()):
                # secrets written meanwhile by a process with the old key: run again over everything
                RekeyJobChunk.objects.filter(job=job).update(
                    state=ChunkState.PENDING, cursor=F("first_id") - 1, done=0, failed=0
                )
                job.done, job.chunks_done = 0, 0
                job.params = {**job.params, "passes": passes + 1}
                job.save(update_fields=["done", "chunks_done", "params", "updated_at"])
                _enqueue_job(job)
                return job
        job.state = JobState.SUCCEEDED if not job.failed else JobState.FAILED
        job.pause_reason = ""
        job.retry_at = None
        job.finished_at = timezone.now()
        job.save()
        audit_record(
            actor=Actor.system("rekey-job"),
            action=f"rekey_job.{job.state}",
            tenant=job.tenant,
            target=job,
            changes={"done": [None, job.done], "failed": [None, job.failed], "total": [None, job.total]},
        )
    return job


def job_run(job_id: int) -> RekeyJob:
    """Run a whole job in this process (no worker): plan, every chunk in turn, finish.

    For the management command's ``--inline`` and for small installations; a KMS
    outage raises ChunkPaused with the job paused, as on a worker.
    """
    for chunk_id in job_plan(job_id):
        attempt = 0
        while True:
            try:
                job_run_chunk(chunk_id, attempt=attempt)
                break
            except ChunkBusy as busy:
                time.sleep(min(busy.wait, 5.0))
            attempt += 1
    _maybe_finish(job_id)
    return RekeyJob.objects.get(pk=job_id)


# --- watchdog -----------------------------------------------------------------------------------------


def job_resume_stalled(*, startup: bool = False) -> list[tuple[int, float]]:
    """(chunk id, countdown) of chunks whose task was lost: a killed worker, a lost retry.

    Runs every minute (beat) and when a worker starts. Leased chunks are left to
    their owner until the lease expires; a task re-delivered anyway finds the
    chunk busy or done and does nothing twice.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=0 if startup else max(lease_seconds() * 2, 60))
    out: list[tuple[int, float]] = []
    chunks = (
        RekeyJobChunk.objects.filter(job__state__in=ACTIVE_JOB_STATES)
        .exclude(state=ChunkState.DONE)
        .exclude(job__kind=JobKind.KEY_RETIREMENT, job__params__confirmed=False)
        .select_related("job")
        .only("id", "state", "lease_until", "enqueued_at", "job__retry_at", "job__state")
    )
    for chunk in chunks.iterator():
        if chunk.state == ChunkState.RUNNING and chunk.lease_until and chunk.lease_until > now:
            if startup:
                out.append((chunk.pk, (chunk.lease_until - now).total_seconds() + 0.5))
            continue
        if chunk.state == ChunkState.PAUSED:
            retry_at = chunk.job.retry_at
            if retry_at is not None and retry_at > stale:
                continue  # its own retry is due soon
        elif chunk.state == ChunkState.PENDING and chunk.enqueued_at and chunk.enqueued_at > stale:
            continue
        out.append((chunk.pk, 0.0))
    return out


def jobs_never_planned() -> list[int]:
    """Jobs whose planning task was lost (waiting for a minute without chunks)."""
    cutoff = timezone.now() - timedelta(minutes=1)
    return list(
        RekeyJob.objects.filter(state__in=[JobState.PENDING, JobState.RUNNING], chunks_total=0, created_at__lt=cutoff)
        .exclude(kind=JobKind.KEY_RETIREMENT, params__confirmed=False)
        .values_list("id", flat=True)
    )


# --- scheduled tenant-key rotation --------------------------------------------------------------------


def tenants_due_for_rotation(now=None) -> list[int]:
    """Ids of active tenants whose newest tenant key is older than their ``key_rotation_days``.

    Set-based: one query per distinct rotation period (there are a handful), each
    a scan of tenants with a per-tenant index lookup of the newest version.
    """
    now = now or timezone.now()
    tenants = Tenant.objects.filter(
        status=TenantStatus.ACTIVE,
        key_rotation_days__gt=0,
        kms_configs__is_primary=True,
        kms_configs__state=ConfigState.ACTIVE,
    )
    newest = (
        TenantKey.objects.filter(tenant=OuterRef("pk"))
        .exclude(state=TenantKeyState.DESTROYED)
        .order_by("-version")
        .values("created_at")[:1]
    )
    due: list[int] = []
    for days in tenants.values_list("key_rotation_days", flat=True).distinct().order_by():
        due += list(
            tenants.filter(key_rotation_days=days)
            .annotate(newest=Subquery(newest))
            .filter(newest__lte=now - timedelta(days=days))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    return due


def tenant_key_rotate_if_due(*, tenant_id: int, now=None) -> TenantKey | None:
    """Create the tenant's next key version if it is (still) due; idempotent under re-delivery."""
    from keycore.services.keys import tenant_key_create

    now = now or timezone.now()
    primary = KmsConfig.objects.filter(tenant_id=tenant_id, is_primary=True).first()
    if primary is None:
        return None
    kms_acquire(primary, 2)
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update(no_key=True).get(pk=tenant_id)
        if tenant.status != TenantStatus.ACTIVE or not tenant.key_rotation_days:
            return None
        newest = (
            TenantKey.objects.filter(tenant=tenant)
            .exclude(state=TenantKeyState.DESTROYED)
            .order_by("-version")
            .values_list("created_at", flat=True)
            .first()
        )
        if newest is not None and newest > now - timedelta(days=tenant.key_rotation_days):
            return None
        return tenant_key_create(tenant=tenant, actor=Actor.system("key-rotation-schedule"))
