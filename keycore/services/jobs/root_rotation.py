"""Root-key rotation: every sealed secret (KMS credentials, local KEKs, MFA secrets) under the current root key.

Start it after making the new root key current and listing the old one in
``KEYCORE_ROOT_KEY_PREVIOUS`` on every process; when it succeeds, the old key can
be removed. Workers whose current root key differs from the job's pause it
instead of sealing under the wrong key; secrets written meanwhile by a process
with the old key are caught by a final check, and the job runs again (three passes
at most).
"""

from __future__ import annotations

import base64
from typing import Any

from allauth.mfa.models import Authenticator
from django.db import transaction
from django.db.models import F

from keycore import errors
from keycore.models import KmsConfig, RekeyJob, VendorKey
from keycore.models.jobs import ACTIVE_JOB_STATES, ChunkState, JobKind, RekeyJobChunk
from keycore.sealing import (
    CONFIG_SECRETS,
    MFA_MARKER,
    MFA_PURPOSE,
    VENDOR_KEY_SECRETS,
    mfa_context,
    parse_bound_mfa_secret,
    root_keyring,
)
from keycore.services.audit import Actor, audit_record
from keycore.services.jobs.engine import JobKindRunner, Subject, batch, batch_size, chunk_size, enqueue, started_by
from keycore.services.jobs.kek_rotation import bulk_swap_sealed

SUBJECT_CONFIG = "kms_config"
SUBJECT_AUTHENTICATOR = "authenticator"
SUBJECT_VENDOR_KEY = "vendor_key"
MAX_PASSES = 3


def job_start_root_rotation(*, actor: Actor) -> RekeyJob:
    """Re-seal every sealed secret under the current root key (``KEYCORE_ROOT_KEY``)."""
    keyring = root_keyring()
    with transaction.atomic():
        if RekeyJob.objects.filter(kind=JobKind.ROOT_ROTATION, state__in=ACTIVE_JOB_STATES).exists():
            raise errors.Conflict("A root-key rotation is already running.")
        job = RekeyJob.objects.create(
            kind=JobKind.ROOT_ROTATION,
            scope=f"every sealed secret, to root key {keyring.current_id}",
            params={"root_key_id": keyring.current_id, "accepted_key_ids": keyring.key_ids},
            started_by=started_by(actor),
            started_by_label=actor.label[:200],
        )
        audit_record(
            actor=actor,
            action="rekey_job.started",
            target=job,
            target_repr=f"root-key rotation to {keyring.current_id}",
            changes={"kind": [None, job.kind], "root_key_id": [None, keyring.current_id]},
        )
        enqueue(job)
    return job


class WrongRootKey(errors.KmsUnreachable):
    """A worker with another root key: retryable, so the chunk waits for a correctly configured worker."""

    code = "root-key-mismatch"
    title = "Worker has another root key"


def _keyring_for(job: RekeyJob):
    keyring = root_keyring()
    wanted = job.params.get("root_key_id")
    if keyring.current_id != wanted:
        raise WrongRootKey(
            f"This worker seals under root key {keyring.current_id}, but the job moves secrets to {wanted}: "
            "give every process the same KEYCORE_ROOT_KEY or KEYCORE_ROOT_KEY_WRAPPED (and the old key in "
            "KEYCORE_ROOT_KEY_PREVIOUS)."
        )
    return keyring


def _reseal_values(value: Any, keyring) -> tuple[Any, int]:
    """``value`` (allauth's JSON) with every sealed MFA secret re-sealed; and how many were."""
    if isinstance(value, str) and value.startswith(MFA_MARKER):
        user_id, kind, blob = parse_bound_mfa_secret(value)
        if not keyring.needs_reseal(blob):
            return value, 0
        new = keyring.reseal(blob, purpose=MFA_PURPOSE, context=mfa_context(user_id, kind))
        return f"{MFA_MARKER}{user_id}:{kind}:{base64.b64encode(new).decode()}", 1
    if isinstance(value, dict):
        out, count = {}, 0
        for name, item in value.items():
            out[name], n = _reseal_values(item, keyring)
            count += n
        return out, count
    if isinstance(value, list):
        items = [_reseal_values(item, keyring) for item in value]
        return [item for item, _ in items], sum(n for _, n in items)
    return value, 0


def _count_sealed_under_old(value: Any, keyring) -> int:
    """How many sealed MFA secrets in ``value`` are under a root key other than the current one."""
    if isinstance(value, str) and value.startswith(MFA_MARKER):
        return int(keyring.needs_reseal(parse_bound_mfa_secret(value)[2]))
    if isinstance(value, dict):
        return sum(_count_sealed_under_old(item, keyring) for item in value.values())
    if isinstance(value, list):
        return sum(_count_sealed_under_old(item, keyring) for item in value)
    return 0


def root_rotation_leftovers() -> dict[str, int]:
    """How many sealed secrets are still under a root key other than the current one (0, 0 when done)."""
    keyring = root_keyring()
    configs = sum(
        1
        for blob in KmsConfig.objects.filter(sealed_secrets__isnull=False)
        .values_list("sealed_secrets", flat=True)
        .iterator(chunk_size=5000)
        if keyring.needs_reseal(bytes(blob))
    )
    mfa = sum(
        _count_sealed_under_old(data, keyring)
        for data in Authenticator.objects.values_list("data", flat=True).iterator(chunk_size=5000)
    )
    vendor_keys = sum(
        1
        for blob in VendorKey.objects.filter(sealed_secrets__isnull=False).values_list("sealed_secrets", flat=True)
        if keyring.needs_reseal(bytes(blob))
    )
    return {"kms_configs": configs, "mfa_secrets": mfa, "vendor_keys": vendor_keys}


class RootRotation(JobKindRunner):
    kind = JobKind.ROOT_ROTATION

    def plan(self, job: RekeyJob) -> list[Subject]:
        configs = KmsConfig.objects.filter(sealed_secrets__isnull=False).order_by("id").values_list("id", flat=True)
        authenticators = Authenticator.objects.order_by("id").values_list("id", flat=True)
        vendor_keys = VendorKey.objects.filter(sealed_secrets__isnull=False).order_by("id").values_list("id", flat=True)
        return [
            Subject(SUBJECT_CONFIG, list(configs), chunk_size()),
            Subject(SUBJECT_AUTHENTICATOR, list(authenticators), chunk_size()),
            Subject(SUBJECT_VENDOR_KEY, list(vendor_keys), chunk_size()),
        ]

    def run_batch(self, job: RekeyJob, chunk: RekeyJobChunk, worker: str, cursor: int) -> int | None:
        keyring = _keyring_for(job)
        if chunk.subject == SUBJECT_AUTHENTICATOR:
            return self._authenticators(keyring, chunk, worker, cursor)
        if chunk.subject == SUBJECT_VENDOR_KEY:
            return self._vendor_keys(keyring, chunk, worker, cursor)
        return self._configs(keyring, chunk, worker, cursor)

    def _vendor_keys(self, keyring, chunk: RekeyJobChunk, worker: str, cursor: int) -> int | None:
        """The vendor's shared keys: a handful of rows, re-sealed under their own purpose, compare-and-set."""
        rows = list(
            VendorKey.objects.filter(id__gt=cursor, id__lte=chunk.last_id)
            .order_by("id")
            .values_list("id", "uid", "sealed_secrets")[: batch_size()]
        )
        if not rows:
            return None
        with batch(chunk.pk, worker, cursor) as progress:
            for pk, uid, blob in rows:
                if blob is not None and keyring.needs_reseal(bytes(blob)):
                    try:
                        new = keyring.reseal(bytes(blob), purpose=VENDOR_KEY_SECRETS, context=str(uid))
                    except errors.KeyCoreError as exc:
                        progress.failed += 1
                        progress.error = f"vendor key {uid}: {exc.detail}"
                        continue
                    VendorKey.objects.filter(pk=pk, sealed_secrets=bytes(blob)).update(sealed_secrets=new)
                progress.done += 1
            progress.cursor = rows[-1][0]
        return progress.cursor

    def _configs(self, keyring, chunk: RekeyJobChunk, worker: str, cursor: int) -> int | None:
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
        with batch(chunk.pk, worker, cursor) as progress:
            # a secret replaced meanwhile was sealed under the current key already; the final check confirms it
            bulk_swap_sealed(swaps)
            progress.cursor, progress.done, progress.failed, progress.error = rows[-1][0], done, failed, last_error
        return progress.cursor

    def _authenticators(self, keyring, chunk: RekeyJobChunk, worker: str, cursor: int) -> int | None:
        ids = list(
            Authenticator.objects.filter(id__gt=cursor, id__lte=chunk.last_id)
            .order_by("id")
            .values_list("id", flat=True)[: batch_size()]
        )
        if not ids:
            return None
        with batch(chunk.pk, worker, cursor) as progress:
            for authenticator in Authenticator.objects.select_for_update(no_key=True).filter(pk__in=ids).order_by("id"):
                try:
                    data, count = _reseal_values(authenticator.data, keyring)
                except (errors.KeyCoreError, ValueError) as exc:
                    progress.failed += 1
                    progress.error = f"MFA authenticator {authenticator.pk}: {getattr(exc, 'detail', exc)}"
                    continue
                if count:
                    Authenticator.objects.filter(pk=authenticator.pk).update(data=data)
                progress.done += 1
            progress.cursor = ids[-1]
        return progress.cursor

    def finish(self, job: RekeyJob) -> bool:
        if job.failed:
            return True
        left = root_rotation_leftovers()
        passes = int(job.params.get("passes", 1))
        if any(left.values()) and passes >= MAX_PASSES:
            job.failed = sum(left.values())
            job.last_error = (
                f"{left['kms_configs']} KMS secret(s), {left['vendor_keys']} vendor key(s) and "
                f"{left['mfa_secrets']} MFA secret(s) are still sealed "
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
            enqueue(job)
            return False
        return True
