"""An audit event's changes as rows a person reads: field, before → after (includes/audit_changes_cell.html)."""

from __future__ import annotations


def change_rows(event) -> list[tuple[str, object, object]]:
    """``event.changes`` as (field, before, after); a value recorded without a before has None there.

    Secrets never reach here: ``services/audit.py::scrub`` replaced them with "(set)",
    "(changed)" and the like when the event was written.
    """
    rows = []
    for name, value in (event.changes or {}).items():
        if isinstance(value, list | tuple) and len(value) == 2:
            rows.append((name, value[0], value[1]))
        else:
            rows.append((name, None, value))
    return rows
