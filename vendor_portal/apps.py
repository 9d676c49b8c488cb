from django.apps import AppConfig
from django.db.models.signals import post_migrate


def restore_tenant_search(sender, using, **kwargs):
    """After every migrate: put back SQLite's tenant search indexes if a table rebuild dropped them."""
    from importlib import import_module

    from django.db import connections

    if sender.label != "keycore":
        return
    fts = import_module("keycore.migrations.0007_tenant_search_fts")
    connection = connections[using]
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM django_migrations WHERE app = 'keycore' AND name = '0007_tenant_search_fts'")
        applied = cursor.fetchone() is not None
    if applied:
        fts.ensure_tenant_search(connection)
        with connection.cursor() as cursor:
            # SQLite rebuilds a table to add a NOT NULL column, keeping only the indexes the model declares:
            # the external-id index of migration 0004 is SQLite's own, so it is put back here too
            cursor.execute(
                'CREATE INDEX IF NOT EXISTS "tenant_uextid_id" ON "keycore_tenant" ((UPPER("external_id")), "id")'
            )


class VendorPortalConfig(AppConfig):
    name = "vendor_portal"
    verbose_name = "Vendor portal"

    def ready(self) -> None:
        post_migrate.connect(restore_tenant_search, dispatch_uid="vendor_portal.restore_tenant_search")
