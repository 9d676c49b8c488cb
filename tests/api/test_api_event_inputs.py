"""The crypto API refuses, with a 400, what the security events could not store: a NUL or a lone
surrogate in the call's metadata, an EDEK naming a tenant-key version past 2³¹ − 1 — so no caller can
poison the key-use writer (tests/events/test_events_poison.py covers the writer itself)."""

from __future__ import annotations

import base64
import struct

import pytest
from django.db.models import Sum

from keycore import errors
from keycore.models import KeyUseEvent
from keycore.services.crypto import CallMeta
from keycore.services.events import chain_verify
from keycore.services.keyuse import recorder as process_recorder
from tests.events.test_events_poison import POISON

pytestmark = pytest.mark.django_db


@pytest.fixture
def recorder():
    process_recorder.reset()
    yield process_recorder
    process_recorder.reset()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def used(tenant) -> int:
    return KeyUseEvent.objects.for_tenant(tenant).aggregate(n=Sum("count"))["n"] or 0


def edek_claiming(version: int, edek: bytes) -> bytes:
    return edek[:2] + struct.pack(">I", version) + edek[6:]


@pytest.mark.parametrize("meta", POISON.values(), ids=POISON.keys())
def test_the_api_refuses_what_the_events_could_not_store(api, tenant, recorder, meta):
    field = next(name for name, value in meta.items() if value != "billing")
    stored = api.post("/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {"a": "AA=="}, "requesting_id": "svc"})
    calls = {
        "encrypt": ("/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {"a": "AA=="}, **meta}),
        "decrypt": ("/api/v1/crypto/decrypt", {"tenant": "acme", **stored.json, **meta}),
        "rekey": ("/api/v1/crypto/rekey", {"tenant": "acme", "edeks": [stored.json["edek"]], **meta}),
        "batch defaults": ("/api/v1/crypto/batch-encrypt", {"items": [{"tenant": "acme", "fields": {}}], **meta}),
    }
    for name, (path, body) in calls.items():
        answer = api.post(path, body)
        assert answer.status == 400, name
        assert answer.problem_type == "invalid-input" and field in answer.json["errors"], (name, answer.json)
    item = api.post("/api/v1/crypto/batch-decrypt", {"items": [{"tenant": "acme", **stored.json, **meta}]})
    assert item.status == 200 and item.json["results"][0]["error"]["status"] == 400
    recorder.flush()
    assert used(tenant) == 1, "only the first, clean encrypt was a use"


def test_the_crypto_service_refuses_them_too():
    for meta in POISON.values():
        with pytest.raises(errors.InvalidInput):
            CallMeta(**meta)


def test_an_edek_naming_a_key_version_past_the_columns_range_is_malformed(api, tenant, recorder):
    stored = api.post("/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {"a": "AA=="}, "requesting_id": "svc"})
    edek = base64.b64decode(stored.json["edek"])
    for version in (2**31, 2**32 - 1):
        forged = {"tenant": "acme", "edek": b64(edek_claiming(version, edek)), "fields": stored.json["fields"]}
        answer = api.post("/api/v1/crypto/decrypt", {**forged, "requesting_id": "svc"})
        assert answer.status == 400 and answer.problem_type == "malformed-data"
        rekeyed = api.post("/api/v1/crypto/rekey", {"tenant": "acme", "edeks": [forged["edek"]], "requesting_id": "s"})
        assert rekeyed.status == 200 and rekeyed.json["errors"][0]["type"].endswith("/malformed-data")
    recorder.flush()
    refused = KeyUseEvent.objects.for_tenant(tenant).filter(result="malformed-data")
    assert refused.aggregate(n=Sum("count"))["n"] == 4
    assert set(refused.values_list("key_version", flat=True)) == {None}
    assert recorder.pending() == 0 and chain_verify(tenant.pk).ok


def test_a_poisoned_call_then_1000_normal_ones_all_1000_recorded(api, tenant, recorder):
    rejected_before = recorder.rejected_uses
    poisoned = api.post(
        "/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {"a": "AA=="}, "requesting_id": "x\u0000"}
    )
    assert poisoned.status == 400
    for _ in range(1000):
        answer = api.post("/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {"a": "AA=="}, "requesting_id": "svc"})
        assert answer.status == 200
    recorder.flush()
    assert used(tenant) == 1000
    assert recorder.pending() == 0 and recorder.rejected_uses == rejected_before
