"""The SDK against a real KeyCore: a gunicorn server process and SDK processes (no Django in them).

* A tenant revokes its key through its own service: every SDK process refuses within 2 seconds.
* KeyCore stops: SDK processes go on until their leases expire, and refuse from then on (fail closed):
  not before, not after.
* Every use the SDK processes made arrives as key-use events of their API key, and moves the
  version's document count as server-side encrypts do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from bench.api import free_port, start_gunicorn, stop
from keycore.models import KeyUseEvent, KmsConfig, TenantKey
from keycore.services.apikeys import api_key_create
from keycore.services.audit import Actor
from keycore.services.keys import kms_config_revoke
from tests.factories import make_tenant
from tests.workers import ROOT, process_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
WORKERS = 2


class SdkProcess:
    def __init__(self, base: str, key: str, tenant: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "sdk" / "sdk_worker.py"), base, key, tenant],
            cwd=ROOT,
            env={**process_env(), "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def first(self, predicate) -> dict | None:
        return next((line for line in list(self.lines) if predicate(line)), None)

    def refusals(self, since: float = 0.0) -> list[dict]:
        """Refusals from ``since`` on (a lease request that timed out on an overloaded machine earlier is not
        what the test is about)."""
        return [line for line in list(self.lines) if line.get("ok") is False and line["t"] >= since]

    def finish(self) -> dict:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=5)
        return self.lines[-1]


@pytest.fixture
def deployment(tmp_path):
    tenant = make_tenant("live", "Live Tenant")
    _key, raw = api_key_create(name="sdk live", scopes=["crypto"], actor=Actor.system("tests"))
    port = free_port()
    env = process_env(KEYCORE_SDK_LEASE_SECONDS="4", KEYCORE_VAR_DIR=str(tmp_path), LOG_LEVEL="ERROR")
    server = start_gunicorn(env, port, workers=2, threads=4, worker_class="gthread")
    workers: list[SdkProcess] = []
    yield tenant, raw, f"http://127.0.0.1:{port}", server, workers
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.kill()
    if server.poll() is None:
        stop(server)


def _start(deployment) -> list[SdkProcess]:
    tenant, raw, base, _server, workers = deployment
    workers.extend(SdkProcess(base, raw, tenant.external_id) for _ in range(WORKERS))
    for worker in workers:
        wait_for(lambda w=worker: w.first(lambda line: line.get("ok") is True), timeout=60, what="SDK process working")
    return workers


def test_a_revocation_reaches_every_sdk_process_within_two_seconds(deployment):
    tenant, _raw, _base, _server, _ = deployment
    workers = _start(deployment)
    time.sleep(1.5)  # working, with warm leases
    primary = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    kms_config_revoke(config=primary, actor=Actor.system("tenant-portal"))  # committed when it returns
    revoked_at = time.time()
    for worker in workers:
        wait_for(lambda w=worker: w.refusals(revoked_at), timeout=10, what="a refusal")
    for worker in workers:
        first = worker.refusals(revoked_at)[0]
        assert first["t"] - revoked_at <= 2.0, f"refused {first['t'] - revoked_at:.2f}s after the revocation"
        # KeyCore says why; a lease request that times out on an overloaded server refuses too (fail closed:
        # lease-unavailable) and the next one says key-revoked
        assert first["error"] in ("key-revoked", "lease-unavailable"), first
        wait_for(
            lambda w=worker: any(r["kind"] == "KeyRevoked" for r in w.refusals(revoked_at)),
            timeout=15,
            what="key-revoked",
        )
    time.sleep(0.5)
    totals = [worker.finish() for worker in workers]
    for worker in workers:  # never again served after the first refusal
        first = worker.refusals(revoked_at)[0]["t"]
        assert not [line for line in worker.lines if line.get("ok") is True and line["t"] > first]
    encrypted = sum(t["totals"]["encrypt"] for t in totals)
    decrypted = sum(t["totals"]["decrypt"] for t in totals)
    assert encrypted > 10 and all(t["reports_failed"] == 0 for t in totals)

    # every use reached the tenant's events, attributed to the SDK's API key, and the version count moved
    def recorded(operation: str) -> int:
        rows = KeyUseEvent.objects.filter(tenant=tenant, operation=operation, result="ok", api_key_name="sdk live")
        return sum(rows.values_list("count", flat=True))

    wait_for(
        lambda: recorded("encrypt") == encrypted and recorded("decrypt") == decrypted,
        timeout=15,
        what=f"{encrypted} encrypts and {decrypted} decrypts recorded",
    )
    assert KeyUseEvent.objects.filter(tenant=tenant, result="key-revoked").exists()
    assert TenantKey.objects.get(tenant=tenant, version=1).documents == encrypted


def test_when_keycore_stops_sdk_processes_refuse_when_their_leases_expire(deployment):
    _tenant, _raw, _base, server, _ = deployment
    workers = _start(deployment)
    time.sleep(1.0)
    stop(server)
    stopped_at = time.time()
    for worker in workers:
        wait_for(lambda w=worker: w.refusals(stopped_at), timeout=15, what="a refusal")
    for worker in workers:
        first = worker.refusals(stopped_at)[0]
        assert first["error"] == "lease-unavailable" and first["kind"] == "LeaseUnavailable", first
        assert "could not be reached" in first["detail"]
        expiries = [line["lease_expires"] for line in worker.lines if "lease_expires" in line]
        expiry = max(e for e in expiries if e <= first["t"] + 0.05)
        # not before the lease expired (the server was already gone), and not after
        assert first["t"] >= expiry - 0.05, (first["t"], expiry)
        # the first call after expiry tries to renew once and then refuses: at once when the connection is
        # refused, after the SDK's request timeout (5 s) when a server going down still accepts connections
        # without answering. (Renewing ahead of expiry, so that expiry refuses without a network wait, is left.)
        assert first["t"] - expiry <= 6.0, f"refused {first['t'] - expiry:.2f}s after the lease expired"
        assert expiry > stopped_at - 0.5 or first["t"] - stopped_at < 4.5
        last_ok = max((line["t"] for line in worker.lines if line.get("ok") is True), default=0)
        assert last_ok < first["t"]
    for worker in workers:
        worker.finish()
