"""Documents counted per tenant-key version are exact: 100,000 operations — encrypts one by one and in batches,
rekeys from an older version — in this process and two others, add up to the unit once every process flushed."""

from __future__ import annotations

import json
import subprocess
import sys
from base64 import b64encode

import pytest

from keycore.models import KeyUseEvent, TenantKey
from keycore.services import keyring, keys
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, EncryptItem, crypto_batch_encrypt
from keycore.services.keyuse import recorder
from keycore.services.tenants import tenant_create
from tests.workers import ROOT, process_env

WORKER = """
import base64, json, sys, django
django.setup()
from keycore.services.crypto import CallMeta, EncryptItem, crypto_batch_encrypt, crypto_encrypt, crypto_rekey
tenant, singles, batches, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
meta = CallMeta(requesting_id="counting", label="ledger")
for _ in range(singles):
    crypto_encrypt(tenant=tenant, fields={"f": b"x"}, meta=meta)
for _ in range(batches):
    results = crypto_batch_encrypt([EncryptItem(tenant, {"f": b"x"}, meta)] * 1000)
    assert all(r.ok for r in results)
edeks = [base64.b64decode(e) for e in json.load(open(path))]
for start in range(0, len(edeks), 1000):
    results = crypto_rekey(tenant=tenant, edeks=edeks[start : start + 1000], meta=meta)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:1]
print("done", flush=True)
"""


@pytest.mark.django_db(transaction=True)
def test_a_hundred_thousand_operations_in_three_processes_add_up_per_version(tmp_path):
    actor = Actor.system("tests")
    tenant = tenant_create(external_id="counted", name="Counted", actor=actor)
    meta = CallMeta(requesting_id="counting", label="ledger")
    old = []
    for _ in range(20):  # 20,000 documents under v1, in this process
        old += [r.value.edek for r in crypto_batch_encrypt([EncryptItem("counted", {"f": b"x"}, meta)] * 1000)]
    recorder.flush()
    keys.tenant_key_create(tenant=tenant, actor=actor)  # v2: new data goes there, and rekeys move data there
    keyring.clear_caches()
    halves = []
    for n, part in enumerate((old[:10_000], old[10_000:])):
        path = tmp_path / f"edeks-{n}.json"
        path.write_text(json.dumps([b64encode(e).decode() for e in part]))
        halves.append(path)
    # each: 15,000 single encrypts, 15 batches of 1,000, and 10,000 rekeys from v1 = 40,000 operations
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, "counted", "15000", "15", str(path)],
            cwd=ROOT,
            env=process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in halves
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "done" in out, err[-3000:]
    counts = dict(TenantKey.objects.filter(tenant=tenant).values_list("version", "documents"))
    assert counts == {1: 20_000 - 20_000, 2: 2 * 30_000 + 20_000}
    ok = KeyUseEvent.objects.filter(tenant=tenant, result="ok")
    recorded = {op: sum(ok.filter(operation=op).values_list("count", flat=True)) for op in ("encrypt", "rekey")}
    assert recorded == {"encrypt": 20_000 + 60_000, "rekey": 20_000}, "the 100,000 operations, each counted once"
