"""Vendor-key move: put a set of tenants under one vendor key, a tenant at a time, with progress.

Started for tenants the vendor picked (filter → assign) or for every tenant another
vendor key serves (the vendor's own rotation or region move). For each tenant, in
one batch transaction: its configuration under the target vendor key (made if
missing), a verified wrap of every live tenant-key version under it, the switch of
the primary, and the retirement of the vendor-provided configurations it replaced
(their wraps deleted, so a backup plus the old KMS key no longer opens anything
new). The KMS calls are made before the transaction; what changed meanwhile (a new
key version, another primary) makes the batch compute again.

Sovereignty: a tenant that owns its key is never moved. The start refuses it (a
``vendor.refused`` event on its chain); a tenant that brought its key while the job
ran is refused the same way when its turn comes, and counted as failed.
"""

from __future__ import annotations

import bisect
import hmac
from collections import defaultdict

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from keycore import errors
from keycore.models import KmsConfig, RekeyJob, Tenant, TenantKey, TenantKeyWrap, VendorKey
from keycore.models.jobs import ACTIVE_JOB_STATES, JobKind, JobState
from keycore.models.keys import ConfigOwner, ConfigState, HistoryAction, TenantKeyState, VendorKeyState
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
)
from keycore.services.keyring import (
    bump_epoch,
    key_history_record,
    provider_for_vendor_key,
    unwrap_raw,
    wrap_context,
)
from keycore.services.sovereignty import (
    refuse,
    tenant_owns_key,
    tenants_owning_keys,
    vendor_key_replacement_refusal,
)
from keycore.services.summary import tenant_summary_sync
from keycore.services.vendor_keys import vendor_key_config_for

SUBJECT = "tenant"
#: tenants per transaction: each is a few KMS round trips per key version
TENANTS_PER_BATCH = 20


def job_start_vendor_key_move(
    *, vendor_key: VendorKey, tenants, actor: Actor, source: VendorKey | None = None
) -> tuple[RekeyJob | None, list[Tenant]]:
    """Start moving ``tenants`` (a queryset or list) under ``vendor_key``; returns the job and the refused tenants.

    Tenants that own their key are refused (audited on their chain) and left out;
    tenants already served by ``vendor_key`` are left out too. Returns no job when
    nothing is left to move. ``source`` only names the job (a move of one vendor
    key's tenants to another).
    """
    vendor_key = VendorKey.objects.get(pk=vendor_key.pk)
    if vendor_key.state != VendorKeyState.ACTIVE:
        raise errors.Conflict(f"{vendor_key.name} is retired; tenants cannot be moved under it.")
    if source is not None and source.pk == vendor_key.pk:
        raise errors.InvalidInput("Choose another vendor key to move the tenants to.")
    # one query for the ids, one for who owns a key: a filter may pick a hundred thousand tenants
    if isinstance(tenants, QuerySet):
        picked = tenants.order_by().values("pk")  # stays a subquery: no list of ids as parameters
        wanted = list(tenants.order_by().values_list("pk", flat=True))
    else:
        wanted = [tenant.pk for tenant in tenants]
        picked = wanted
    owning = tenants_owning_keys(picked)
    refused: list[Tenant] = []
    for tenant in Tenant.objects.filter(pk__in=owning).order_by("name"):
        # recorded on the tenant's own chain, committed even if nothing else is
        refuse(actor=actor, tenant=tenant, attempted="vendor_key.assign", reason=vendor_key_replacement_refusal(tenant))
        refused.append(tenant)
    wanted = [pk for pk in wanted if pk not in owning]
    already = set(
        KmsConfig.objects.filter(tenant_id__in=picked, vendor_key=vendor_key, is_primary=True).values_list(
            "tenant_id", flat=True
        )
    )
    ids = sorted(set(wanted) - already)
    if not ids:
        return None, refused
    scope = f"{len(ids)} tenant(s) to {vendor_key.name}"
    if source is not None:
        scope = f"{source.name} → {vendor_key.name}: {len(ids)} tenant(s)"
    with transaction.atomic():
        job = RekeyJob.objects.create(
            kind=JobKind.VENDOR_KEY_MOVE,
            scope=scope[:200],
            params={
                "vendor_key_id": vendor_key.pk,
                "vendor_key_name": vendor_key.name,
                "source_vendor_key_id": source.pk if source is not None else None,
                "tenant_ids": ids,
            },
            total=len(ids),
            started_by=started_by(actor),
            started_by_label=actor.label[:200],
        )
        audit_record(
            actor=actor,
            action="rekey_job.started",
            target=job,
            target_repr=f"move to vendor key {vendor_key.name}"[:300],
            changes={
                "kind": [None, job.kind],
                "vendor_key": [None, vendor_key.name],
                "tenants": [None, len(ids)],
                "refused": [None, len(refused)],
            },
        )
        enqueue(job)
    return job, refused


def job_actor(job: RekeyJob) -> Actor:
    """Whoever started the job, acting through it: the vendor (never KeyCore itself, so sovereignty applies)."""
    return Actor(label=f"{job.started_by_label} (job {job.uid})"[:200], user=None)


class VendorKeyMove(JobKindRunner):
    kind = JobKind.VENDOR_KEY_MOVE

    def plan(self, job: RekeyJob) -> list[Subject]:
        ids = sorted(job.params.get("tenant_ids", []))  # a tenant deleted meanwhile is skipped when its turn comes
        return [Subject(SUBJECT, ids, max(1, min(chunk_size(), 500)))]

    def run_batch(self, job, chunk, worker: str, cursor: int) -> int | None:
        wanted = job.params.get("tenant_ids", [])  # sorted when the job was made
        vendor_key = VendorKey.objects.filter(pk=job.params.get("vendor_key_id")).first()
        if vendor_key is None or vendor_key.state != VendorKeyState.ACTIVE:
            raise JobBlocked("The target vendor key was retired; start the move again with another one.")
        in_process = not get_provider_class(vendor_key.provider).periodic_health_check
        limit = min(TENANTS_PER_BATCH, batch_size() if in_process else remote_batch_size())
        start = bisect.bisect_right(wanted, cursor)
        turn = [pk for pk in wanted[start : start + max(1, limit)] if pk <= chunk.last_id]
        if not turn:
            return None
        tenants = list(Tenant.objects.filter(pk__in=turn).order_by("pk"))
        if not tenants:  # every one of them was deleted meanwhile
            with batch(chunk.pk, worker, cursor) as progress:
                progress.cursor, progress.done = turn[-1], len(turn)
            return turn[-1]
        provider = provider_for_vendor_key(vendor_key)
        actor = job_actor(job)
        # outside any transaction: unwrap every live version and wrap it under the vendor key, verified
        prepared: dict[int, dict[int, bytes]] = {}
        failures: dict[int, str] = {}
        transient: errors.KeyCoreError | None = None
        reached = cursor
        for tenant in tenants:
            try:
                prepared[tenant.pk] = self._wrap_all(tenant, vendor_key, provider, actor)
            except errors.KeyCoreError as exc:
                if exc.retryable:
                    transient = exc
                    break
                failures[tenant.pk] = exc.detail
            reached = tenant.pk
        if reached == cursor:
            raise transient  # type: ignore[misc]  # the first tenant's KMS is down: the engine pauses the chunk
        with batch(chunk.pk, worker, cursor) as progress:
            done = failed = 0
            last_error = ""
            for tenant in tenants:
                if tenant.pk > reached:
                    break
                if tenant.pk in failures:
                    failed += 1
                    last_error = f"{tenant.external_id}: {failures[tenant.pk]}"
                    continue
                outcome = self._switch(tenant, vendor_key, prepared[tenant.pk], actor, job)
                if outcome:
                    failed += 1
                    last_error = f"{tenant.external_id}: {outcome}"
                else:
                    done += 1
            progress.cursor, progress.done, progress.failed, progress.error = reached, done, failed, last_error
            bump_epoch()
        if transient is not None:
            raise transient
        return reached

    def _wrap_all(self, tenant: Tenant, vendor_key: VendorKey, provider, actor: Actor) -> dict[int, bytes]:
        """Every live key version of ``tenant`` wrapped under the vendor key and verified: {key id: wrapped}."""
        if tenant_owns_key(tenant):
            return {}  # refused, with its audit event, in the transaction
        with transaction.atomic():  # the configuration first (not primary, no wraps), so wraps name their own
            Tenant.objects.select_for_update(no_key=True).get(pk=tenant.pk)
            config = vendor_key_config_for(tenant=tenant, vendor_key=vendor_key, actor=actor)
        keys = list(TenantKey.objects.filter(tenant=tenant).exclude(state=TenantKeyState.DESTROYED).order_by("id"))
        wraps: dict[int, list[TenantKeyWrap]] = defaultdict(list)
        for wrap in (
            TenantKeyWrap.objects.filter(tenant_key__in=keys)
            .select_related("kms_config", "kms_config__vendor_key")
            .order_by("-kms_config__is_primary", "-id")
        ):
            wraps[wrap.tenant_key_id].append(wrap)
        out = {}
        for key in keys:
            if any(w.kms_config_id == config.pk and w.verified_at for w in wraps[key.pk]):
                continue  # done in an earlier attempt
            raw = unwrap_raw(tenant, key, wraps[key.pk])
            context = wrap_context(config, tenant, key.version)
            wrapped = provider.wrap(raw, context)
            if not hmac.compare_digest(provider.unwrap(wrapped, context), raw):
                raise errors.KmsMisconfigured(f"Verification of the new wrap under {vendor_key.name} failed.")
            out[key.pk] = wrapped
        return out

    def _switch(self, tenant: Tenant, vendor_key: VendorKey, wrapped: dict[int, bytes], actor: Actor, job) -> str:
        """In the batch's transaction: wraps, primary switch, old vendor configurations retired. '' when done."""
        tenant = Tenant.objects.select_for_update(no_key=True).get(pk=tenant.pk)
        reason = vendor_key_replacement_refusal(tenant)
        if reason:
            refuse(actor=actor, tenant=tenant, attempted="vendor_key.assign", reason=reason)
            return reason
        config = vendor_key_config_for(tenant=tenant, vendor_key=vendor_key, actor=actor)
        now = timezone.now()
        TenantKeyWrap.objects.bulk_create(
            [TenantKeyWrap(tenant_key_id=k, kms_config=config, wrapped=w, verified_at=now) for k, w in wrapped.items()],
            update_conflicts=True,
            unique_fields=["tenant_key", "kms_config"],
            update_fields=["wrapped", "verified_at"],
        )
        live = TenantKey.objects.filter(tenant=tenant).exclude(state=TenantKeyState.DESTROYED)
        covered = set(
            TenantKeyWrap.objects.filter(tenant_key__in=live, kms_config=config, verified_at__isnull=False).values_list(
                "tenant_key_id", flat=True
            )
        )
        if set(live.values_list("id", flat=True)) - covered:
            raise Restart()  # a version was made meanwhile: wrap it too
        live.filter(vendor_held=False).update(vendor_held=True)
        RekeyJob.objects.filter(tenant=tenant, kind=JobKind.REWRAP, state__in=ACTIVE_JOB_STATES).update(
            state=JobState.CANCELLED,
            finished_at=now,
            retry_at=None,
            last_error=f"Superseded by the move to vendor key {vendor_key.name}.",
        )
        old = KmsConfig.objects.select_for_update(no_key=True).filter(tenant=tenant, is_primary=True).first()
        if old is not None and old.pk != config.pk:
            if old.state not in (ConfigState.ACTIVE, ConfigState.DECRYPT_ONLY):
                # the vendor's own kill switch on its old key holds: it is re-enabled first, or the tenant stays
                return f"its primary key {old.name} is {old.get_state_display().lower()}"
            old.is_primary = False
            old.state = ConfigState.DECRYPT_ONLY
            old.state_changed_at = now
            old.save(update_fields=["is_primary", "state", "state_changed_at", "updated_at"])
        if not config.is_primary:
            config.is_primary, config.state, config.state_changed_at = True, ConfigState.ACTIVE, now
            config.save(update_fields=["is_primary", "state", "state_changed_at", "updated_at"])
            key_history_record(
                tenant,
                config,
                HistoryAction.MADE_PRIMARY,
                actor,
                f"vendor key move, replacing {old.name if old else '-'}",
            )
        # the vendor-provided keys it replaced: every version has a verified wrap under the new one, so theirs go
        replaced = list(
            KmsConfig.objects.filter(tenant=tenant, owner=ConfigOwner.VENDOR, state=ConfigState.DECRYPT_ONLY).exclude(
                pk=config.pk
            )
        )
        TenantKeyWrap.objects.filter(kms_config__in=replaced).delete()
        for previous in replaced:
            previous.state, previous.state_changed_at = ConfigState.RETIRED, now
            previous.save(update_fields=["state", "state_changed_at", "updated_at"])
            key_history_record(tenant, previous, HistoryAction.RETIRED, actor, f"replaced by {vendor_key.name}")
        tenant_summary_sync(tenant=tenant)  # key ownership, provider, health, key status and the counts
        audit_record(
            actor=actor,
            action="vendor_key.assigned",
            tenant=tenant,
            target=config,
            changes={
                "vendor_key": [old.name if old is not None else None, vendor_key.name],
                "job": [None, str(job.uid)],
                "retired": [None, [c.name for c in replaced]],
            },
        )
        return ""
