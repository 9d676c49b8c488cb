"""SQLite: a trigram full-text index over tenant names and external ids, for substring searches.

SQLite has no index a ``LIKE '%harbor%'`` can use, so at 100k tenants a substring
search read the whole table (60-70 ms). FTS5's trigram tokenizer indexes every
three-character sequence; ``TenantFilterSet.search`` asks it for candidate rows
(three characters or more) and keeps its LIKE, so the answer is unchanged.

``keycore_tenant_search`` is an external-content FTS5 table over ``keycore_tenant``,
kept in step by three triggers. Django rebuilds a SQLite table for some later
schema changes, which drops its triggers; ``ensure_tenant_search`` is therefore
also run after every ``migrate`` (vendor_portal/apps.py) and restores them (and
the index) if they are missing. Nothing happens on PostgreSQL (pg_trgm serves it,
0004) or on a SQLite built without FTS5 (the search then scans, as before).
"""

from django.db import migrations

TABLE = "keycore_tenant_search"
TRIGGERS = {
    f"{TABLE}_insert": f"""
        CREATE TRIGGER IF NOT EXISTS {TABLE}_insert AFTER INSERT ON keycore_tenant BEGIN
            INSERT INTO {TABLE}(rowid, name, external_id) VALUES (new.id, new.name, new.external_id);
        END""",
    f"{TABLE}_delete": f"""
        CREATE TRIGGER IF NOT EXISTS {TABLE}_delete AFTER DELETE ON keycore_tenant BEGIN
            INSERT INTO {TABLE}({TABLE}, rowid, name, external_id) VALUES ('delete', old.id, old.name, old.external_id);
        END""",
    f"{TABLE}_update": f"""
        CREATE TRIGGER IF NOT EXISTS {TABLE}_update AFTER UPDATE OF name, external_id ON keycore_tenant BEGIN
            INSERT INTO {TABLE}({TABLE}, rowid, name, external_id) VALUES ('delete', old.id, old.name, old.external_id);
            INSERT INTO {TABLE}(rowid, name, external_id) VALUES (new.id, new.name, new.external_id);
        END""",
}


def fts5_available(connection) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT sqlite_compileoption_used('ENABLE_FTS5')")
        return bool(cursor.fetchone()[0])


def ensure_tenant_search(connection) -> bool:
    """Create the index and its triggers where missing; rebuild the index when anything was missing.

    Returns whether something had to be (re)created. Idempotent; a no-op off SQLite.
    """
    if connection.vendor != "sqlite" or not fts5_available(connection):
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT type, name FROM sqlite_master WHERE name = %s OR name LIKE %s", [TABLE, f"{TABLE}_%"])
        present = {name for _, name in cursor.fetchall()}
        missing = [name for name in (TABLE, *TRIGGERS) if name not in present]
        if not missing:
            return False
        cursor.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5("
            "name, external_id, content='keycore_tenant', content_rowid='id', tokenize='trigram')"
        )
        for sql in TRIGGERS.values():
            cursor.execute(sql)
        cursor.execute(f"INSERT INTO {TABLE}({TABLE}) VALUES ('rebuild')")
    return True


def drop_tenant_search(connection) -> None:
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        for name in TRIGGERS:
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")


def forwards(apps, schema_editor):
    ensure_tenant_search(schema_editor.connection)


def backwards(apps, schema_editor):
    drop_tenant_search(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("keycore", "0006_tenant_prefix_indexes"),
    ]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
