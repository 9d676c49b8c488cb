"""Verify the hash chains of security events and point to the first broken link.

    python manage.py verify_event_chain --tenant acme     # one tenant's chain
    python manage.py verify_event_chain --vendor          # the vendor-wide chain
    python manage.py verify_event_chain --all             # every chain (the default)
    python manage.py verify_event_chain --tenant acme --known-head head.json

``--known-head`` (repeatable) takes a signed chain head kept outside KeyCore — the last
line of a JSON Lines export, the ``head`` of a webhook delivery, the ``chain_head`` message
of a syslog batch — as a file or as the JSON itself: a chain that ends before it, or does
not contain it, is broken (the database was rolled back or rewritten).

Exits with status 1 when any chain is broken, so it can run from cron or CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from keycore import errors, selectors
from keycore.models import Tenant
from keycore.services.events import ChainReport, anchor_parse, chain_keys_all, chain_verify


class Command(BaseCommand):
    help = "Verify security-event hash chains; exit status 1 if any is broken."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--tenant", metavar="EXTERNAL_ID", help="verify this tenant's chain")
        which.add_argument("--vendor", action="store_true", help="verify the vendor-wide chain")
        which.add_argument("--all", action="store_true", help="verify every chain (the default)")
        parser.add_argument(
            "--known-head",
            action="append",
            default=[],
            metavar="FILE_OR_JSON",
            help="a signed chain head kept outside KeyCore; the chain must reach it (repeatable)",
        )

    def handle(self, *args, tenant: str | None, vendor: bool, all: bool, known_head: list[str], **options):
        kept: dict[str, dict] = {}
        for given in known_head:
            path = Path(given)
            text = path.read_text() if not given.lstrip().startswith("{") and path.is_file() else given
            try:
                anchor = anchor_parse(text)
            except errors.InvalidInput as exc:
                raise CommandError(f"--known-head {given[:60]!r}: {exc.detail}") from None
            kept[anchor["chain"]] = anchor
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
        unknown = set(kept) - {key for _, key in targets}
        if unknown:
            raise CommandError(f"--known-head names chain(s) not verified here: {', '.join(sorted(unknown))}")
        broken = 0
        for name, key in targets:
            report = chain_verify(key=key, known_head=kept.get(key))
            self._print(name, report)
            if report.ok and key in kept:
                self.stdout.write(f"  and it reaches the kept head {kept[key]['seq']} of {kept[key]['time']}")
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
