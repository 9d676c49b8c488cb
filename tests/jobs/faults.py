"""Faults injected into a real Celery worker, for the fault drills in test_jobs_faults.py.

A worker started with ``-A tests.jobs.faults`` runs KeyCore's Celery app with
receivers on the job engine's signals, as named in ``KEYCORE_TEST_FAULTS``
(comma-separated ``action:point:arg``):

* ``sleep:<point>:<seconds>`` — slow every hit (a worker that is easy to kill mid-job);
* ``dbdrop:<point>:<n>`` — lose the database connection at the n-th hit, inside the
  batch's transaction: on PostgreSQL by announcing this backend's pid in a file in
  ``KEYCORE_TEST_FAULT_DIR`` and waiting for the test to terminate it; on SQLite by
  failing as a dropped connection would.

Points: ``batch_written`` (a batch's writes are done, not committed) and
``batch_committed``. Production code only sends the signals; this module is the
only place that turns them into faults.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

from celery.signals import worker_process_init
from django.db import OperationalError, connection

from config.celery import app  # noqa: F401 - the app this worker runs

_hits: dict[str, int] = defaultdict(int)


def _drop_connection(point: str) -> None:
    folder = Path(os.environ.get("KEYCORE_TEST_FAULT_DIR", "."))
    if connection.vendor == "postgresql":
        pid = connection.cursor().connection.info.backend_pid
        marker = folder / f"dbdrop-{pid}"
        marker.write_text(point)
        deadline = time.monotonic() + 30
        while marker.exists() and time.monotonic() < deadline:  # the test terminates our backend, then removes it
            time.sleep(0.02)
        return
    (folder / f"dbdrop-{os.getpid()}").write_text(point)
    raise OperationalError("simulated loss of the database connection")


def _injector(point: str):
    def receiver(sender, **kwargs) -> None:
        for entry in os.environ.get("KEYCORE_TEST_FAULTS", "").split(","):
            action, _, rest = entry.partition(":")
            name, _, arg = rest.partition(":")
            if name != point:
                continue
            if action == "sleep":
                time.sleep(float(arg))
            elif action == "dbdrop":
                _hits[point] += 1
                if _hits[point] == int(arg or 1):
                    _drop_connection(point)

    return receiver


@worker_process_init.connect
def _connect(**kwargs) -> None:
    """In each pool process, once Django is set up (KeyCore's models cannot be imported before)."""
    from keycore.services.jobs import batch_committed, batch_written

    batch_written.connect(_injector("batch_written"), weak=False)
    batch_committed.connect(_injector("batch_committed"), weak=False)
