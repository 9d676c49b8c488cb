"""Prometheus metrics: never public by default, never a tenant or a key in a label, and real servers export them.

The last two tests scrape a real gunicorn (two workers, multi-process mode, config/gunicorn.py) and a real
Celery worker (a prefork pool of two, its own HTTP port) — the deployment's own processes.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import urllib3
from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector

from bench.api import free_port, stop
from keycore import errors, metrics
from keycore.crypto.cache import TenantKeyCache
from keycore.models import KmsConfig, RekeyJob
from keycore.providers.base import WrapContext
from keycore.providers.local import LocalProvider
from keycore.services import keys
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.keyring import provider_for, wrap_context
from keycore.services.keyuse import recorder
from keycore.services.tenants import tenant_create
from tests.workers import ROOT, Worker, wait_for

TOKEN = "metrics-token-" + "x" * 24


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- who may read them ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_are_a_404_until_a_token_is_configured(client, settings):
    settings.KEYCORE_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [None, "", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer"],
    ids=["none", "empty", "short", "long", "basic", "no-scheme", "scheme-only"],
)
def test_anything_but_the_bearer_token_is_refused(client, settings, header):
    settings.KEYCORE_METRICS_TOKEN = TOKEN
    extra = {} if header is None else {"HTTP_AUTHORIZATION": header}
    response = client.get("/metrics", **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"keycore_" not in response.content


@pytest.mark.django_db
def test_a_signed_in_vendor_administrator_still_needs_the_token(client, settings, vendor_admin):
    settings.KEYCORE_METRICS_TOKEN = TOKEN
    client.force_login(vendor_admin)
    assert client.get("/metrics").status_code == 401


@pytest.mark.django_db
def test_the_token_reads_every_family(client, settings):
    settings.KEYCORE_METRICS_TOKEN = TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for family in (
        "keycore_crypto_operations",
        "keycore_key_cache_events",
        "keycore_kms_calls",
        "keycore_kms_call_seconds",
        "keycore_revocation_epoch_lag_seconds",
        "keycore_rekey_items",
        "keycore_rekey_jobs",
        "keycore_rekey_job_items",
        "keycore_event_delivery_backlog",
        "keycore_event_dead_letters",
        "keycore_http_request_seconds",
        "keycore_metrics_database_up",
    ):
        assert f"# HELP {family}" in text, family
    assert "keycore_metrics_database_up 1.0" in text


# --- what they say, and what they never say ---------------------------------------------------------------


@pytest.mark.django_db
def test_no_label_names_a_tenant_a_key_or_a_configuration(client, settings):
    settings.KEYCORE_METRICS_TOKEN = TOKEN
    actor = Actor.system("tests")
    tenant = tenant_create(external_id="acme-sensitive-7731", name="Acme Sensitive Name", actor=actor)
    config = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    meta = CallMeta(requesting_id="billing-secret-service", label="payroll-label")
    stored = crypto_encrypt(tenant=tenant.external_id, fields={"f": b"x"}, meta=meta)
    crypto_decrypt(tenant=tenant.external_id, edek=stored.edek, fields=stored.fields, meta=meta)
    with pytest.raises(errors.KeyCoreError):
        crypto_decrypt(tenant=tenant.external_id, edek=b"\x00" * 40, fields=stored.fields, meta=meta)
    recorder.cut()
    client.get(f"/api/v1/tenants/{tenant.external_id}/")  # a path with the tenant in it
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    assert "keycore_crypto_operations_total" in text
    for secret in (
        tenant.external_id,
        tenant.uid.hex,
        str(tenant.uid),
        tenant.name,
        config.uid.hex,
        config.name,
        "billing-secret-service",
        "payroll-label",
        TOKEN,
        "/api/v1/",
    ):
        assert secret not in text, secret
    assert 'route="' in text  # requests are labelled by route name instead


@pytest.mark.django_db
def test_crypto_operations_are_counted_by_result_and_problem_type():
    tenant = tenant_create(external_id="counted", name="Counted", actor=Actor.system("tests"))
    meta = CallMeta(requesting_id="svc")
    ok_before = value("keycore_crypto_operations_total", operation="encrypt", result="ok")
    bad_before = value("keycore_crypto_operations_total", operation="decrypt", result="malformed-data")
    stored = [crypto_encrypt(tenant="counted", fields={"f": b"x"}, meta=meta) for _ in range(3)]
    with pytest.raises(errors.MalformedData):
        crypto_decrypt(tenant=tenant.external_id, edek=b"nonsense", fields=stored[0].fields, meta=meta)
    recorder.cut()
    assert value("keycore_crypto_operations_total", operation="encrypt", result="ok") == ok_before + 3
    assert value("keycore_crypto_operations_total", operation="decrypt", result="malformed-data") == bad_before + 1


@pytest.mark.django_db
def test_kms_calls_are_counted_and_timed_by_provider_and_outcome():
    tenant = tenant_create(external_id="kms-timed", name="KMS", actor=Actor.system("tests"))
    config = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    provider = provider_for(config)
    context = wrap_context(config, tenant, 1)
    labels = {"provider": provider.name, "operation": "unwrap"}
    ok_before = value("keycore_kms_calls_total", outcome="ok", **labels)
    bad_before = value("keycore_kms_calls_total", outcome="authentication-failed", **labels)
    timed_before = value("keycore_kms_call_seconds_count", **labels)
    wrapped = provider.wrap(os.urandom(32), context)
    provider.unwrap(wrapped, context)
    with pytest.raises(errors.KeyCoreError) as refused:
        provider.unwrap(wrapped[:-1] + bytes([wrapped[-1] ^ 1]), context)
    assert value("keycore_kms_calls_total", outcome="ok", **labels) == ok_before + 1
    assert value("keycore_kms_calls_total", outcome=refused.value.code, **labels) == (
        bad_before + 1 if refused.value.code == "authentication-failed" else 1
    )
    assert value("keycore_kms_call_seconds_count", **labels) == timed_before + 2


def test_a_provider_that_calls_its_parent_is_counted_once():
    class Delegating(LocalProvider):
        name = "delegating-test"

        def wrap(self, key, context):
            return super().wrap(key, context)

    provider = Delegating({}, Delegating.generate_secrets())
    local = {"provider": "local", "operation": "wrap", "outcome": "ok"}
    local_before = value("keycore_kms_calls_total", **local)
    before = value("keycore_kms_calls_total", provider="delegating-test", operation="wrap", outcome="ok")
    provider.wrap(os.urandom(32), WrapContext("00" * 16, "t", "11" * 16, 1))
    assert value("keycore_kms_calls_total", provider="delegating-test", operation="wrap", outcome="ok") == before + 1
    assert value("keycore_kms_calls_total", **local) == local_before


def test_the_key_cache_counts_hits_misses_and_evictions_into_the_counters():
    now = [0.0]
    cache = TenantKeyCache(ttl=10, max_entries=2, clock=lambda: now[0])
    metrics.watch_cache("test-cache", cache)
    before = {
        e: value("keycore_key_cache_events_total", cache="test-cache", event=e) for e in ("hit", "miss", "eviction")
    }
    assert cache.get("a") is None  # miss
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)  # evicts a
    assert cache.get("b") == 2 and cache.get("c") == 3  # two hits
    assert cache.get("a") is None  # miss
    now[0] = 11.0
    assert cache.get("b") is None  # expired: a miss
    assert (cache.hits, cache.misses, cache.evictions) == (2, 3, 1)
    metrics.sync_process_metrics()
    metrics.sync_process_metrics()  # copies each count once
    after = {
        e: value("keycore_key_cache_events_total", cache="test-cache", event=e) for e in ("hit", "miss", "eviction")
    }
    assert {e: after[e] - before[e] for e in after} == {"hit": 2, "miss": 3, "eviction": 1}


def test_the_revocation_lag_is_the_age_of_the_last_epoch_read_of_a_process_serving_keys():
    now = [100.0]
    cache = TenantKeyCache(ttl=60, epoch_source=lambda: 1, epoch_interval=1.0, clock=lambda: now[0])
    metrics.watch_cache("lag-cache", cache)
    cache.put("k", 1)
    metrics.sync_process_metrics()
    now[0] = 100.5
    assert cache.get("k") == 1  # no new read: the last one is 0.5 s old
    metrics.sync_process_metrics()
    assert value("keycore_revocation_epoch_lag_seconds") == pytest.approx(0.5)
    metrics.sync_process_metrics()  # nothing served since: nothing can be stale
    assert value("keycore_revocation_epoch_lag_seconds") == 0
    metrics._watched.pop("lag-cache")


# --- real servers ------------------------------------------------------------------------------------------


def _server_env(folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYCORE_", "DJANGO_", "PYTEST", "CELERY_"))}
    env.pop("REDIS_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "KEYCORE_ROOT_KEY": base64.b64encode(os.urandom(32)).decode(),
            "KEYCORE_VAR_DIR": str(folder / "var"),
            "DATABASE_URL": f"sqlite:///{folder / 'keycore.sqlite3'}",
            "ALLOWED_HOSTS": "127.0.0.1",
            "KEYCORE_SECURE_COOKIES": "0",
            "STATIC_ROOT": str(folder / "static"),
            "KEYCORE_METRICS_TOKEN": TOKEN,
            "KEYCORE_METRICS_SYNC_INTERVAL": "0.5",
            "LOG_LEVEL": "ERROR",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    (folder / "static").mkdir(exist_ok=True)
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _wait_listening(process: subprocess.Popen, port: int) -> None:
    def listening() -> bool:
        assert process.poll() is None, f"exited with {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(listening, timeout=60, interval=0.2, what=f"a server on port {port}")


@pytest.mark.slow
def test_a_gunicorn_server_with_two_workers_exports_the_sum_of_both(tmp_path):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    (multiproc / "counter_999999.db").write_bytes(b"left over by a previous run")
    env = _server_env(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    _manage(env, "migrate", "--no-input")
    key = _manage(env, "create_api_key", "metrics", "--scope", "tenants:read,tenants:write,crypto", "--quiet").strip()
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"),
            *("--bind", f"127.0.0.1:{port}", "--workers", "2", "--worker-class", "sync"),
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        _wait_listening(server, port)
        assert not (multiproc / "counter_999999.db").exists()  # the server starts from an empty folder
        http = urllib3.PoolManager(retries=False, timeout=90)  # a shared CI machine can be slow
        created = http.request(
            "POST", f"{base}/api/v1/tenants/", body=json.dumps({"external_id": "gx-7", "name": "G"}), headers=headers
        )
        assert created.status == 201, created.data[:300]
        body = json.dumps({"tenant": "gx-7", "fields": {"f": "eA=="}, "requesting_id": "svc"})
        sent = [0]

        def encrypt_some(count: int) -> None:
            for _ in range(count):  # a new connection each time, from four threads at once: both workers answer
                r = http.request("POST", f"{base}/api/v1/crypto/encrypt", body=body, headers=headers)
                assert r.status == 200, r.data[:300]
                sent[0] += 1

        def per_worker() -> dict[str, float]:
            """Each process's own encrypt count, read from its own file."""
            out = {}
            for path in multiproc.glob("counter_*.db"):
                for family in MultiProcessCollector.merge([str(path)], accumulate=True):
                    for sample in family.samples:
                        if sample.name == "keycore_crypto_operations_total" and sample.labels["operation"] == "encrypt":
                            out[path.stem.split("_")[1]] = sample.value
            return out

        for _ in range(10):
            threads = [threading.Thread(target=encrypt_some, args=(10,)) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wait_for(lambda: sum(per_worker().values()) == sent[0], timeout=20, what="the counts in the files")
            if len([n for n in per_worker().values() if n]) >= 2:
                break
        assert len([n for n in per_worker().values() if n]) == 2, per_worker()  # both workers encrypted
        calls = sent[0]
        assert http.request("GET", f"{base}/metrics").status == 401

        def scrape() -> dict[str, float]:
            r = http.request("GET", f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status == 200
            text = r.data.decode()
            assert "gx-7" not in text and key not in text
            return dict(metrics.summary(text))

        encrypted = 'keycore_crypto_operations_total{operation="encrypt",result="ok"}'
        for _ in range(4):  # whichever worker answers the scrape, it reports both
            assert scrape()[encrypted] == calls
        pids = set(per_worker())
        figures = scrape()
        route = 'keycore_http_request_seconds_count{method="POST",route="api-crypto-encrypt",status="2xx"}'
        assert figures[route] == calls
        assert figures["keycore_metrics_database_up"] == 1

        # a worker killed: its live gauge is dropped from the sums, its counts stay counted
        worker_pid = next(
            int(p) for p in pids if int(p) != server.pid and (multiproc / f"gauge_livemax_{p}.db").exists()
        )
        os.kill(worker_pid, signal.SIGKILL)
        wait_for(
            lambda: not (multiproc / f"gauge_livemax_{worker_pid}.db").exists(), timeout=20, what="the dead worker"
        )
        wait_for(lambda: scrape().get(encrypted) == calls, timeout=20, what="the counts after the worker died")
    finally:
        stop(server)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_serves_its_pools_metrics_on_its_own_port(tmp_path):
    multiproc = tmp_path / "prometheus-worker"
    multiproc.mkdir()
    port = free_port()
    worker = Worker(
        tmp_path,
        extra_env={
            "KEYCORE_WORKER_METRICS_PORT": str(port),
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
            "KEYCORE_METRICS_SYNC_INTERVAL": "0.5",
        },
    )
    worker.configure_app()
    worker.start()
    try:
        _wait_listening(worker.proc, port)
        actor = Actor.system("tests")
        tenant = tenant_create(external_id="worker-metrics", name="Worker Metrics", actor=actor)
        for _ in range(3):
            keys.tenant_key_create(tenant=tenant, actor=actor)
        new = keys.kms_config_create(
            tenant=tenant, owner="vendor", data=keys.ConfigInput("local", "Next", {}, {}), actor=actor
        )
        job = keys.kms_config_make_primary(config=new, actor=actor)
        try:
            wait_for(lambda: RekeyJob.objects.get(pk=job.pk).state == "succeeded", timeout=90, what="the rekey job")
        except AssertionError:
            raise AssertionError(worker.output()[-3000:]) from None

        def scrape() -> dict[str, float]:
            r = urllib3.request("GET", f"http://127.0.0.1:{port}/metrics")
            assert r.status == 200
            assert "worker-metrics" not in r.data.decode()
            return dict(metrics.summary(r.data.decode()))

        done = 'keycore_rekey_items_total{kind="rewrap",outcome="done"}'
        figures = wait_for(lambda: (f := scrape()).get(done) == 4 and f, timeout=20, what="the worker's rekey counts")
        # each key: unwrapped under the old configuration, wrapped under the new one, and the wrap verified
        assert figures['keycore_kms_calls_total{operation="wrap",outcome="ok",provider="local"}'] >= 4
        assert figures['keycore_kms_calls_total{operation="unwrap",outcome="ok",provider="local"}'] >= 8
        assert figures['keycore_rekey_batches_total{kind="rewrap"}'] >= 1
        # bound to the loopback address: not reachable on the machine's other addresses
        assert worker.env.get("KEYCORE_WORKER_METRICS_ADDRESS") is None
    finally:
        worker.stop()
        worker.restore_app()
