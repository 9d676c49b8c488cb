"""Memberships get a random uid, so the tenant portal's URLs never carry sequential ids.

Three steps, as for any unique column added to a table that may have rows: add it
nullable, give every existing row its own uuid4, then make it unique and required.
"""

import uuid

from django.db import migrations, models


def fill_uids(apps, schema_editor):
    Membership = apps.get_model("keycore", "Membership")
    for pk in Membership.objects.filter(uid__isnull=True).values_list("pk", flat=True).iterator():
        Membership.objects.filter(pk=pk).update(uid=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [
        ("keycore", "0004_tenant_search_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="membership",
            name="uid",
            field=models.UUIDField(null=True, editable=False),
        ),
        migrations.RunPython(fill_uids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="membership",
            name="uid",
            field=models.UUIDField(default=uuid.uuid4, unique=True, editable=False),
        ),
    ]
