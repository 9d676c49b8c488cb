"""Tenant.key_status (whether a tenant's data can be read now) and TenantCount (the dashboard's counts).

Existing tenants get their key status from the one rule (keycore/key_status.py), in batches of
ids, and the counts are computed once from what the rows then say; from here on the services keep
both in step (keycore/services/summary.py). The indexes are built after the rows are written.
"""

from collections import Counter
from datetime import UTC, timedelta

from django.db import migrations, models

from keycore.key_status import ConfigFacts, key_status_of

BATCH = 2000
SLOTS = 16  # TenantCount.SLOTS
COUNTED_VALUES = {
    "status": ["active", "suspended", "offboarding", "offboarded"],
    "key_ownership": ["vendor", "tenant"],
    "key_status": [
        "healthy", "degraded", "kms_unreachable", "revoked", "disabled", "suspended", "offboarded", "shredded",
    ],
}


def compute_key_status(apps, schema_editor):
    Tenant = apps.get_model("keycore", "Tenant")
    KmsConfig = apps.get_model("keycore", "KmsConfig")
    TenantKeyWrap = apps.get_model("keycore", "TenantKeyWrap")
    TenantCount = apps.get_model("keycore", "TenantCount")
    counts = Counter()
    last = 0
    while True:
        rows = list(
            Tenant.objects.filter(pk__gt=last)
            .order_by("pk")
            .values_list("pk", "status", "key_ownership", "created_at")[:BATCH]
        )
        if not rows:
            break
        last = rows[-1][0]
        ids = [r[0] for r in rows]
        configs = {}
        for c in (
            KmsConfig.objects.filter(tenant_id__in=ids)
            .exclude(state__in=["retired", "destroyed"])
            .values("id", "tenant_id", "owner", "state", "health", "is_primary")
        ):
            configs.setdefault(c["tenant_id"], []).append(c)
        others = [c["id"] for cs in configs.values() for c in cs if not c["is_primary"]]
        holding = set(
            TenantKeyWrap.objects.filter(kms_config_id__in=others)
            .exclude(tenant_key__state="destroyed")
            .values_list("kms_config_id", flat=True)
            .distinct()
        ) if others else set()
        by_status = {}
        for pk, status, ownership, created_at in rows:
            facts = [
                ConfigFacts(
                    owner=c["owner"],
                    state=c["state"],
                    health=c["health"],
                    is_primary=c["is_primary"],
                    holds_keys=c["is_primary"] or c["id"] in holding,
                )
                for c in configs.get(pk, [])
            ]
            key_status = key_status_of(tenant_status=status, configs=facts).value
            by_status.setdefault(key_status, []).append(pk)
            slot = pk % SLOTS
            counts[("status", status, slot)] += 1
            counts[("key_ownership", ownership, slot)] += 1
            counts[("key_status", key_status, slot)] += 1
            day = created_at.astimezone(UTC).date()  # the Monday of its week, as services/summary.py::week_of
            counts[("created_week", (day - timedelta(days=day.weekday())).isoformat(), slot)] += 1
        for key_status, pks in by_status.items():
            Tenant.objects.filter(pk__in=pks).update(key_status=key_status)
    for dimension, values in COUNTED_VALUES.items():
        for value in values:
            for slot in range(SLOTS):
                counts.setdefault((dimension, value, slot), 0)
    TenantCount.objects.bulk_create(
        [TenantCount(dimension=d, value=v, slot=s, count=n) for (d, v, s), n in sorted(counts.items())],
        batch_size=1000,
    )


class Migration(migrations.Migration):

    dependencies = [
        ('keycore', '0015_shred_early_dual_control'),
    ]

    operations = [
        migrations.CreateModel(
            name='TenantCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('dimension', models.CharField(max_length=16)),
                ('value', models.CharField(max_length=32)),
                ('slot', models.PositiveSmallIntegerField(default=0)),
                ('count', models.BigIntegerField(default=0)),
            ],
        ),
        migrations.AddField(
            model_name='tenant',
            name='key_status',
            field=models.CharField(choices=[('healthy', 'Healthy'), ('degraded', 'Degraded'), ('kms_unreachable', 'KMS unreachable'), ('revoked', 'Revoked by tenant'), ('disabled', 'Key disabled'), ('suspended', 'Suspended'), ('offboarded', 'Offboarded'), ('shredded', 'Shredded')], default='disabled', max_length=16),
        ),
        migrations.AddConstraint(
            model_name='tenantcount',
            constraint=models.UniqueConstraint(fields=('dimension', 'value', 'slot'), name='tenant_count_unique'),
        ),
        migrations.RunPython(compute_key_status, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name='tenant',
            index=models.Index(fields=['key_status', 'name', 'id'], name='tenant_keystatus_name'),
        ),
        migrations.AddIndex(
            model_name='tenant',
            index=models.Index(fields=['key_status', 'created_at', 'id'], name='tenant_keystatus_created'),
        ),
        # a health check says the KMS answered, not that data can be read (that is key_status): "Reachable"
        migrations.AlterField(
            model_name='kmsconfig',
            name='health',
            field=models.CharField(choices=[('unknown', 'Not checked yet'), ('ok', 'Reachable'), ('failing', 'Failing')], default='unknown', max_length=8),
        ),
        migrations.AlterField(
            model_name='tenant',
            name='health',
            field=models.CharField(choices=[('unknown', 'Not checked yet'), ('ok', 'Reachable'), ('failing', 'Failing')], default='unknown', max_length=8),
        ),
    ]
