"""Verify the hash chains of security events and point to the first broken link.

    python manage.py verify_event_chain --tenant acme     # one tenant's chain
    python manage.py verify_event_chain --vendor          # the vendor-wide chain
    python manage.py verify_event_chain --all             # every chain (the default)

Exits with status 1 when any chain is broken, so it can run from cron or CI.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from keycore import errors, selectors
from keycore.models import Tenant
from keycore.services.events import ChainReport, chain_keys_all, chain_verify


class Command(BaseCommand):
    help = "Verify security-event hash chains; exit status 1 if any is broken."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--tenant", metavar="EXTERNAL_ID", help="verify this tenant's chain")
        which.add_argument("--vendor", action="store_true", help="verify the vendor-wide chain")
        which.add_argument("--all", action="store_true", help="verify every chain (the default)")

    def handle(self, *args, tenant: str | None, vendor: bool, all: bool, **options):
        if tenant is not None:
            try:
                found = selectors.tenant_by_external_id(tenant)
            except errors.TenantNotFound as exc:
                raise CommandError(exc.detail) from None
            targets = [(f"tenant {found.external_id}", f"tenant:{found.pk}")]
        elif vendor:
            targets = [("vendor", "vendor")]
        else:
            names = dict(Tenant.objects.values_list("pk", "external_id"))
            targets = [("vendor", "vendor")]
            for key in chain_keys_all():
                if key.startswith("tenant:"):
                    pk = int(key.split(":", 1)[1])
                    targets.append((f"tenant {names.get(pk, f'#{pk} (deleted)')}", key))
        broken = 0
        for name, key in targets:
            report = chain_verify(key=key)
            self._print(name, report)
            broken += not report.ok
        if broken:
            self.stderr.write(f"{broken} chain(s) broken.")
            sys.exit(1)

    def _print(self, name: str, report: ChainReport) -> None:
        checkpoint = (
            f", continuing from the signed checkpoint at {report.checkpoint_seq}" if report.checkpoint_seq else ""
        )
        if report.ok:
            self.stdout.write(
                self.style.SUCCESS(f"{name}: intact, {report.checked} row(s) up to {report.head_seq}{checkpoint}")
            )
        else:
            self.stdout.write(
                self.style.ERROR(f"{name}: BROKEN at row {report.first_broken_seq}: {report.problem}{checkpoint}")
            )
