"""Apply the retention periods of security events (what the periodic Celery task does).

    python manage.py prune_events                 # every tenant's chain and the vendor's
    python manage.py prune_events --tenant acme   # one tenant
    python manage.py prune_events --vendor        # the vendor-wide chain

Rows older than the retention period go; a signed checkpoint of the pruned prefix
keeps the rest of the chain verifiable. A broken chain is never pruned.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from keycore import errors, selectors
from keycore.services.audit import Actor
from keycore.services.events import PruneResult, events_prune, events_prune_all


class Command(BaseCommand):
    help = "Delete security events past their retention period, behind a signed checkpoint."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--tenant", metavar="EXTERNAL_ID", help="prune this tenant's chain only")
        which.add_argument("--vendor", action="store_true", help="prune the vendor-wide chain only")

    def handle(self, *args, tenant: str | None, vendor: bool, **options):
        actor = Actor.system("manage.py")
        if tenant is not None:
            try:
                found = selectors.tenant_by_external_id(tenant)
            except errors.TenantNotFound as exc:
                raise CommandError(exc.detail) from None
            results = [events_prune(tenant=found, actor=actor)]
        elif vendor:
            results = [events_prune(tenant=None, actor=actor)]
        else:
            results = events_prune_all()
        for result in results:
            self._print(result)

    def _print(self, result: PruneResult) -> None:
        if result.problem:
            self.stdout.write(self.style.WARNING(f"{result.chain}: {result.problem}"))
        elif result.pruned:
            self.stdout.write(
                self.style.SUCCESS(
                    f"{result.chain}: pruned {result.pruned} row(s); checkpoint at {result.checkpoint_seq}"
                )
            )
        else:
            self.stdout.write(f"{result.chain}: nothing past retention")
