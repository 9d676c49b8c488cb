"""`seed_demo`, what `make run` loads: the demo logins work, and running it twice duplicates nothing."""

from __future__ import annotations

import io

from django.core.management import call_command
from django.db.models import Sum

from keycore.models import AuditEvent, KeyUseEvent, Membership, Tenant, User, VendorStaff
from keycore.services.events import chain_verify

LABELS = {"invoice.iban", "contact.phone", "ticket.body"}


def _counts() -> dict[str, int]:
    return {
        "users": User.objects.count(),
        "staff": VendorStaff.objects.count(),
        "tenants": Tenant.objects.count(),
        "members": Membership.objects.count(),
        "key_use": KeyUseEvent.objects.aggregate(n=Sum("count"))["n"] or 0,
        "audit": AuditEvent.objects.count(),
    }


def test_seed_demo_is_idempotent_and_leaves_real_key_use(transactional_db, client):
    call_command("seed_demo", stdout=io.StringIO())
    first = _counts()
    call_command("seed_demo", stdout=io.StringIO())
    assert _counts() == first

    assert first["tenants"] == 3 and first["staff"] == 2
    # two named vendor keys, and tenants under each
    from keycore.models import KmsConfig, VendorKey

    assert sorted(VendorKey.objects.values_list("name", "is_default")) == [("EU key", True), ("US key", False)]
    served = dict(KmsConfig.objects.filter(is_primary=True).values_list("tenant__external_id", "vendor_key__name"))
    assert served == {"acme": "EU key", "globex": "EU key", "initech": "US key"}
    for tenant in Tenant.objects.all():
        uses = KeyUseEvent.objects.filter(tenant=tenant)
        assert set(uses.values_list("label", flat=True)) == LABELS
        per_op = dict(uses.values_list("operation").annotate(n=Sum("count")))
        assert per_op == {"encrypt": 22, "decrypt": 12}
        assert set(uses.values_list("result", flat=True)) == {"ok"}
        assert chain_verify(tenant.pk).ok

    from keycore.management.commands.seed_demo import DEMO_PASSWORD

    assert client.login(email="owner@acme.example", password=DEMO_PASSWORD)


def test_a_demo_database_from_before_vendor_keys_is_moved_under_them(transactional_db):
    from keycore.models import KmsConfig
    from keycore.services.audit import Actor
    from keycore.services.tenants import tenant_create

    tenant_create(external_id="acme", name="Acme Corporation", actor=Actor.system("tests"), send=False)
    call_command("seed_demo", stdout=io.StringIO())
    primary = KmsConfig.objects.get(tenant__external_id="acme", is_primary=True)
    assert primary.vendor_key.name == "EU key"
    assert KmsConfig.objects.get(tenant__external_id="acme", vendor_key__isnull=True).state == "retired"
