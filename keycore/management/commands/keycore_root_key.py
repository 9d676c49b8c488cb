"""The root key: generate one, wrap one by a KMS, show what seals it, re-seal everything under it.

    keycore_root_key --generate   a new root key for KEYCORE_ROOT_KEY (the key itself: keep it secret)
    keycore_root_key create       a new root key wrapped by KEYCORE_ROOT_KEY_KMS, for KEYCORE_ROOT_KEY_WRAPPED;
                                  the key itself is never shown, written or logged
    keycore_root_key [status]     which root keys are configured, what seals each (environment or which KMS
                                  and key), whether this process can unwrap them, and what is left to re-seal
    keycore_root_key migrate      re-seal every secret under the current root key (the root-key rotation job);
                                  after it, the previous root keys can be removed

Moving to a KMS-wrapped root key, or back, is: make the new key (``create`` or
``--generate``), make it current on every process with the old one in
``KEYCORE_ROOT_KEY_PREVIOUS``, run ``migrate``, remove the old key. The README's
production section has the steps.
"""

from __future__ import annotations

import os
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from keycore import errors
from keycore.checks import missing_secrets
from keycore.crypto.formats import KEY_BYTES
from keycore.crypto.rootkey import generate_root_key_text
from keycore.sealing import root_keyring
from keycore.unseal import (
    WrappedRootKey,
    configured_kms,
    current_root_key_text,
    is_wrapped,
    new_install_id,
    root_key_sources,
    wrap_root_key,
)

ACTIONS = ("status", "create", "migrate")
WAIT_POLL_SECONDS = 2.0


class Command(BaseCommand):
    help = (
        "Generate a root key (--generate), wrap a new one by a KMS (create), show what seals the root keys "
        "(status, the default) or re-seal every secret under the current one (migrate)."
    )
    # --generate and create make the root key every other command checks for: they must run without one
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("action", nargs="?", choices=ACTIONS, default="status")
        parser.add_argument("--generate", action="store_true", help="print a new root key for KEYCORE_ROOT_KEY")
        parser.add_argument(
            "--install-id",
            default="",
            help="create: the install id to bind the wrap to (default: KEYCORE_ROOT_KEY_INSTALL_ID, the current "
            "wrapped key's, or a new one)",
        )
        parser.add_argument(
            "--in-process",
            action="store_true",
            help="migrate: run the re-seal job in this process instead of on the Celery workers",
        )
        parser.add_argument("--wait", action="store_true", help="migrate: wait until the workers have finished")
        parser.add_argument("--timeout", type=float, default=3600.0, help="migrate --wait: give up after this long")

    def handle(self, *args, action: str, generate: bool, **options):
        if generate:
            self.stdout.write(generate_root_key_text())
            return
        if action == "create":
            self._create(options["install_id"])
        elif action == "migrate":
            self._migrate(in_process=options["in_process"], wait=options["wait"], timeout=options["timeout"])
        else:
            self._status()

    # -- create ---------------------------------------------------------------------------

    def _create(self, install_id: str) -> None:
        try:
            kms = configured_kms()
        except errors.KeyCoreError as exc:
            raise CommandError(exc.detail) from None
        if kms is None:
            raise CommandError(
                "Set KEYCORE_ROOT_KEY_KMS (aws, openbao, pkcs11 or kmip) and its KEYCORE_ROOT_KEY_KMS_<FIELD> "
                "variables first: `create` wraps the new root key by that KMS. For a root key in the environment "
                "instead, use --generate."
            )
        install_id = install_id or settings.KEYCORE_ROOT_KEY_INSTALL_ID
        if not install_id:
            current = current_root_key_text()
            install_id = WrappedRootKey.parse(current).install_id if is_wrapped(current) else new_install_id()
        try:
            # the new key exists only in this process's memory and, wrapped, in the KMS's answer
            wrapped = wrap_root_key(os.urandom(KEY_BYTES), kms=kms, install_id=install_id)
        except errors.KeyCoreError as exc:
            raise CommandError(f"{kms.describe()} could not wrap a new root key: {exc.detail}") from None
        self.stdout.write(wrapped.text())
        self.stderr.write(
            f"Root key {wrapped.root_key_id} wrapped by {kms.describe()} for install {wrapped.install_id}.\n"
            "Next: on every process set KEYCORE_ROOT_KEY_WRAPPED to the line above (with the same "
            "KEYCORE_ROOT_KEY_KMS settings), move the current root key's setting into KEYCORE_ROOT_KEY_PREVIOUS, "
            "restart, then run `python manage.py keycore_root_key migrate`."
        )

    # -- status -----------------------------------------------------------------------------

    def _status(self) -> None:
        problems = missing_secrets()
        try:
            sources = root_key_sources() if not {"keycore.E002", "keycore.E004"} & set(problems) else []
        except errors.KeyCoreError as exc:
            raise CommandError(exc.detail) from None
        kms_line = self._kms_line()
        for source in sources:
            seal = "the environment (KEYCORE_ROOT_KEY)" if source.seal == "environment" else kms_line
            if source.install_id:
                seal += f", install {source.install_id}"
            self.stdout.write(f"{source.role} root key: {source.root_key_id}, sealed by {seal}")
        if problems:
            raise CommandError(" ".join(problems.values()))
        self.stdout.write(f"unwrapped: yes, this process holds {len(root_keyring().key_ids)} root key(s) in memory")
        self._leftovers()

    def _kms_line(self) -> str:
        try:
            kms = configured_kms()
        except errors.KeyCoreError as exc:
            return f"a KMS that is misconfigured ({exc.detail})"
        if kms is None:
            return "a KMS, but KEYCORE_ROOT_KEY_KMS is not set"
        try:
            return f"KMS {kms.provider}: {kms.describe()}"
        except errors.KeyCoreError:
            return f"KMS {kms.provider}"

    def _leftovers(self) -> None:
        from keycore.models import RekeyJob
        from keycore.models.jobs import JobKind
        from keycore.services.jobs import root_rotation_leftovers

        try:
            left = root_rotation_leftovers()
            job = RekeyJob.objects.filter(kind=JobKind.ROOT_ROTATION).order_by("-created_at").first()
        except DatabaseError as exc:
            self.stdout.write(f"sealed secrets: the database is not reachable ({exc.__class__.__name__})")
            return
        self.stdout.write(
            f"still sealed under a previous root key: {left['kms_configs']} KMS secret(s), "
            f"{left['mfa_secrets']} MFA secret(s)"
        )
        if job is not None:
            self.stdout.write(f"last root-key rotation: job {job.pk}, {job.state}, {job.done} of {job.total} done")

    # -- migrate ----------------------------------------------------------------------------

    def _migrate(self, *, in_process: bool, wait: bool, timeout: float) -> None:
        from keycore.models import RekeyJob
        from keycore.services.audit import Actor
        from keycore.services.jobs import job_run, job_start_root_rotation, root_rotation_leftovers

        problems = missing_secrets()
        if problems:
            raise CommandError(" ".join(problems.values()))
        try:
            job = job_start_root_rotation(actor=Actor.system("keycore_root_key migrate"))
        except errors.KeyCoreError as exc:
            raise CommandError(exc.detail) from None
        target = job.params["root_key_id"]
        self.stdout.write(f"root-key rotation job {job.pk}: every sealed secret to root key {target}")
        if in_process:
            job = job_run(job.pk)
        elif wait:
            deadline = time.monotonic() + timeout
            while job.state not in {"succeeded", "failed", "cancelled"} and time.monotonic() < deadline:
                time.sleep(WAIT_POLL_SECONDS)
                job = RekeyJob.objects.get(pk=job.pk)
        else:
            self.stdout.write("started: the Celery workers run it; follow it with `keycore_root_key status`")
            return
        self.stdout.write(f"job {job.pk}: {job.state}, {job.done} of {job.total} done, {job.failed} failed")
        if job.state != "succeeded":
            raise CommandError(job.last_error or job.pause_reason or f"The job is {job.state}.")
        left = root_rotation_leftovers()
        if any(left.values()):
            raise CommandError(f"Secrets are still sealed under a previous root key: {left}.")
        self.stdout.write("every secret is sealed under the current root key: KEYCORE_ROOT_KEY_PREVIOUS can be removed")
