"""The Python SDK: the documented vectors, the same format both ways with the REST API and the server's
service, rekey, deterministic values and search terms, revocation and fail-closed expiry.

The server is pytest-django's live server (a thread of this process, real HTTP); the test with separate
server and SDK processes is tests/sdk/test_sdk_live.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keycore import client as kc
from keycore.crypto.envelope import DeterministicKey, LeaseKey, _wrap_dek_v1, encrypt_document
from keycore.crypto.formats import parse_edek
from keycore.models import KeyUseEvent, KmsConfig, TenantKey
from keycore.sdk import KeyCoreSDK
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.keyring import clear_caches, unwrap_tenant_key
from keycore.services.keys import kms_config_revoke, tenant_key_create
from keycore.services.keyuse import recorder

VECTORS = Path(__file__).resolve().parent.parent / "crypto" / "vectors"
ROOT = Path(__file__).resolve().parent.parent.parent


def vectors(name: str) -> list[dict]:
    return json.loads((VECTORS / f"{name}.json").read_text())["cases"]


# -- the vectors, with the SDK's own pieces (no server) ----------------------------------------------


@pytest.mark.parametrize("case", vectors("edek_v2"), ids=[c["description"] for c in vectors("edek_v2")])
def test_the_sdk_opens_the_documented_edek_vectors_with_the_lease_key_alone(case):
    from keycore.crypto.envelope import decrypt_with_lease

    lease = LeaseKey(
        bytes.fromhex(case["tenant_uid"]),
        case["key_version"],
        bytes.fromhex(case["lease_id"]),
        bytes.fromhex(case["lease_key"]),
    )
    fields = {n: bytes.fromhex(f["ciphertext"]) for n, f in case["fields"].items()}
    assert decrypt_with_lease(lease, bytes.fromhex(case["edek"]), fields) == {
        n: bytes.fromhex(f["plaintext"]) for n, f in case["fields"].items()
    }


@pytest.mark.parametrize(
    "case", vectors("deterministic_v1"), ids=[c["description"] for c in vectors("deterministic_v1")]
)
def test_the_sdk_gives_the_documented_deterministic_bytes(case):
    det = DeterministicKey(
        bytes.fromhex(case["tenant_uid"]), case["key_version"], bytes.fromhex(case["deterministic_base"])
    )
    assert det.encrypt(case["field"], bytes.fromhex(case["plaintext"])).hex() == case["ciphertext"]


def test_the_sdk_imports_without_django():
    code = "import sys, keycore.sdk; assert not [m for m in sys.modules if m.startswith(('django', 'rest_framework'))]"
    subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    )


# -- against a live server ---------------------------------------------------------------------------------


@pytest.fixture
def sdk(live_server, make_key, tenant, other_tenant):
    with KeyCoreSDK(
        live_server.url, make_key(["crypto"]), requesting_id="billing", poll_interval=0.2, report_interval=3600
    ) as sdk:
        yield sdk


@pytest.fixture
def rest(live_server, make_key):
    with kc.KeyCoreClient(live_server.url, make_key(["crypto"]), requesting_id="billing") as client:
        yield client


pytestmark = pytest.mark.django_db(transaction=True)
META = CallMeta("tests")


def test_same_format_both_ways_sdk_rest_and_service(sdk, rest, tenant):
    doc = sdk.encrypt("acme", {"ssn": b"123-45-6789"}, label="customers")
    assert parse_edek(doc.edek).format_version == 2
    assert rest.decrypt("acme", doc.edek, doc.fields) == {"ssn": b"123-45-6789"}
    assert crypto_decrypt(tenant="acme", edek=doc.edek, fields=doc.fields, meta=META) == {"ssn": b"123-45-6789"}
    by_rest = rest.encrypt("acme", {"a": b"via REST"})
    assert sdk.decrypt("acme", by_rest.edek, by_rest.fields) == {"a": b"via REST"}
    by_service = crypto_encrypt(tenant="acme", fields={"b": b"in KeyCore"}, meta=META)
    assert sdk.decrypt("acme", by_service.edek, by_service.fields) == {"b": b"in KeyCore"}


def test_an_old_v1_document_is_decrypted_through_keycore(sdk, tenant):
    handle = unwrap_tenant_key(tenant, 1)
    edek, fields = encrypt_document(handle, {"x": b"old"})
    from keycore.crypto.envelope import _unwrap_dek

    _, dek = _unwrap_dek(handle, edek)
    v1 = _wrap_dek_v1(handle, parse_edek(edek).document_id, dek, bytes(12))
    assert sdk.decrypt("acme", v1, fields) == {"x": b"old"}


def test_errors_are_the_rest_clients(sdk, tenant, other_tenant):
    doc = sdk.encrypt("acme", {"a": b"x"})
    with pytest.raises(kc.TamperedData):
        sdk.decrypt("acme", doc.edek, {"a": doc.fields["a"][:-1] + b"\x00"})
    with pytest.raises(kc.TamperedData):
        sdk.decrypt("globex", doc.edek, doc.fields)  # another tenant's lease of that id cannot open it
    with pytest.raises(kc.MalformedData):
        sdk.decrypt("acme", b"\xed\x09" + doc.edek[2:], doc.fields)
    with pytest.raises(kc.TenantNotFound):
        sdk.encrypt("nobody", {"a": b"x"})


def test_a_limited_key_gets_no_lease_of_another_tenant(live_server, make_key, tenant, other_tenant):
    with KeyCoreSDK(live_server.url, make_key(["crypto"], tenants=[tenant]), report_interval=3600) as limited:
        limited.encrypt("acme", {"a": b"x"})
        with pytest.raises(kc.TenantNotFound):
            limited.encrypt("globex", {"a": b"x"})


def test_rekey_through_keycore_moves_sdk_documents_and_the_counts(sdk, tenant, actor):
    docs = [sdk.encrypt("acme", {"a": bytes([i])}) for i in range(3)]
    sdk.report()
    recorder.flush()
    assert TenantKey.objects.get(tenant=tenant, version=1).documents == 3
    tenant_key_create(tenant=tenant, actor=actor)
    clear_caches()
    moved = sdk.rekey("acme", [d.edek for d in docs])
    assert all(isinstance(m, bytes) and parse_edek(m).key_version == 2 for m in moved)
    for i, (doc, edek) in enumerate(zip(docs, moved, strict=True)):
        assert sdk.decrypt("acme", edek, doc.fields) == {"a": bytes([i])}
    recorder.flush()
    assert TenantKey.objects.get(tenant=tenant, version=1).documents == 0
    assert TenantKey.objects.get(tenant=tenant, version=2).documents == 3


def test_deterministic_values_and_search_terms_match_the_rest_api(sdk, rest, tenant, actor):
    mine = sdk.encrypt_deterministic("acme", "email", b"ada@example.com")
    assert mine == rest.encrypt_deterministic("acme", "email", b"ada@example.com")
    assert sdk.decrypt_deterministic("acme", "email", mine) == b"ada@example.com"
    assert sdk.search_terms("acme", "email", b"ada@example.com") == [mine]
    sdk.report()
    recorder.flush()
    tenant_key_create(tenant=tenant, actor=actor)  # a rotation: v1 still holds the value
    clear_caches()
    sdk.drop_leases()
    terms = sdk.search_terms("acme", "email", b"ada@example.com")
    assert terms == rest.search_terms("acme", "email", b"ada@example.com")
    assert len(terms) == 2 and terms[1] == mine
    newer = sdk.rekey_deterministic("acme", "email", mine)
    assert newer == terms[0]


def test_uses_are_reported_as_the_tenants_key_use_events(sdk, tenant):
    for _ in range(5):
        doc = sdk.encrypt("acme", {"a": b"x"}, label="invoices", requesting_id="billing-7")
        sdk.decrypt("acme", doc.edek, doc.fields, label="invoices", requesting_id="billing-7")
    assert sdk.report() == 10
    recorder.flush()
    rows = KeyUseEvent.objects.filter(tenant=tenant, label="invoices", requesting_id="billing-7")
    assert {(r.operation, r.count) for r in rows} == {("encrypt", 5), ("decrypt", 5)}
    assert all(r.api_key_prefix and r.peer_ip == "127.0.0.1" for r in rows)


def test_reports_wait_for_an_unreachable_keycore_and_lose_nothing(make_key, live_server, tenant):
    with KeyCoreSDK(live_server.url, make_key(["crypto"]), report_interval=3600, retries=0) as sdk:
        sdk.encrypt("acme", {"a": b"x"})
        real = sdk._client.base_url
        sdk._client.base_url = "http://127.0.0.1:9"  # nothing listens there
        with pytest.raises(kc.TransportError):
            sdk.report()
        assert sdk.pending_uses() == 1
        sdk._client.base_url = real
        assert sdk.report() == 1 and sdk.pending_uses() == 0


def test_a_revocation_drops_the_lease_at_the_next_poll(sdk, tenant):
    doc = sdk.encrypt("acme", {"a": b"x"})
    primary = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    kms_config_revoke(config=primary, actor=Actor.system("tenant-portal"))
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        try:
            sdk.decrypt("acme", doc.edek, doc.fields)
        except kc.KeyRevoked:
            break
        time.sleep(0.02)
    else:
        pytest.fail("the SDK still decrypted 2 s after the revocation")
    with pytest.raises(kc.KeyRevoked):
        sdk.encrypt("acme", {"a": b"x"})


def test_an_expired_lease_with_keycore_unreachable_fails_closed(make_key, live_server, tenant):
    with KeyCoreSDK(live_server.url, make_key(["crypto"]), report_interval=3600, retries=0, lease_margin=0) as sdk:
        doc = sdk.encrypt("acme", {"a": b"x"})
        sdk._client.base_url = "http://127.0.0.1:9"
        assert sdk.decrypt("acme", doc.edek, doc.fields) == {"a": b"x"}  # the lease is still valid
        for lease in list(sdk._leases.values()) + list(sdk._known.values()):
            lease.expires = time.monotonic() - 0.001  # as if its time ran out
        with pytest.raises(kc.LeaseUnavailable, match="could not be reached"):
            sdk.decrypt("acme", doc.edek, doc.fields)
        with pytest.raises(kc.LeaseUnavailable):
            sdk.encrypt("acme", {"a": b"x"})


def test_the_sdk_takes_a_new_lease_before_a_lease_key_wraps_too_many_deks(sdk, tenant, monkeypatch):
    from keycore.models import AuditEvent

    monkeypatch.setattr(LeaseKey, "max_wraps", 2)  # 2^24 in production
    docs = [sdk.encrypt("acme", {"a": bytes([i])}) for i in range(5)]
    leases = [parse_edek(d.edek) and d.edek[6:22] for d in docs]
    uses = [leases.count(lease) for lease in dict.fromkeys(leases)]
    assert max(uses) <= 2 and len(uses) >= 3  # never more than the maximum under one lease key
    # each a lease of its own on the tenant's trail (an epoch change meanwhile may add one)
    assert AuditEvent.objects.filter(tenant=tenant, action="sdk.lease_issued").count() >= len(uses)
    for i, doc in enumerate(docs):
        assert sdk.decrypt("acme", doc.edek, doc.fields) == {"a": bytes([i])}


def test_the_readme_sdk_example_runs_as_written(live_server, make_key, tenant):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("from keycore.sdk import KeyCoreSDK") :]
    code = section[: section.index("```")].replace('"https://keys.example.com"', repr(live_server.url))
    scope: dict = {"api_key": make_key(["crypto"])}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert scope["kc"].decrypt("acme", scope["doc"].edek, scope["doc"].fields)["iban"].startswith(b"DE89")
    scope["kc"].close()
