"""Create an API key from the command line; the key is printed once and never again."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from keycore import errors
from keycore.models import Tenant
from keycore.models.api import ApiScope
from keycore.services.apikeys import api_key_create
from keycore.services.audit import Actor


class Command(BaseCommand):
    help = (
        "Create an API key for the REST API and print it once. "
        f"Scopes: {', '.join(ApiScope.values)}. Only crypto keys may be limited to some tenants."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="What the key is for, e.g. 'billing-service'.")
        parser.add_argument(
            "--scope",
            action="append",
            required=True,
            metavar="SCOPE",
            help="A scope (repeat, or separate with commas).",
        )
        parser.add_argument(
            "--tenant",
            action="append",
            default=[],
            metavar="EXTERNAL_ID",
            help="Limit a crypto key to this tenant (repeat for several); other tenants are unknown to it.",
        )
        parser.add_argument("--expires-days", type=int, default=None, help="Expire the key after this many days.")
        parser.add_argument("--quiet", action="store_true", help="Print only the key (for scripts).")

    def handle(self, *args, name, scope, tenant, expires_days, quiet, **options):
        scopes = sorted({s.strip() for item in scope for s in item.split(",") if s.strip()})
        wanted = [t.strip() for item in tenant for t in item.split(",") if t.strip()]
        tenants = list(Tenant.objects.filter(external_id__in=wanted))
        missing = sorted(set(wanted) - {t.external_id for t in tenants})
        if missing:
            raise CommandError(f"No tenant has the external id(s): {', '.join(missing)}.")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        try:
            key, raw = api_key_create(
                name=name,
                scopes=scopes,
                tenants=tenants or None,
                expires_at=expires_at,
                actor=Actor.system("create_api_key"),
            )
        except errors.KeyCoreError as exc:
            raise CommandError(exc.detail) from None
        if quiet:
            self.stdout.write(raw)
            return
        limits = f", tenants {', '.join(t.external_id for t in tenants)}" if tenants else ""
        expiry = f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
        self.stdout.write(
            f"Created API key '{key.name}' (prefix {key.prefix}): scopes {', '.join(scopes)}{limits}{expiry}."
        )
        self.stdout.write("Store it now: it is shown only this once.")
        self.stdout.write(raw)
