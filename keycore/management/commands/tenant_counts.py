"""Check (and repair) the vendor dashboard's tenant counts against a recount of every tenant.

The counts are kept by deltas in the transaction of every change (keycore/services/summary.py);
this recounts — a scan of the tenants table — and says which differ. ``--repair`` sets them to the
recount. Exit status 1 when counts differed and were not repaired (for monitoring).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from keycore.services.summary import tenant_counts, tenant_counts_recompute


class Command(BaseCommand):
    help = "Compare the dashboard's tenant counts with a recount; --repair sets them to the recount."

    def add_arguments(self, parser):
        parser.add_argument("--repair", action="store_true", help="Set the counts to the recount.")

    def handle(self, *args, repair: bool, **options):
        differ = tenant_counts_recompute(repair=repair)
        for dimension, value, counted, actual in differ:
            self.stdout.write(f"{dimension}={value}: counted {counted}, actually {actual}")
        if differ and not repair:
            raise CommandError(f"{len(differ)} count(s) differ from a recount; run with --repair to fix them.")
        if differ:
            self.stdout.write(self.style.SUCCESS(f"Repaired {len(differ)} count(s)."))
            return
        total = sum(tenant_counts()["status"].values())
        self.stdout.write(self.style.SUCCESS(f"Every count matches a recount of {total} tenant(s)."))
