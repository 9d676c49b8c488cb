"""PostgreSQL restarts under load: callers get 503 with Retry-After (never 500), and the client rides it out.

A real deployment in miniature: a PostgreSQL server of the test's own (never the
machine's shared one), migrated; gunicorn with two workers and production
settings; threads calling the API without retries (to see every answer) and
through keycore.client (to see what an application sees). Mid-run the server is
stopped the way a restart stops it (``pg_ctl stop -m fast``: every session ended,
then connections refused), left down for a second, and started again.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import urllib3

from bench.api import free_port, start_gunicorn, stop
from keycore import client as kc
from tests.conftest import require
from tests.postgres_cluster import PostgresCluster
from tests.providers.servers import ServiceUnavailable

pytestmark = [pytest.mark.services, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
ROOT_KEY = "cmVzdGFydC10ZXN0LXJvb3Qta2V5LTMyLWJ5dGVzLTA="


@pytest.fixture
def cluster():
    try:
        server = PostgresCluster().init()
        server.start()
    except ServiceUnavailable as exc:
        require(False, f"a PostgreSQL server of the test's own: {exc}")
    yield server
    server.destroy()


def _server_env(database_url: str, folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYCORE_", "DJANGO_", "PYTEST", "CELERY_"))}
    env.pop("REDIS_URL", None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "KEYCORE_ROOT_KEY": ROOT_KEY,
            "KEYCORE_VAR_DIR": str(folder / "var"),
            "DATABASE_URL": database_url,
            "ALLOWED_HOSTS": "127.0.0.1",
            "KEYCORE_SECURE_COOKIES": "0",
            "STATIC_ROOT": str(folder / "static"),
            "KEYCORE_REVOCATION_POLL": "0.2",
            "LOG_LEVEL": "ERROR",
            "PYTHONPATH": str(ROOT),
        }
    )
    (folder / "static").mkdir(exist_ok=True)
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_a_postgresql_restart_under_load_answers_503_and_the_client_rides_it_out(cluster, tmp_path):
    env = _server_env(cluster.create_database("keycore"), tmp_path)
    _manage(env, "migrate", "--no-input")
    key = _manage(env, "create_api_key", "faults", "--scope", "tenants:read,tenants:write,crypto", "--quiet").strip()
    port = free_port()
    server = start_gunicorn(env, port, workers=2, threads=4, worker_class="gthread")
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    http = urllib3.PoolManager(maxsize=8, retries=False, timeout=20)
    try:
        created = http.request(
            "POST", f"{base}/api/v1/tenants/", body=json.dumps({"external_id": "fault", "name": "F"}), headers=headers
        )
        assert created.status == 201, created.data[:500]

        stop_load = threading.Event()
        answers: list[tuple[int, str, str | None, bytes]] = []
        client_errors: list[BaseException] = []
        client_calls = [0]
        encrypt = json.dumps({"tenant": "fault", "fields": {"f": "eA=="}, "requesting_id": "faults"})

        def raw_load() -> None:
            while not stop_load.is_set():
                for method, path, body in (
                    ("GET", "/api/v1/tenants/fault/", None),
                    ("POST", "/api/v1/crypto/encrypt", encrypt),
                ):
                    r = http.request(method, base + path, body=body, headers=headers)
                    answers.append((r.status, r.headers.get("Content-Type", ""), r.headers.get("Retry-After"), r.data))
                time.sleep(0.005)

        def client_load() -> None:
            with kc.KeyCoreClient(base, key, requesting_id="faults", retries=5, timeout=20) as client:
                while not stop_load.is_set():
                    try:
                        client.tenant("fault")
                        client.encrypt("fault", {"f": b"x"})
                        client_calls[0] += 2
                    except Exception as exc:  # what an application would see
                        client_errors.append(exc)
                    time.sleep(0.01)

        threads = [threading.Thread(target=raw_load) for _ in range(3)] + [
            threading.Thread(target=client_load) for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.5)
            before = len(answers)
            cluster.stop("fast")  # every session ended, then connections refused
            time.sleep(1.0)
            cluster.start()
            time.sleep(3.0)
        finally:
            stop_load.set()
            for thread in threads:
                thread.join(timeout=60)
    finally:
        stop(server)

    statuses = [status for status, *_ in answers]
    assert before > 0 and statuses[:before].count(200) > 0
    unexpected = [(s, body[:200]) for s, _, _, body in answers if s not in (200, 503)]
    assert not unexpected, f"answers other than 200 and 503 during the restart: {unexpected[:5]}"
    unavailable = [(ctype, retry, body) for s, ctype, retry, body in answers if s == 503]
    assert unavailable, "the load never met the restart: the test proved nothing"
    for ctype, retry, body in unavailable:
        assert ctype == "application/problem+json" and retry and int(retry) > 0
        assert json.loads(body)["type"].rsplit("/", 1)[-1] in ("database-unavailable", "revocation-status-unknown")
    assert statuses[-6:] == [200] * 6, "after the restart every call succeeds again"
    assert client_calls[0] > 0
    assert not client_errors, f"the client let applications see: {client_errors[:3]}"
