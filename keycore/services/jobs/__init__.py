"""Rekey jobs: move tenant keys under new keys at any scale, committed in units, never losing a key.

The engine (:mod:`.engine`: plan, chunk, lease, retry, progress) runs every kind;
each kind is one module, registered in ``engine.KINDS`` (see ``docs/jobs.md``):

* :mod:`.rewrap` — a tenant's tenant keys from one configuration to another;
* :mod:`.kek_rotation` — a new KEK inside every vendor-provided (local) configuration, or one;
* :mod:`.root_rotation` — every sealed secret re-sealed under the current root key;
* :mod:`.key_retirement` — destroy an old tenant-key version once its data was rekeyed;
* :mod:`.vendor_key_move` — tenants put under one of the vendor's shared keys (assign, or move a vendor key's tenants).
"""

from keycore.services.jobs.engine import (
    ChunkBusy,
    ChunkPaused,
    JobBlocked,
    batch_committed,
    batch_written,
    job_cancel,
    job_mark_enqueued,
    job_plan,
    job_resume_stalled,
    job_retry,
    job_run,
    job_run_chunk,
    jobs_never_planned,
    retry_delay,
)
from keycore.services.jobs.kek_rotation import job_start_kek_rotation, rotatable_providers
from keycore.services.jobs.key_retirement import (
    job_confirm_key_retirement,
    job_start_key_retirement,
    retire_ready_versions,
    retirement_readiness,
)
from keycore.services.jobs.rewrap import job_start_rewrap
from keycore.services.jobs.root_rotation import job_start_root_rotation, root_rotation_leftovers
from keycore.services.jobs.vendor_key_move import job_start_vendor_key_move

__all__ = [
    "ChunkBusy",
    "ChunkPaused",
    "JobBlocked",
    "batch_committed",
    "batch_written",
    "job_cancel",
    "job_confirm_key_retirement",
    "job_mark_enqueued",
    "job_plan",
    "job_resume_stalled",
    "job_retry",
    "job_run",
    "job_run_chunk",
    "job_start_kek_rotation",
    "job_start_key_retirement",
    "job_start_rewrap",
    "job_start_root_rotation",
    "job_start_vendor_key_move",
    "jobs_never_planned",
    "retire_ready_versions",
    "retirement_readiness",
    "retry_delay",
    "root_rotation_leftovers",
    "rotatable_providers",
]
