"""PostgreSQL: B-tree indexes for prefix searches of tenants (``UPPER(col) LIKE 'ABC%'``).

The trigram indexes of 0004 answer any substring, but for a prefix they read the
posting lists of every trigram in it (a common "NOR" touches thousands of entries);
a ``text_pattern_ops`` B-tree turns the prefix into one range scan whatever the
database's collation. Database only, like 0004; nothing happens on SQLite, whose
prefix search already uses ranges on the model's ``UPPER(name)`` index and 0004's
``UPPER(external_id)`` one.
"""

from django.contrib.postgres.indexes import OpClass
from django.db import migrations, models
from django.db.models.functions import Upper


def _indexes():
    return [
        models.Index(OpClass(Upper("name"), name="text_pattern_ops"), name="tenant_uname_prefix"),
        models.Index(OpClass(Upper("external_id"), name="text_pattern_ops"), name="tenant_uextid_prefix"),
    ]


def add_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    tenant = apps.get_model("keycore", "Tenant")
    for index in _indexes():
        schema_editor.add_index(tenant, index)


def remove_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    tenant = apps.get_model("keycore", "Tenant")
    for index in _indexes():
        schema_editor.remove_index(tenant, index)


class Migration(migrations.Migration):
    dependencies = [
        ("keycore", "0005_membership_uid"),
    ]

    operations = [migrations.RunPython(add_indexes, remove_indexes, elidable=False)]
