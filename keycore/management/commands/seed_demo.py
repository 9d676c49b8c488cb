"""Demo data for the embedded default: a vendor admin, an operator, two named vendor keys, a few tenants and
their admins.

The vendor keys ("EU key", the default, and "US key") are KeyCore-held (local) keys, so the demo needs no
KMS; each demo tenant is under one of them, and the Vendor keys page shows who is where.

Each demo tenant also gets a little real use of its key — documents encrypted and
decrypted through the crypto service, as an application would — so its security
events and its overview chart have something true to show.

Idempotent: running it again creates nothing that already exists.
"""

from __future__ import annotations

from allauth.account.models import EmailAddress
from django.core.management.base import BaseCommand
from django.db import transaction

from keycore.models import KeyUseEvent, KmsConfig, Membership, Tenant, User, VendorKey
from keycore.roles import TenantRole, VendorRole
from keycore.services import keyuse
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.jobs import job_run, job_start_vendor_key_move
from keycore.services.tenants import staff_create, tenant_create
from keycore.services.vendor_keys import vendor_key_create

DEMO_PASSWORD = "keycore-demo-password"  # noqa: S105 - demo accounts of the embedded default only
STAFF = [("admin@vendor.example", VendorRole.ADMIN), ("operator@vendor.example", VendorRole.OPERATOR)]
#: (name, the default for new tenants)
VENDOR_KEYS = [("EU key", True), ("US key", False)]
TENANTS = [
    ("acme", "Acme Corporation", "owner@acme.example", "EU key"),
    ("globex", "Globex Industries", "owner@globex.example", "EU key"),
    ("initech", "Initech", "owner@initech.example", "US key"),
]
# (requesting service, data label, field, documents) — a small application's first minutes
DEMO_USE = [
    ("billing-service", "invoice.iban", "iban", 12),
    ("crm-service", "contact.phone", "phone", 7),
    ("support-desk", "ticket.body", "body", 3),
]


class Command(BaseCommand):
    help = "Create demo accounts and tenants (idempotent)."

    def handle(self, *args, **options):
        actor = Actor.system("seed_demo")
        for email, role in STAFF:
            if not User.objects.filter(email=email).exists():
                staff_create(email=email, role=role, password=DEMO_PASSWORD, actor=actor)
        named = self._vendor_keys(actor)
        for external_id, name, owner, key_name in TENANTS:
            tenant = Tenant.objects.filter(external_id=external_id).first()
            if tenant is None:
                tenant = tenant_create(
                    external_id=external_id, name=name, actor=actor, send=False, vendor_key=named[key_name]
                )
            self._assign(tenant, named[key_name], actor)
            with transaction.atomic():
                user = User.objects.filter(email=owner).first()
                if user is None:
                    user = User.objects.create_user(email=owner, password=DEMO_PASSWORD)
                    EmailAddress.objects.create(user=user, email=owner, verified=True, primary=True)
                Membership.objects.get_or_create(tenant=tenant, user=user, defaults={"role": TenantRole.OWNER})
            if not KeyUseEvent.objects.filter(tenant=tenant).exists():
                self._use_key(tenant)
        keyuse.recorder.flush()
        self.stdout.write(self.style.SUCCESS("Demo data is in place."))

    def _vendor_keys(self, actor: Actor) -> dict[str, VendorKey]:
        named = {}
        for name, default in VENDOR_KEYS:
            vendor_key = VendorKey.objects.filter(name=name).first()
            if vendor_key is None:
                vendor_key = vendor_key_create(
                    name=name, provider="local", settings_={}, secrets={}, actor=actor, make_default=default
                )
            named[name] = vendor_key
        return named

    def _assign(self, tenant: Tenant, vendor_key: VendorKey, actor: Actor) -> None:
        """A tenant from a demo database older than vendor keys: moved under its key (inline; a local key is fast)."""
        if KmsConfig.objects.filter(tenant=tenant, is_primary=True, vendor_key=vendor_key).exists():
            return
        job, _ = job_start_vendor_key_move(vendor_key=vendor_key, tenants=[tenant], actor=actor)
        if job is not None:
            job_run(job.pk)

    def _use_key(self, tenant: Tenant) -> None:
        for service, label, field, documents in DEMO_USE:
            meta = CallMeta(requesting_id=service, label=label, source_ip="127.0.0.1")
            for n in range(documents):
                doc = crypto_encrypt(tenant=tenant.external_id, fields={field: f"demo {n}".encode()}, meta=meta)
                if n % 2 == 0:  # applications read back some of what they write
                    crypto_decrypt(tenant=tenant.external_id, edek=doc.edek, fields=doc.fields, meta=meta)
