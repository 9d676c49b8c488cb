"""Demo data for the embedded default: a vendor admin, an operator, a few tenants and their admins.

Each demo tenant also gets a little real use of its key — documents encrypted and
decrypted through the crypto service, as an application would — so its security
events and its overview chart have something true to show.

Idempotent: running it again creates nothing that already exists.
"""

from __future__ import annotations

from allauth.account.models import EmailAddress
from django.core.management.base import BaseCommand
from django.db import transaction

from keycore.models import KeyUseEvent, Membership, Tenant, User
from keycore.roles import TenantRole, VendorRole
from keycore.services import keyuse
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.tenants import staff_create, tenant_create

DEMO_PASSWORD = "keycore-demo-password"  # noqa: S105 - demo accounts of the embedded default only
STAFF = [("admin@vendor.example", VendorRole.ADMIN), ("operator@vendor.example", VendorRole.OPERATOR)]
TENANTS = [
    ("acme", "Acme Corporation", "owner@acme.example"),
    ("globex", "Globex Industries", "owner@globex.example"),
    ("initech", "Initech", "owner@initech.example"),
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
        for external_id, name, owner in TENANTS:
            tenant = Tenant.objects.filter(external_id=external_id).first()
            if tenant is None:
                tenant = tenant_create(external_id=external_id, name=name, actor=actor, send=False)
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

    def _use_key(self, tenant: Tenant) -> None:
        for service, label, field, documents in DEMO_USE:
            meta = CallMeta(requesting_id=service, label=label, source_ip="127.0.0.1")
            for n in range(documents):
                doc = crypto_encrypt(tenant=tenant.external_id, fields={field: f"demo {n}".encode()}, meta=meta)
                if n % 2 == 0:  # applications read back some of what they write
                    crypto_decrypt(tenant=tenant.external_id, edek=doc.edek, fields=doc.fields, meta=meta)
