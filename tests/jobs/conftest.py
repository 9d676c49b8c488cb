"""Real Celery workers sharing one queue, so a second one can take over from a killed first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workers import Worker

#: job tuning for worker processes: small chunks, short leases and backoff, so faults show in seconds
FAST_JOBS = {
    "KEYCORE_JOB_LEASE_SECONDS": "2",
    "KEYCORE_JOB_RETRY_BASE": "0.2",
    "KEYCORE_JOB_RETRY_MAX": "1",
}


class WorkerPool:
    """Workers on one queue and broker; this test process enqueues onto it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.workers: list[Worker] = []

    def start(self, *, concurrency: int = 2, **env: str) -> Worker:
        # the app with the fault receivers of tests/jobs/faults.py (they act only when KEYCORE_TEST_FAULTS says so)
        worker = Worker(self.tmp_path, concurrency=concurrency, extra_env={**FAST_JOBS, **env}, app="tests.jobs.faults")
        if self.workers:
            first = self.workers[0]
            worker.queue = first.queue
            worker.transport_options = first.transport_options
            worker.env = {**first.env, **FAST_JOBS, **env}
            worker.log = self.tmp_path / f"worker-{first.queue}-{len(self.workers)}.log"
        else:
            worker.configure_app()
        self.workers.append(worker.start())
        return worker

    def output(self) -> str:
        return "\n".join(f"--- worker {n}\n{w.output()[-4000:]}" for n, w in enumerate(self.workers))

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.workers:
            self.workers[0].restore_app()


@pytest.fixture
def worker_pool(transactional_db, tmp_path) -> Iterator[WorkerPool]:
    pool = WorkerPool(tmp_path)
    yield pool
    pool.stop()
