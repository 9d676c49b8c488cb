"""An application process using the SDK, for tests/sdk/test_sdk_live.py (run as a script, no Django).

    python tests/sdk/sdk_worker.py BASE_URL API_KEY TENANT

Encrypts and decrypts a document in a loop and prints one JSON line per change of state
(``{"t": wall time, "ok": true}`` once, then ``{"t", "ok": false, "error": code, "detail"}`` at the
first refusal, ``{"t", "lease_expires": wall time}`` whenever it takes a new lease), and at the end
(stdin closed, or SIGTERM) the totals of what succeeded.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

from keycore.sdk import KeyCoreAPIError, KeyCoreSDK


def main() -> int:
    base, api_key, tenant = sys.argv[1:4]
    assert not [m for m in sys.modules if m.startswith("django")], "the SDK must not import Django"
    sdk = KeyCoreSDK(base, api_key, requesting_id="live-test", process=f"sdk-worker {threading.get_native_id()}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

    def say(**what) -> None:
        print(json.dumps({"t": time.time(), **what}), flush=True)

    totals = {"encrypt": 0, "decrypt": 0, "refused": 0}
    state = None
    last_refusal_said = 0.0
    lease_seen = None
    while not stop.is_set():
        try:
            doc = sdk.encrypt(tenant, {"body": b"x" * 100}, label="live")
            totals["encrypt"] += 1
            assert sdk.decrypt(tenant, doc.edek, doc.fields, label="live") == {"body": b"x" * 100}
            totals["decrypt"] += 1
            if state != "ok":
                state = "ok"
                say(ok=True)
        except KeyCoreAPIError as exc:
            totals["refused"] += 1
            now = time.time()
            if state != exc.code or now - last_refusal_said >= 0.2:  # a refusal at least every 0.2 s while refused
                state = exc.code
                last_refusal_said = now
                say(ok=False, error=exc.code, kind=type(exc).__name__, detail=exc.detail[:300])
        lease = sdk._leases.get(tenant)
        if lease is not None and lease is not lease_seen:
            lease_seen = lease
            say(lease_expires=time.time() + (lease.expires - time.monotonic()))
        time.sleep(0.01)
    sdk.close()  # reports what is left
    say(totals=totals, reports_failed=sdk.reports_failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
