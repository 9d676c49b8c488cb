"""Start, watch, cancel and retry rekey jobs from the command line (vendor-wide ones above all).

    python manage.py rekey kek-rotation [--tenant EXTERNAL_ID] [--wait]
    python manage.py rekey root-rotation [--wait]
    python manage.py rekey status [JOB]          # recent jobs, or one job
    python manage.py rekey watch JOB
    python manage.py rekey cancel JOB | retry JOB
    python manage.py rekey run JOB               # work it in this process, without a worker

JOB is a job's uid (or a unique prefix of it). Jobs started here are audited as
started by ``operator:manage.py``.
"""

from __future__ import annotations

import sys
import time

from django.core.management.base import BaseCommand, CommandError

from keycore import errors, selectors
from keycore.models import KmsConfig, RekeyJob
from keycore.models.jobs import ACTIVE_JOB_STATES, JobState
from keycore.sealing import root_keyring
from keycore.services.audit import Actor
from keycore.services.jobs import (
    ChunkPaused,
    job_cancel,
    job_retry,
    job_run,
    job_start_kek_rotation,
    job_start_root_rotation,
    rotatable_providers,
)


def _find(prefix: str) -> RekeyJob:
    jobs = list(RekeyJob.objects.filter(uid__startswith=prefix.strip().lower())[:2]) if prefix else []
    if not jobs:
        try:
            jobs = list(RekeyJob.objects.filter(uid=prefix)[:1])
        except Exception:  # not a uuid either
            jobs = []
    if len(jobs) != 1:
        raise CommandError(f"No single job matches {prefix!r}; `rekey status` lists them.")
    return jobs[0]


def describe(job: RekeyJob) -> str:
    line = (
        f"{str(job.uid)[:8]}  {job.kind:<14} {job.state:<9} {job.done + job.failed}/{job.total} {job.unit}"
        f" ({job.progress_percent}%)"
    )
    if job.failed:
        line += f", {job.failed} failed"
    if job.scope:
        line += f"  — {job.scope}"
    if job.state == JobState.PAUSED and job.pause_reason:
        line += f"\n    paused: {job.pause_reason}"
        if job.retry_at:
            line += f" (retrying at {job.retry_at:%H:%M:%S})"
    if job.last_error and job.state in (JobState.FAILED, JobState.RUNNING):
        line += f"\n    last error: {job.last_error[:300]}"
    return line


class Command(BaseCommand):
    help = "Start and watch rekey jobs: vendor-wide KEK rotation, root-key rotation; status, cancel, retry."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        kek = sub.add_parser("kek-rotation", help="rotate every vendor-provided KEK (or one tenant's)")
        kek.add_argument("--tenant", help="only this tenant's vendor-provided key (external id)")
        kek.add_argument("--wait", action="store_true", help="watch the job until it ends")
        root = sub.add_parser("root-rotation", help="re-seal every secret under the current root key")
        root.add_argument("--wait", action="store_true", help="watch the job until it ends")
        status = sub.add_parser("status", help="recent jobs, or one job")
        status.add_argument("job", nargs="?")
        for name in ("watch", "cancel", "retry", "run"):
            sub.add_parser(name).add_argument("job")

    def handle(self, *args, action: str, **options):
        actor = Actor(label="operator:manage.py")
        try:
            if action == "kek-rotation":
                config = None
                if options.get("tenant"):
                    tenant = selectors.tenant_by_external_id(options["tenant"])  # TenantNotFound: CommandError below
                    config = (
                        KmsConfig.objects.filter(tenant=tenant, provider__in=rotatable_providers())
                        .order_by("-is_primary", "-id")
                        .first()
                    )
                    if config is None:
                        raise CommandError(f"Tenant {tenant.external_id} has no vendor-provided key to rotate.")

                job = job_start_kek_rotation(actor=actor, config=config)
                self._started(job, options["wait"])
            elif action == "root-rotation":
                keyring = root_keyring()
                if len(keyring.key_ids) == 1:
                    self.stderr.write(
                        "KEYCORE_ROOT_KEY_PREVIOUS is empty: the job only checks that every secret is under "
                        f"root key {keyring.current_id}."
                    )
                job = job_start_root_rotation(actor=actor)
                self._started(job, options["wait"])
            elif action == "status":
                if options.get("job"):
                    self.stdout.write(describe(_find(options["job"])))
                else:
                    for job in RekeyJob.objects.order_by("-created_at")[:20]:
                        self.stdout.write(describe(job))
            elif action == "watch":
                self._watch(_find(options["job"]))
            elif action == "cancel":
                self.stdout.write(describe(job_cancel(job=_find(options["job"]), actor=actor)))
            elif action == "retry":
                self.stdout.write(describe(job_retry(job=_find(options["job"]), actor=actor)))
            elif action == "run":
                try:
                    job = job_run(_find(options["job"]).pk)
                except ChunkPaused as paused:
                    raise CommandError(f"Paused: {paused.error.detail} Run it again later, or let a worker.") from None
                self.stdout.write(describe(job))
                if job.state != JobState.SUCCEEDED:
                    sys.exit(1)
        except errors.KeyCoreError as exc:
            raise CommandError(exc.detail) from None

    def _started(self, job: RekeyJob, wait: bool) -> None:
        self.stdout.write(f"started job {job.uid} ({job.get_kind_display()}: {job.scope}); the workers run it.")
        if wait:
            self._watch(job)

    def _watch(self, job: RekeyJob) -> None:
        last = ""
        started = time.monotonic()
        while True:
            job.refresh_from_db()
            line = describe(job)
            if line != last:
                self.stdout.write(f"[{time.monotonic() - started:7.1f}s] {line}")
                last = line
            if job.state not in ACTIVE_JOB_STATES:
                break
            time.sleep(1.0)
        if job.state != JobState.SUCCEEDED:
            sys.exit(1)
        if job.kind == "root_rotation":
            self.stdout.write(
                f"Every secret is sealed under root key {job.params.get('root_key_id')}: the old root keys can "
                "be removed from KEYCORE_ROOT_KEY_PREVIOUS (restart every process after)."
            )
