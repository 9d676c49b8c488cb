from django.apps import AppConfig
from django.db.models.signals import post_migrate


def restore_tenant_search(sender, using, **kwargs):
    """After every migrate: put back SQLite's tenant search index if a table rebuild dropped its triggers."""
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


class VendorPortalConfig(AppConfig):
    name = "vendor_portal"
    verbose_name = "Vendor portal"

    def ready(self) -> None:
        post_migrate.connect(restore_tenant_search, dispatch_uid="vendor_portal.restore_tenant_search")
