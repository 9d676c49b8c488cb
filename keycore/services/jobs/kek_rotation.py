"""KEK rotation: a new KEK inside every vendor-provided (local) configuration, or one.

The configuration keeps the old KEK as "previous" until its tenant keys are
rewrapped, then forgets it — in the same transaction as the rewraps, unless a
wrap could not be moved (then the old KEK stays, for unwrap only). Set-based
writes, so a vendor-wide rotation of many tenants is a few statements per batch.
"""

from __future__ import annotations

import hmac
import json
from collections import defaultdict

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from keycore import errors
from keycore.crypto.envelope import key_check_value
from keycore.models import KmsConfig, RekeyJob, Tenant, TenantKeyWrap
from keycore.models.jobs import ACTIVE_JOB_STATES, JobKind, RekeyJobChunk
from keycore.models.keys import ConfigState
from keycore.providers.base import WrapContext
from keycore.providers.registry import get_provider_class, provider_names
from keycore.sealing import CONFIG_SECRETS, root_keyring
from keycore.services.audit import Actor, audit_record, audit_record_many
from keycore.services.bulk_writes import update_rows
from keycore.services.jobs.engine import (
    JobKindRunner,
    Restart,
    Subject,
    batch,
    batch_size,
    chunk_size,
    enqueue,
    started_by,
)

SUBJECT = "kms_config"


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
            started_by=started_by(actor),
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
        enqueue(job)
    return job


def _bulk_update_wraps(rows: list[tuple[int, bytes]], now) -> None:
    update_rows(TenantKeyWrap, [("wrapped", "bytea"), ("verified_at", "timestamptz")], [(*r, now) for r in rows])


def bulk_swap_sealed(rows: list[tuple[int, bytes, bytes]]) -> int:
    """Set ``sealed_secrets`` = new where it still is old (compare-and-set); returns rows changed."""
    now = timezone.now()
    return update_rows(
        KmsConfig,
        [("sealed_secrets", "bytea"), ("updated_at", "timestamptz")],
        [(pk, new, now, old) for pk, old, new in rows],
        match=("sealed_secrets", "bytea"),
    )


class KekRotation(JobKindRunner):
    kind = JobKind.KEK_ROTATION

    def plan(self, job: RekeyJob) -> list[Subject]:
        configs = _rotatable_configs()
        if job.target_config_id:
            configs = configs.filter(pk=job.target_config_id)
        return [Subject(SUBJECT, list(configs.order_by("id").values_list("id", flat=True)), chunk_size())]

    def run_batch(self, job: RekeyJob, chunk: RekeyJobChunk, worker: str, cursor: int) -> int | None:
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
        with batch(chunk.pk, worker, cursor) as progress:
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
            _bulk_update_wraps(wrap_rows, timezone.now())
            if bulk_swap_sealed(sealed_rows) != len(sealed_rows):
                raise Restart()  # a configuration's secrets changed under us: roll back, read again
            audit_record_many(actor=Actor.system("kek-rotation"), action="kms_config.kek_rotated", rows=progress.audit)
            progress.cursor = last
            # other processes rebuild their provider for a configuration when its sealed secrets change
        return progress.cursor
