"""Set-based writes for jobs and audit at scale: many rows in one statement, whatever the batch size.

PostgreSQL: rows travel by binary ``COPY`` (into the table, or into a temporary
table emptied at commit and then one ``UPDATE … FROM``) — the cheapest way in,
and no statement that grows with the batch. SQLite: ``executemany``.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.db import connection, models
from psycopg.types.json import Jsonb


def update_rows(model, columns: list[tuple[str, str]], rows: list[tuple], match: tuple[str, str] | None = None) -> int:
    """``UPDATE model SET columns WHERE id = row[0] [AND match = row[-1]]`` for many rows at once; rows changed.

    ``columns`` are (column, PostgreSQL type); a row is (id, *values[, expected]).
    """
    if not rows:
        return 0
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            names = ["id", *(name for name, _ in columns), *(["expected"] if match else [])]
            types = ["int8", *(kind for _, kind in columns), *([match[1]] if match else [])]
            scratch = f"keycore_job_{model._meta.model_name}_{len(columns)}{'_cas' if match else ''}"
            definition = ", ".join(f"{name} {kind}" for name, kind in zip(names, types, strict=True))
            assignments = ", ".join(f"{quote(name)} = v.{name}" for name, _ in columns)
            condition = f"t.id = v.id AND t.{quote(match[0])} = v.expected" if match else "t.id = v.id"
            with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as raw:
                raw.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {scratch} ({definition}) ON COMMIT DELETE ROWS")
                raw.execute(f"TRUNCATE {scratch}")
                with raw.copy(f"COPY {scratch} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(types)
                    for row in rows:
                        copy.write_row(row)
                raw.execute(
                    f"UPDATE {table} AS t SET {assignments} FROM {scratch} AS v WHERE {condition}"  # noqa: S608
                )
                return raw.rowcount
        assignments = ", ".join(f"{quote(name)} = %s" for name, _ in columns)
        condition = f"id = %s AND {quote(match[0])} = %s" if match else "id = %s"
        ordered = [(*row[1 : len(columns) + 1], row[0], *row[len(columns) + 1 :]) for row in rows]
        cursor.executemany(f"UPDATE {table} SET {assignments} WHERE {condition}", ordered)  # noqa: S608
        return cursor.rowcount


def field_defaults(model, now) -> dict[str, Any]:
    """attname → the value a new row of ``model`` gets when not given one: its default, ``now`` for ``auto_now``."""
    values: dict[str, Any] = {}
    for f in model._meta.concrete_fields:
        if f.primary_key:
            continue
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            values[f.attname] = now
        elif f.has_default():
            values[f.attname] = f.get_default()
        else:
            values[f.attname] = None
    return values


def allocate_ids(model, count: int) -> list[int] | None:
    """``count`` fresh primary keys from the table's sequence (PostgreSQL); None where there is none (SQLite)."""
    if connection.vendor != "postgresql" or not count:
        return None
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [quote(model._meta.db_table), model._meta.pk.column, count],
        )
        return [row[0] for row in cursor.fetchall()]


def insert_rows_with_ids(model, rows: list[dict[str, Any]]) -> None:
    """Insert rows and set each one's ``id``: ids from the sequence and COPY on PostgreSQL, one INSERT … RETURNING
    per row elsewhere (SQLite: in-process, so cheap)."""
    if not rows:
        return
    ids = allocate_ids(model, len(rows))
    if ids is not None:
        for row, pk in zip(rows, ids, strict=True):
            row["id"] = pk
        insert_rows(model, rows, with_pk=True)
        return
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    statement = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({marks}) RETURNING id"  # noqa: S608
    with connection.cursor() as cursor:
        for row in rows:
            cursor.execute(statement, [f.get_db_prep_save(row.get(f.attname), connection) for f in fields])
            row["id"] = cursor.fetchone()[0]


def insert_rows(model, rows: list[dict[str, Any]], *, with_pk: bool = False) -> None:
    """Insert rows (attname → value) of ``model`` at once: COPY on PostgreSQL, executemany elsewhere."""
    if not rows:
        return
    fields = [f for f in model._meta.concrete_fields if with_pk or not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    if connection.vendor == "postgresql":
        jsons = [isinstance(f, models.JSONField) for f in fields]
        statement = f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN"
        with (
            connection.wrap_database_errors,
            psycopg.Cursor(connection.connection) as raw,
            raw.copy(statement) as copy,
        ):
            for row in rows:
                copy.write_row(
                    [Jsonb(row[f.attname]) if j else row.get(f.attname) for f, j in zip(fields, jsons, strict=True)]
                )
        return
    # as the ORM would: each field prepares its own value (dates, JSON, addresses)
    values = [[f.get_db_prep_save(row.get(f.attname), connection) for f in fields] for row in rows]
    marks = ", ".join(["%s"] * len(fields))
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({marks})", values)  # noqa: S608
