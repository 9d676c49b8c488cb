"""The job engine: plan a job into chunks, lease them to workers, work them in batches, retry, finish.

A job is a row; its work is split into :class:`~keycore.models.jobs.RekeyJobChunk`
rows (id ranges), and Celery tasks carry only ids. A chunk is worked in
*batches*; each batch is one transaction that writes the new state of its items
**and** moves the chunk's cursor and the job's counters, after checking that this
worker still holds the chunk's lease. So a killed worker, a re-delivered task,
a dropped database connection or a second worker on the same chunk can neither
repeat committed work nor skip any; on top of that every item is idempotent by
its own state, so a retry of a whole job redoes only what is missing.

What a job does to its items is its *kind*'s business: one module per kind,
registered by name in :data:`KINDS` the way ``providers/registry.py`` registers
providers. The engine knows no kind.
"""

from __future__ import annotations

import abc
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from importlib import import_module
from typing import Any, ClassVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q, Sum
from django.dispatch import Signal
from django.utils import timezone

from keycore import errors
from keycore.models import RekeyJob
from keycore.models.jobs import ACTIVE_JOB_STATES, ChunkState, JobKind, JobState, RekeyJobChunk
from keycore.services.audit import Actor, audit_record
from keycore.services.sovereignty import guard, vendor_job_refusal
from keycore.services.summary import tenant_summary_sync

log = logging.getLogger(__name__)

#: which module implements each kind (a :class:`JobKindRunner` subclass), imported when first needed
KINDS: dict[str, str] = {
    JobKind.REWRAP: "keycore.services.jobs.rewrap.Rewrap",
    JobKind.KEK_ROTATION: "keycore.services.jobs.kek_rotation.KekRotation",
    JobKind.ROOT_ROTATION: "keycore.services.jobs.root_rotation.RootRotation",
    JobKind.KEY_RETIREMENT: "keycore.services.jobs.key_retirement.KeyRetirement",
    JobKind.VENDOR_KEY_MOVE: "keycore.services.jobs.vendor_key_move.VendorKeyMove",
}

#: sent inside a batch's transaction once its writes are done, before it commits (sender: the kind's runner class)
batch_written = Signal()
#: sent after a batch committed (sender: the kind's runner class; ``job_id``, ``chunk_id``, ``done``, ``failed``)
batch_committed = Signal()


# --- tuning --------------------------------------------------------------------------------------


def chunk_size() -> int:
    """Items per chunk (one task); sized so a chunk ends well within the broker's visibility timeout."""
    return settings.KEYCORE_JOB_CHUNK_SIZE


def batch_size() -> int:
    """Items per transaction for work done in process (local KEKs, re-sealing)."""
    return settings.KEYCORE_JOB_BATCH_SIZE


def remote_batch_size() -> int:
    """Items per transaction when every item is a round trip to a remote KMS."""
    return settings.KEYCORE_JOB_REMOTE_BATCH_SIZE


def lease_seconds() -> float:
    """How long a worker owns a chunk without renewing (it renews with every batch)."""
    return settings.KEYCORE_JOB_LEASE_SECONDS


def retry_delay(attempt: int) -> float:
    """Exponential backoff with jitter for a paused chunk: 1, 2, 4 … seconds, capped."""
    ceiling = min(settings.KEYCORE_JOB_RETRY_MAX, settings.KEYCORE_JOB_RETRY_BASE * 2 ** min(attempt, 16))
    return ceiling / 2 + random.random() * ceiling / 2


def visibility_timeout() -> float:
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    return float(options.get("visibility_timeout") or 3600)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


# --- outcomes the tasks act on -------------------------------------------------------------------


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


class LeaseLost(Exception):
    """Another worker took the chunk over (our lease expired): drop this batch, stop."""


class JobStopped(Exception):
    """The job was cancelled or finished meanwhile."""


class Restart(Exception):
    """Something a batch relied on changed before it could commit; compute it again."""


class Contention(errors.KeyCoreError):
    code = "job-contention"
    title = "Rows kept changing under the job"
    retryable = True


#: a batch recomputed this often in a row pauses the chunk instead (it retries later)
MAX_RESTARTS = 20


class JobBlocked(errors.Conflict):
    """The job cannot go on until someone acts (the target key is revoked…); it fails with this reason."""


# --- kinds -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """Rows of one table a job works on: their name in chunks, their ids in order, and items per chunk."""

    name: str
    ids: list[int]
    chunk_size: int


class JobKindRunner(abc.ABC):
    """What one kind of job does. One module per kind; the engine calls these and nothing else."""

    kind: ClassVar[str]
    #: the job waits (paused) for someone's confirmation before it is planned (``params["confirmed"]``)
    awaits_confirmation: ClassVar[bool] = False

    @abc.abstractmethod
    def plan(self, job: RekeyJob) -> list[Subject]:
        """The rows the job covers, per subject, in id order."""

    @abc.abstractmethod
    def run_batch(self, job: RekeyJob, chunk: RekeyJobChunk, worker: str, cursor: int) -> int | None:
        """Do the next batch of ``chunk`` after ``cursor`` inside :func:`batch`; the new cursor, or None when done."""

    def finish(self, job: RekeyJob) -> bool:
        """Kind-specific clean-up when every chunk is done (in the job's locked transaction).

        False when the kind re-planned the job to run again; the engine then leaves it running.
        """
        return True

    def on_cancel(self, job: RekeyJob) -> None:  # noqa: B027 - most kinds leave nothing to undo
        """Undo what starting the job did, if anything (in the cancelling transaction)."""

    def check_retry(self, job: RekeyJob) -> None:  # noqa: B027 - most kinds may always run again
        """Raise a typed error when the job may not run again."""


@cache
def runner_for(kind: str) -> JobKindRunner:
    path = KINDS.get(kind)
    if path is None:
        raise errors.InvalidInput(f"Unknown job kind {kind!r}.")
    module_name, _, class_name = path.rpartition(".")
    return getattr(import_module(module_name), class_name)()


def _awaiting_confirmation(prefix: str = "") -> Q:
    """Jobs that wait for a confirmation and have not had it: never planned, never resumed."""
    waiting = [kind for kind in KINDS if runner_for(kind).awaits_confirmation]
    return Q(**{f"{prefix}kind__in": waiting, f"{prefix}params__confirmed": False})


# --- starting, cancelling, retrying --------------------------------------------------------------


def started_by(actor: Actor):
    return actor.user if actor.user is not None and actor.user.pk else None


def enqueue(job: RekeyJob) -> None:
    """Queue the job's planning task once the caller's transaction commits."""
    from keycore.tasks import run_rekey_job  # a service queues its task on commit: the one allowed loop

    job_id = job.pk
    transaction.on_commit(lambda: run_rekey_job.delay(job_id))


def job_cancel(*, job: RekeyJob, actor: Actor) -> RekeyJob:
    """Stop a job after its current batch. Work already committed stays (it is all verified and consistent)."""
    if job.tenant_id is not None:
        guard(actor=actor, tenant=job.tenant, attempted="rekey_job.cancel", reason=vendor_job_refusal(job, "cancel"))
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
        runner_for(job.kind).on_cancel(job)
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
        runner_for(job.kind).check_retry(job)
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
        enqueue(job)
    return job


# --- planning ----------------------------------------------------------------------------------------


def _id_ranges(ids: list[int], size: int) -> list[tuple[int, int, int]]:
    return [(ids[i], ids[min(i + size, len(ids)) - 1], min(size, len(ids) - i)) for i in range(0, len(ids), size)]


def job_plan(job_id: int) -> list[int]:
    """Split the job into chunks (once) and return the ids of chunks that still have work."""
    with transaction.atomic():
        job = RekeyJob.objects.select_for_update(no_key=True).get(pk=job_id)
        if job.state not in ACTIVE_JOB_STATES:
            return []
        runner = runner_for(job.kind)
        if runner.awaits_confirmation and not job.params.get("confirmed"):
            return []
        if not job.chunks_total:
            chunks, total = [], 0
            for subject in runner.plan(job):
                for first, last, count in _id_ranges(subject.ids, subject.chunk_size):
                    chunks.append(
                        RekeyJobChunk(
                            job=job,
                            seq=len(chunks),
                            subject=subject.name,
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
                transaction.on_commit(lambda: maybe_finish(job_id))
        return list(
            RekeyJobChunk.objects.filter(job_id=job_id).exclude(state=ChunkState.DONE).values_list("id", flat=True)
        )


def job_mark_enqueued(chunk_ids: list[int]) -> None:
    RekeyJobChunk.objects.filter(pk__in=chunk_ids).update(enqueued_at=timezone.now())


# --- running a chunk -----------------------------------------------------------------------------------


@dataclass
class Progress:
    """What one batch did: where its cursor ends, how many items it did or failed, and why the last one failed."""

    cursor: int
    done: int = 0
    failed: int = 0
    error: str = ""
    audit: list[tuple[int, str, str, str, dict[str, Any]]] = field(default_factory=list)


@contextmanager
def batch(chunk_id: int, worker: str, cursor: int) -> Iterator[Progress]:
    """One unit of work: the caller's writes, the chunk's cursor and the job's counters commit together.

    Refuses (rolls back) when another worker took the chunk over or the job stopped.
    """
    with transaction.atomic():
        chunk = RekeyJobChunk.objects.select_for_update(no_key=True).get(pk=chunk_id)
        if chunk.lease_owner != worker or chunk.cursor != cursor:
            raise LeaseLost()
        job_row = RekeyJob.objects.filter(pk=chunk.job_id).values_list("state", "kind").get()
        if job_row[0] not in ACTIVE_JOB_STATES:
            raise JobStopped()
        progress = Progress(cursor=cursor)
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
        sender = type(runner_for(job_row[1]))
        batch_written.send(sender, job_id=chunk.job_id, chunk_id=chunk_id)
    batch_committed.send(sender, job_id=chunk.job_id, chunk_id=chunk_id, done=progress.done, failed=progress.failed)


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
    runner = runner_for(job.kind)
    cursor = chunk.cursor
    restarts = 0
    try:
        while True:
            try:
                next_cursor = runner.run_batch(job, chunk, worker, cursor)
            except Restart:
                restarts += 1
                if restarts >= MAX_RESTARTS:
                    raise Contention("The rows of this chunk kept changing; it tries again later.") from None
                continue
            restarts = 0
            if next_cursor is None:
                break
            cursor = next_cursor
    except LeaseLost:
        return False
    except JobStopped:
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
    maybe_finish(job.pk)
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


# --- finishing -----------------------------------------------------------------------------------------


def maybe_finish(job_id: int) -> RekeyJob | None:
    """Close the job once every chunk is done: the kind's clean-up, final state, audit event."""
    with transaction.atomic():
        job = RekeyJob.objects.select_for_update(no_key=True, of=("self",)).select_related("tenant").get(pk=job_id)
        if job.state not in ACTIVE_JOB_STATES:
            return job
        if RekeyJobChunk.objects.filter(job=job).exclude(state=ChunkState.DONE).exists():
            return None
        job.chunks_done = job.chunks_total
        if not runner_for(job.kind).finish(job):
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
        if job.tenant_id is not None:
            # the job moved (or destroyed) the tenant's keys: a key that held some of them may no longer matter
            tenant_summary_sync(tenant=job.tenant)
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
    maybe_finish(job_id)
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
        .exclude(_awaiting_confirmation("job__"))
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
        .exclude(_awaiting_confirmation())
        .values_list("id", flat=True)
    )
