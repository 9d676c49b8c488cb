"""Real processes for tests: a Celery worker and plain Python processes sharing the test database.

Tests that use them need committed data (``transactional_db``). The broker is
Redis when CELERY_BROKER_URL/REDIS_URL is set (CI), else kombu's filesystem
transport in a temporary folder; either way each test gets its own queue, so
parallel runs never take each other's tasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """A URL for the database the running test uses (the test database, not the configured one)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "KEYCORE_TESTING": "1",
            "DATABASE_URL": database_url(),
            "KEYCORE_ROOT_KEY": settings.KEYCORE_ROOT_KEY,
            "KEYCORE_KEYUSE_AUTOFLUSH": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


def _reset_pool(app) -> None:
    """Drop pooled broker connections so new settings take effect (a new pool is made on next use)."""
    from kombu import pools

    pools.reset()  # closes and forgets kombu's global connection and producer pools
    app._pool = None
    app.amqp._producer_pool = None


class Worker:
    """A real Celery worker process on its own queue."""

    def __init__(
        self, tmp_path: Path, *, concurrency: int = 2, extra_env: dict[str, str] | None = None, app: str = "config"
    ) -> None:
        self.app = app
        self.queue = f"keycore-test-{uuid.uuid4().hex[:10]}"
        broker = settings.CELERY_BROKER_URL
        self.env = process_env(CELERY_QUEUE=self.queue, **(extra_env or {}))
        if broker.startswith("filesystem"):
            folder = tmp_path / "broker"
            for sub in ("in", "processed", "control"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            self.env["KEYCORE_BROKER_DIR"] = str(folder)
            self.env["CELERY_BROKER_URL"] = "filesystem://"
            self.transport_options = {
                "data_folder_in": str(folder / "in"),
                "data_folder_out": str(folder / "in"),
                "processed_folder": str(folder / "processed"),
                "control_folder": str(folder / "control"),
                "store_processed": False,
            }
        else:
            self.env["CELERY_BROKER_URL"] = broker
            self.transport_options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
        self.concurrency = concurrency
        self.log = tmp_path / f"worker-{self.queue}.log"
        self.proc: subprocess.Popen | None = None

    def configure_app(self):
        """Point this process's Celery app at the worker's queue and broker."""
        from config.celery import app

        self._old = (app.conf.task_default_queue, app.conf.broker_transport_options, app.conf.task_always_eager)
        app.conf.task_default_queue = self.queue
        app.conf.broker_transport_options = self.transport_options
        app.conf.task_always_eager = False
        _reset_pool(app)
        return app

    def restore_app(self) -> None:
        from config.celery import app

        app.conf.task_default_queue, app.conf.broker_transport_options, app.conf.task_always_eager = self._old
        _reset_pool(app)

    def start(self) -> Worker:
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "--loglevel=INFO",
            "-Q",
            self.queue,
            f"--concurrency={self.concurrency}",
            "--pool=prefork",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname=test-{uuid.uuid4().hex[:6]}@%h",
        ]
        self._logfile = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=self._logfile, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and pool children), as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_logfile", None):
            self._logfile.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
