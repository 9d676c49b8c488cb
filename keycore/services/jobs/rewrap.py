"""Rewrap: move every live tenant key of one tenant under another configuration (a new primary key).

Started by :func:`keycore.services.keys.kms_config_make_primary`. A tenant key is
never left without a usable wrap: each new wrap is verified (unwrap and compare)
before it is written, the old configuration stays decrypt-only until the job
finishes, and old wraps go only when every key has a verified new one.
"""

from __future__ import annotations

import hmac
import json
from collections import defaultdict
from typing import Any

from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from keycore import errors
from keycore.models import KmsConfig, RekeyJob, Tenant, TenantKey, TenantKeyWrap
from keycore.models.jobs import ACTIVE_JOB_STATES, JobKind, JobState, RekeyJobChunk
from keycore.models.keys import UNWRAP_STATES, ConfigOwner, ConfigState, TenantKeyState
from keycore.providers.registry import get_provider_class
from keycore.services.audit import Actor, audit_record
from keycore.services.jobs.engine import (
    JobBlocked,
    JobKindRunner,
    Restart,
    Subject,
    batch,
    batch_size,
    chunk_size,
    enqueue,
    remote_batch_size,
    started_by,
    visibility_timeout,
)
from keycore.services.keyring import bump_epoch, provider_for, unwrap_raw, wrap_context
from keycore.services.kms_quota import kms_acquire

SUBJECT = "tenant_key"


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
        started_by=started_by(actor),
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
    enqueue(job)
    return job


def _config_stamp(config_id: int) -> tuple[Any, ...] | None:
    row = KmsConfig.objects.filter(pk=config_id).values_list("state", "settings", "sealed_secrets").first()
    if row is None:
        return None
    return (row[0], json.dumps(row[1], sort_keys=True), bytes(row[2] or b""))


class Rewrap(JobKindRunner):
    kind = JobKind.REWRAP

    def plan(self, job: RekeyJob) -> list[Subject]:
        ids = list(
            TenantKey.objects.filter(tenant_id=job.tenant_id)
            .exclude(state=TenantKeyState.DESTROYED)
            .order_by("id")
            .values_list("id", flat=True)
        )
        size = chunk_size()
        rated = KmsConfig.objects.filter(pk__in=[job.source_config_id, job.target_config_id], rate_limit__gt=0)
        for config in rated:
            # a chunk must end well within the visibility timeout: two requests per key at the quota
            size = max(1, min(size, int(config.rate_limit * visibility_timeout() / 6)))
        return [Subject(SUBJECT, ids, size)]

    def check_retry(self, job: RekeyJob) -> None:
        if job.state == JobState.CANCELLED:
            target = KmsConfig.objects.filter(pk=job.target_config_id).first()
            if target is None or not target.is_primary:
                raise errors.Conflict("The job's target is no longer the primary key; it was superseded.")

    def run_batch(self, job: RekeyJob, chunk: RekeyJobChunk, worker: str, cursor: int) -> int | None:
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
                f"The target key {target.name} is {target.get_state_display().lower()}; "
                "re-enable it, then retry the job."
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
            with batch(chunk.pk, worker, cursor) as progress:
                # wraps of a tenant are written in turn
                Tenant.objects.select_for_update(no_key=True).filter(pk=tenant.pk).first()
                if _config_stamp(target.pk) != stamp:
                    raise Restart()  # the target's KEK or state changed meanwhile: wrap again under what it is now
                TenantKeyWrap.objects.bulk_create(
                    new_wraps,
                    update_conflicts=True,
                    unique_fields=["tenant_key", "kms_config"],
                    update_fields=["wrapped", "verified_at"],
                )
                if target.owner == ConfigOwner.VENDOR and new_wraps:
                    # the tenant is told which versions a vendor-provided key ever held
                    TenantKey.objects.filter(pk__in=[w.tenant_key_id for w in new_wraps], vendor_held=False).update(
                        vendor_held=True
                    )
                progress.cursor, progress.done, progress.failed, progress.error = reached, done, failed, last_error
        if transient is not None:
            raise transient
        return reached

    def finish(self, job: RekeyJob) -> bool:
        live = TenantKey.objects.filter(tenant_id=job.tenant_id).exclude(state=TenantKeyState.DESTROYED)
        under_target = TenantKeyWrap.objects.filter(
            tenant_key=OuterRef("pk"), kms_config_id=job.target_config_id, verified_at__isnull=False
        )
        missing = live.exclude(Exists(under_target)).count()
        if missing:
            job.failed = max(job.failed, missing)
            job.last_error = job.last_error or f"{missing} tenant key(s) have no verified wrap under the target."
            return True
        if job.failed:
            return True
        target = KmsConfig.objects.filter(pk=job.target_config_id).first()
        wraps = TenantKeyWrap.objects.filter(tenant_key__tenant_id=job.tenant_id)
        # every key has a verified wrap under the target: the old ones under the decrypt-only source can go
        stale = Q(kms_config_id=job.source_config_id, kms_config__state=ConfigState.DECRYPT_ONLY)
        if target is not None and target.owner == ConfigOwner.TENANT and target.is_primary:
            # under the tenant's own key now: every vendor-provided wrap goes too, so only its keys open its data
            stale |= Q(kms_config__owner=ConfigOwner.VENDOR)
        if wraps.filter(stale).exclude(kms_config_id=job.target_config_id).delete()[0]:
            bump_epoch()
        return True
