"""keycore.client against a live KeyCore server started by the test (real HTTP, real sockets)."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from keycore import client as kc
from keycore.models import KmsConfig, Tenant
from keycore.services.audit import Actor
from keycore.services.keys import kms_config_revoke
from tests.api.conftest import known_secrets

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def keycore(live_server, make_key, tenant, other_tenant):
    """A client of the live server; every raw body it receives is searched for secrets at the end."""
    bodies = []
    with kc.KeyCoreClient(live_server.url, make_key(), requesting_id="billing", timeout=10) as client:
        send = client._pool.request

        def recording(*args, **kwargs):
            response = send(*args, **kwargs)
            bodies.append(response.data)
            return response

        client._pool.request = recording
        yield client
    secrets = known_secrets()
    assert bodies
    for body in bodies:
        for secret in secrets:
            assert secret not in body, f"a secret leaked in a response: {body[:300]!r}"


def test_it_imports_without_django_configured():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = "import sys, keycore.client; assert 'django' not in sys.modules, 'django was imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_bytes_go_in_and_come_out_through_every_crypto_call(keycore):
    doc = keycore.encrypt("acme", {"iban": b"DE89 3704 0044 0532 0130 00", "blob": bytes(range(256))}, label="pay")
    assert isinstance(doc.edek, bytes) and doc.fields["iban"] != b"DE89 3704 0044 0532 0130 00"
    assert keycore.decrypt("acme", doc.edek, doc.fields) == {
        "iban": b"DE89 3704 0044 0532 0130 00",
        "blob": bytes(range(256)),
    }
    moved = keycore.rekey("acme", [doc.edek, b"garbage"], new_tenant="globex")
    assert isinstance(moved[0], bytes) and isinstance(moved[1], kc.MalformedData)
    assert keycore.decrypt("globex", moved[0], doc.fields)["iban"].startswith(b"DE89")

    sealed = keycore.batch_encrypt(
        [("acme", {"a": b"1"}), kc.Document("nobody", {"a": b"2"}), kc.Document("globex", {"a": b"3"}, label="x")]
    )
    assert isinstance(sealed[0], kc.EncryptedDocument) and isinstance(sealed[1], kc.TenantNotFound)
    opened = keycore.batch_decrypt(
        [("acme", sealed[0].edek, sealed[0].fields), kc.Document("acme", sealed[2].fields, edek=sealed[2].edek)]
    )
    assert opened[0] == {"a": b"1"} and isinstance(opened[1], kc.TamperedData)


def test_problems_become_the_matching_exceptions(keycore, live_server, make_key, tenant):
    with pytest.raises(kc.TenantNotFound) as caught:
        keycore.encrypt("nobody", {"a": b""})
    assert caught.value.status == 404 and caught.value.code == "tenant-not-found"
    with pytest.raises(kc.InvalidInput) as caught:
        keycore.encrypt("acme", {"a": b""}, requesting_id=" ", source_ip="not-an-ip")
    assert "source_ip" in caught.value.errors
    doc = keycore.encrypt("acme", {"a": b"x"})
    with pytest.raises(kc.TamperedData):
        keycore.decrypt("globex", doc.edek, doc.fields)
    with pytest.raises(kc.MalformedData):
        keycore.decrypt("acme", b"\x00" * 10, {})
    kms_config_revoke(config=KmsConfig.objects.get(tenant=tenant, is_primary=True), actor=Actor.system("tests"))
    revoked = None
    for _ in range(40):  # the revocation reaches the server within its poll interval
        try:
            keycore.encrypt("acme", {"a": b"x"})
        except kc.KeyRevoked as exc:
            revoked = exc
            break
        time.sleep(0.1)
    assert revoked is not None and revoked.status == 409 and isinstance(revoked, kc.KeyUnavailable)
    with kc.KeyCoreClient(live_server.url, "kc_000000000000_nope") as stranger, pytest.raises(kc.AuthenticationFailed):
        stranger.tenant("acme")
    with kc.KeyCoreClient(live_server.url, make_key(["crypto"])) as narrow, pytest.raises(kc.PermissionDenied):
        narrow.tenant("acme")


def test_the_vendor_bridge_calls(keycore):
    created = keycore.create_tenant("initech", "Initech", admins=["it@initech.example"])
    assert created["external_id"] == "initech"
    assert keycore.tenant("initech")["name"] == "Initech"
    assert keycore.update_tenant("initech", name="Initech Inc.")["name"] == "Initech Inc."
    assert {t["external_id"] for t in keycore.tenants()} == {"acme", "globex", "initech"}
    assert [t["external_id"] for t in keycore.tenants(q="ini")] == ["initech"]
    bulk = keycore.bulk_create_tenants([{"external_id": "b1", "name": "B1"}, {"external_id": "initech", "name": "Dup"}])
    assert (bulk["created"], bulk["failed"]) == (1, 1)
    assert keycore.suspend_tenant("b1", reason="test")["status"] == "suspended"
    assert keycore.reactivate_tenant("b1")["status"] == "active"
    assert keycore.offboard_tenant("b1")["status"] == "offboarding"
    with pytest.raises(kc.Conflict):
        keycore.suspend_tenant("b1")

    [invitation] = list(keycore.invitations("initech"))
    assert keycore.resend_invitation("initech", invitation["uid"])["state"] == "pending"
    assert keycore.revoke_invitation("initech", invitation["uid"])["state"] == "revoked"
    assert keycore.invite("initech", "sec@initech.example", "admin")["role"] == "admin"

    config = keycore.create_kms_config("initech", "local", name="Second key")
    assert "secrets" not in config and config["secret_fields_set"] == ["kek"]
    assert [c["name"] for c in keycore.kms_configs("initech")] == ["Vendor-provided key", "Second key"]
    assert keycore.kms_config("initech", config["uid"])["uid"] == config["uid"]
    job = keycore.make_primary("initech", config["uid"])
    assert job["target_config"] == config["uid"]
    assert keycore.rekey_job(job["uid"])["uid"] == job["uid"]
    third = keycore.create_kms_config("initech", "local", name="Third key")
    assert keycore.decrypt_only("initech", third["uid"])["state"] == "decrypt_only"
    assert any(j["uid"] == job["uid"] for j in keycore.rekey_jobs(tenant="initech"))
    started = keycore.start_rekey_job("initech")
    assert keycore.cancel_rekey_job(started["uid"])["state"] == "cancelled"
    assert keycore.retry_rekey_job(started["uid"])["state"] == "pending"
    with pytest.raises(kc.Conflict):
        keycore.retire_kms_config("initech", config["uid"])  # the primary cannot be retired
    assert {"created", "made_primary", "decrypt_only"} <= {h["action"] for h in keycore.key_history("initech")}
    assert any(e["action"] == "tenant.created" for e in keycore.audit(tenant="initech"))
    keycore.encrypt("initech", {"a": b"x"})
    assert list(keycore.events("initech")) == []  # flushed by the server within a second, not yet


def test_lists_are_followed_page_by_page(keycore):
    from tests.factories import make_tenant

    for i in range(7):
        make_tenant(f"page-{i}", f"Page {i}")
    pages = []
    original = keycore._get

    def counting(path, **params):
        pages.append(params.get("cursor"))
        return original(path, **params)

    keycore._get = counting
    seen = [t["external_id"] for t in keycore.tenants(page_size=3)]
    assert len(seen) == len(set(seen)) == 9 and len(pages) == 3 and pages[0] is None


def test_creating_calls_are_retried_with_the_same_idempotency_key(keycore):
    first = keycore.create_tenant("retried", "Retried", idempotency_key="onboarding-42")
    again = keycore.create_tenant("retried", "Retried", idempotency_key="onboarding-42")
    assert again == first and Tenant.objects.filter(external_id="retried").count() == 1
    with pytest.raises(kc.IdempotencyKeyReused):
        keycore.create_tenant("other", "Other", idempotency_key="onboarding-42")


class _Flaky(http.server.BaseHTTPRequestHandler):
    """503 (with Retry-After) and 429 before a success; records what it saw."""

    protocol_version = "HTTP/1.1"
    plan: list[tuple[int, dict]] = []
    seen: list[tuple[str, str | None, int]] = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append((self.path, self.headers.get("Idempotency-Key"), self.client_address[1]))
        status, body = self.plan.pop(0)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status < 400 else "application/problem+json")
        if status in (429, 503):
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Flaky.seen = []
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _problem(code, status):
    return {"type": f"https://keycore.dev/problems/{code}", "title": code, "status": status, "detail": code}


@pytest.mark.django_db(transaction=False)
def test_it_retries_503_and_429_honouring_retry_after_and_keeps_the_connection(flaky):
    _server, url = flaky
    ok = {"edek": "AA==", "fields": {}}
    _Flaky.plan = [(503, _problem("kms-unreachable", 503)), (429, _problem("throttled", 429)), (200, ok)]
    with kc.KeyCoreClient(url, "kc_x_y", retries=3, backoff=0.01) as client:
        assert client.encrypt("acme", {}, requesting_id="t").edek == b"\x00"
        assert len(_Flaky.seen) == 3
        assert len({port for _, _, port in _Flaky.seen}) == 1  # one kept-alive connection for all three
        _Flaky.plan = [(503, _problem("kms-unreachable", 503))] * 3
        with pytest.raises(kc.KmsUnavailable) as caught:
            kc.KeyCoreClient(url, "kc_x_y", retries=2, backoff=0.01).encrypt("acme", {}, requesting_id="t")
        assert caught.value.retry_after == 0 and caught.value.code == "kms-unreachable"
        _Flaky.seen.clear()
        _Flaky.plan = [(503, _problem("kms-unreachable", 503)), (201, {"external_id": "x"})]
        client.create_tenant("x", "X")
        keys = [key for _, key, _ in _Flaky.seen]
        assert len(keys) == 2 and keys[0] == keys[1] and keys[0]  # one idempotency key across the retry
        _Flaky.seen.clear()
        _Flaky.plan = [(409, _problem("conflict", 409))]
        with pytest.raises(kc.Conflict):
            client.suspend_tenant("x")
        assert len(_Flaky.seen) == 1  # a plain conflict is not retried


@pytest.mark.django_db(transaction=False)
def test_a_server_that_is_down_is_a_transport_error(flaky):
    server, url = flaky
    server.shutdown()
    server.server_close()
    with kc.KeyCoreClient(url, "kc_x_y", retries=1, backoff=0.01) as client, pytest.raises(kc.TransportError):
        client.encrypt("acme", {}, requesting_id="t")
    assert "kc_x_y" not in repr(client)


def test_the_readme_example_runs_as_written(live_server, make_key, tenant):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python client") :]
    code = section[section.index("```python") + len("```python") : section.index("```", section.index("```python") + 3)]
    code = code.replace('"https://keys.example.com"', repr(live_server.url))
    exec(compile(code, "README.md", "exec"), {"api_key": make_key(["crypto"])})  # noqa: S102 - our own README
