"""Indexes that keep the tenants list's search fast at 100k+ tenants, per database.

Django's ``icontains`` / ``istartswith`` compile to ``UPPER(col::text) LIKE UPPER(%s)``
on PostgreSQL and to ``col LIKE %s`` on SQLite, so the indexes are built on exactly
those expressions:

* PostgreSQL: pg_trgm GIN indexes on ``UPPER(name)`` and ``UPPER(external_id)``
  serve both prefix and substring searches of three characters or more.
* SQLite (the embedded default): a B-tree on ``UPPER(external_id)`` (the model
  already has one on ``UPPER(name)``) lets a prefix search be a range scan; see
  ``TenantFilterSet.search``.

The indexes exist in the database only, not in the model state: GIN and
``gin_trgm_ops`` do not exist on SQLite, and the model must describe a schema
both backends can build. Each operation runs on its own backend and is a no-op
on the other; reversing drops the indexes but leaves the pg_trgm extension, which
other indexes may use.
"""

from django.contrib.postgres.indexes import GinIndex, OpClass
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models
from django.db.models.functions import Upper


class OnlyOn(migrations.operations.base.Operation):
    """Run database operations on one backend (``vendor``) only; the model state is untouched."""

    reduces_to_sql = False
    reversible = True

    def __init__(self, vendor, operations, *, reverse=True):
        self.vendor = vendor
        self.operations = operations
        self.reverse = reverse

    def deconstruct(self):
        return (self.__class__.__qualname__, [self.vendor, self.operations], {"reverse": self.reverse})

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != self.vendor:
            return
        for operation in self.operations:
            operation.database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != self.vendor or not self.reverse:
            return
        for operation in reversed(self.operations):
            operation.database_backwards(app_label, schema_editor, from_state, to_state)

    def describe(self):
        return f"On {self.vendor} only: " + "; ".join(op.describe() for op in self.operations)


class Migration(migrations.Migration):
    dependencies = [
        ("keycore", "0003_security_events"),
    ]

    operations = [
        OnlyOn("postgresql", [TrigramExtension()], reverse=False),
        OnlyOn(
            "postgresql",
            [
                migrations.AddIndex(
                    model_name="tenant",
                    index=GinIndex(OpClass(Upper("name"), name="gin_trgm_ops"), name="tenant_uname_trgm"),
                ),
                migrations.AddIndex(
                    model_name="tenant",
                    index=GinIndex(OpClass(Upper("external_id"), name="gin_trgm_ops"), name="tenant_uextid_trgm"),
                ),
            ],
        ),
        OnlyOn(
            "sqlite",
            [
                migrations.AddIndex(
                    model_name="tenant", index=models.Index(Upper("external_id"), "id", name="tenant_uextid_id")
                ),
            ],
        ),
    ]
