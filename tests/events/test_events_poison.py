"""One bad value never silences a process's security events.

What the database cannot store (a NUL, a lone surrogate, a key version past 2³¹ − 1) is refused
where a call comes in — the REST API and the crypto service — with a 400; and should a bad row
reach the writer anyway (an in-process reporter), the writer isolates it: the rest is written,
that row is logged, counted and dropped, and nothing is retried for ever.
"""

from __future__ import annotations

import base64
import logging
import struct

import pytest
from django.db.models import Sum

from keycore.models import KeyUseEvent
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.events import chain_verify
from keycore.services.keyuse import record_reported

pytestmark = pytest.mark.django_db

POISON = {
    "a NUL in requesting_id": {"requesting_id": "billing\u0000"},
    "a lone surrogate in requesting_id": {"requesting_id": "billing\ud800"},
    "a NUL in label": {"requesting_id": "billing", "label": "x\u0000"},
    "a lone surrogate in label": {"requesting_id": "billing", "label": "\udfff-invoices"},
    "a NUL in object_id": {"requesting_id": "billing", "object_id": "doc\u0000"},
    "a lone surrogate in request_id": {"requesting_id": "billing", "request_id": "\ud83d"},
    "a NUL in a custom value": {"requesting_id": "billing", "custom": {"region": "eu\u0000"}},
    "a lone surrogate in a custom name": {"requesting_id": "billing", "custom": {"\ud800": "x"}},
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def used(tenant) -> int:
    return KeyUseEvent.objects.for_tenant(tenant).aggregate(n=Sum("count"))["n"] or 0


def edek_claiming(version: int, edek: bytes) -> bytes:
    return edek[:2] + struct.pack(">I", version) + edek[6:]


BAD_ROWS = {
    "a lone surrogate label": {"label": "\ud800"},
    "a NUL requesting id": {"requesting_id": "x\u0000"},
    "a key version past 2**31 - 1": {"key_version": 2**31},
}


@pytest.mark.parametrize("bad", BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_a_bad_row_that_reaches_the_writer_is_isolated_and_never_retried(tenant, recorder, bad, caplog):
    """A reported use (the in-process path the edge cannot see) with a value the database may refuse,
    then 1,000 real crypto calls: the 1,000 are written, the bad one is written or dropped and counted —
    and the next flush has nothing left to retry."""
    rejected_before = recorder.rejected_uses
    record_reported(
        tenant_id=tenant.pk,
        operation="decrypt",
        result="ok",
        count=1,
        api_key=None,
        peer_ip="192.0.2.9",
        **{"requesting_id": "sdk", "key_version": 1, **bad},
    )
    meta = CallMeta(requesting_id="billing", label="invoices")
    for _ in range(1000):
        crypto_encrypt(tenant="acme", fields={"f": b"x"}, meta=meta)
    with caplog.at_level(logging.ERROR, logger="keycore.services.keyuse"):
        written = recorder.flush()
    assert KeyUseEvent.objects.for_tenant(tenant).filter(requesting_id="billing").aggregate(n=Sum("count"))["n"] == 1000
    dropped = recorder.rejected_uses - rejected_before
    assert written + dropped == 1001
    assert dropped == (1 if caplog.records else 0), "a dropped row is logged, and only then"
    assert recorder.pending() == 0 and recorder.flush() == 0, "nothing is kept to fail again"
    assert chain_verify(tenant.pk).ok
    if "key_version" in bad:
        assert written == 1001 and dropped == 0, "an impossible version is recorded as unknown, the use counted"


def test_a_refused_row_leaves_the_other_tenants_rows_written(tenant, other_tenant, recorder):
    rejected_before = recorder.rejected_uses
    record_reported(
        tenant_id=tenant.pk, operation="decrypt", result="ok", count=2, api_key=None, peer_ip="", label="\udcff"
    )
    for who in ("acme", "globex"):
        crypto_decrypt(
            tenant=who,
            **vars_of(crypto_encrypt(tenant=who, fields={"f": b"x"}, meta=CallMeta(requesting_id="a"))),
            meta=CallMeta(requesting_id="a"),
        )
    recorder.flush()
    assert used(other_tenant) == 2 and used(tenant) == 2
    assert recorder.rejected_uses - rejected_before == 2


def vars_of(encrypted) -> dict:
    return {"edek": encrypted.edek, "fields": encrypted.fields}
