"""Tenant-key retirement: destroy an old tenant-key version once the application has rekeyed its data.

The key turns *retiring* (new data already uses the newest version; old data
still decrypts and :func:`keycore.services.crypto.crypto_rekey` moves it to the
newest). The job waits (paused, with the reason) for
:func:`job_confirm_key_retirement` — the application's word that it rekeyed, or,
after the grace period (``KEYCORE_KEY_RETIREMENT_GRACE_DAYS``), the tenant's
acceptance — then destroys the version's wraps. The newest active version cannot
be retired; cancelling makes the version active again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from keycore import errors
from keycore.models import KmsConfig, RekeyJob, Tenant, TenantKey, TenantKeyWrap
from keycore.models.jobs import ACTIVE_JOB_STATES, JobKind, JobState, RekeyJobChunk
from keycore.models.keys import HistoryAction, TenantKeyState
from keycore.services.audit import Actor, audit_record
from keycore.services.jobs.engine import JobKindRunner, Subject, batch, enqueue, started_by
from keycore.services.keyring import bump_epoch, key_history_record
from keycore.services.sovereignty import guard, tenant_owns_key, vendor_job_refusal

SUBJECT = "tenant_key"
#: how long after a newer version appears the older one's counts are trusted: every process flushes its uses
#: within seconds, and an SDK lease on the older version lasts minutes at most
SETTLE = timedelta(minutes=15)


def _waiting_reason(version: int, grace_until) -> str:
    return (
        f"Waiting for confirmation that the application has rekeyed its data off tenant key v{version} "
        f"(or, after the grace period ends on {grace_until:%Y-%m-%d %H:%M} UTC, for the tenant to confirm)."
    )


def retirement_readiness(key: TenantKey, now=None) -> str | None:
    """Why this version may be destroyed without waiting, or None.

    Drained: no document KeyCore issued under it is left (the application rekeyed them all). Idle: nothing
    was decrypted under it for the tenant's ``retire_idle_days`` since it stopped being the newest version
    (KeyCore counts what it issued, not what the application later deleted; idleness covers the rest).
    """
    if key.state == TenantKeyState.DESTROYED:
        return None
    newer = (
        TenantKey.objects.filter(tenant_id=key.tenant_id, version__gt=key.version, state=TenantKeyState.ACTIVE)
        .order_by("version")
        .values_list("created_at", flat=True)
        .first()
    )
    now = now or timezone.now()
    if newer is None:
        return None  # the newest active version encrypts new data
    if newer > now - SETTLE:
        return None  # uses under it may still be on their way to the counts (a flush, an SDK lease)
    if key.documents <= 0:
        return "drained"
    idle_days = Tenant.objects.filter(pk=key.tenant_id).values_list("retire_idle_days", flat=True).first()
    if idle_days:
        since = max(newer, key.last_decrypt_at or newer)
        if since <= now - timedelta(days=idle_days):
            return "idle"
    return None


def job_start_key_retirement(*, key: TenantKey, actor: Actor, grace_days: int | None = None) -> RekeyJob:
    """Retire an old tenant-key version: decrypt-only now, destroyed once confirmed.

    A drained or idle version (:func:`retirement_readiness`) is confirmed at once.
    """
    guard(
        actor=actor,
        tenant=key.tenant,
        attempted="tenant_key.retire",
        reason=f"{key.tenant.name} uses its own key: only the tenant retires its key versions."
        if tenant_owns_key(key.tenant)
        else None,
        target=key,
    )
    if grace_days is None:
        grace_days = settings.KEYCORE_KEY_RETIREMENT_GRACE_DAYS
    grace_days = max(0, int(grace_days))
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
            started_by=started_by(actor),
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
        ready = retirement_readiness(key)
        if ready:
            job = _confirm(job, actor, ready)
    return job


def job_confirm_key_retirement(*, job: RekeyJob, actor: Actor, rekeyed: bool) -> RekeyJob:
    """Let a waiting retirement destroy its tenant-key version.

    ``rekeyed=True``: the application states it has rekeyed every EDEK off the
    version (allowed at any time). ``rekeyed=False``: the tenant accepts that data
    still under it becomes unreadable (allowed only after the grace period).
    """
    if job.tenant_id is not None:
        guard(
            actor=actor,
            tenant=job.tenant,
            attempted="rekey_job.confirm",
            reason=vendor_job_refusal(job, "confirm"),
            target=job,
        )
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
        return _confirm(job, actor, "rekeyed" if rekeyed else "grace period over")


def _confirm(job: RekeyJob, actor: Actor, confirmed_as: str) -> RekeyJob:
    """Let the waiting retirement run (in the caller's transaction): the version is destroyed on a worker."""
    job.params = {**job.params, "confirmed": True, "confirmed_by": actor.label[:200], "confirmed_as": confirmed_as}
    job.state = JobState.PENDING
    job.pause_reason = ""
    job.save(update_fields=["params", "state", "pause_reason", "updated_at"])
    audit_record(
        actor=actor,
        action="rekey_job.confirmed",
        tenant=job.tenant,
        target=job,
        changes={"confirmed_as": [None, confirmed_as]},
    )
    enqueue(job)
    return job


def retire_ready_versions(*, now=None) -> list[RekeyJob]:
    """For tenants that opted in: retire every older version that is drained or idle (hourly, in beat)."""
    started = []
    actor = Actor.system("auto-retirement")
    candidates = (
        TenantKey.objects.filter(tenant__auto_retire_versions=True, state=TenantKeyState.ACTIVE)
        .exclude(retirement_jobs_active())
        .select_related("tenant")
        .order_by("tenant_id", "version")
    )
    for key in candidates.iterator():
        if retirement_readiness(key, now) is None:
            continue
        try:
            started.append(job_start_key_retirement(key=key, actor=actor))
        except errors.Conflict:
            continue  # became the newest or was retired meanwhile
    return started


def retirement_jobs_active():
    """Versions with a retirement already under way (a filter for TenantKey querysets)."""
    return Exists(
        RekeyJob.objects.filter(tenant_key=OuterRef("pk"), kind=JobKind.KEY_RETIREMENT, state__in=ACTIVE_JOB_STATES)
    )


class KeyRetirement(JobKindRunner):
    kind = JobKind.KEY_RETIREMENT
    awaits_confirmation = True

    def plan(self, job: RekeyJob) -> list[Subject]:
        return [Subject(SUBJECT, [job.tenant_key_id] if job.tenant_key_id else [], 1)]

    def on_cancel(self, job: RekeyJob) -> None:
        if job.tenant_key_id:
            TenantKey.objects.filter(pk=job.tenant_key_id, state=TenantKeyState.RETIRING).update(
                state=TenantKeyState.ACTIVE, retiring_at=None
            )

    def check_retry(self, job: RekeyJob) -> None:
        if not job.params.get("confirmed"):
            raise errors.Conflict("This retirement waits for a confirmation, not for a retry.")

    def run_batch(self, job: RekeyJob, chunk: RekeyJobChunk, worker: str, cursor: int) -> int | None:
        if cursor >= chunk.last_id:
            return None
        with batch(chunk.pk, worker, cursor) as progress:
            tenant = Tenant.objects.select_for_update(no_key=True).get(pk=job.tenant_id)
            key = TenantKey.objects.select_for_update(no_key=True).get(pk=chunk.last_id)
            progress.cursor = key.pk
            if key.state == TenantKeyState.DESTROYED:
                progress.done = 1
                return progress.cursor
            newest = TenantKey.objects.filter(tenant=tenant, state=TenantKeyState.ACTIVE).order_by("-version").first()
            if key.state != TenantKeyState.RETIRING or newest is None or newest.version < key.version:
                progress.failed = 1
                progress.error = (
                    f"Tenant key v{key.version} is {key.state} and the newest version; it was not destroyed."
                )
                return progress.cursor
            wraps = TenantKeyWrap.objects.filter(tenant_key=key).delete()[0]
            key.state = TenantKeyState.DESTROYED
            key.destroyed_at = timezone.now()
            key.save(update_fields=["state", "destroyed_at"])
            primary = KmsConfig.objects.filter(tenant=tenant, is_primary=True).first()
            actor = Actor(label=job.params.get("confirmed_by") or "system:key-retirement")
            key_history_record(tenant, primary, HistoryAction.KEY_DESTROYED, actor, f"tenant key v{key.version}")
            audit_record(
                actor=actor,
                action="tenant_key.destroyed",
                tenant=tenant,
                target=key,
                target_repr=f"tenant key v{key.version}",
                changes={
                    "state": [TenantKeyState.RETIRING, TenantKeyState.DESTROYED],
                    "wraps_deleted": [None, wraps],
                },
            )
            bump_epoch()
            progress.done = 1
        return progress.cursor
