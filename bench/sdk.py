"""The in-process SDK against the AES-GCM floor, the AWS Encryption SDK and KeyCore's REST single call.

    python -m bench.sdk [--seconds 0.5] [--rounds 9] [--size 1024] [--json]

One run, one machine, all in this process except the KeyCore server (gunicorn, 2 workers x 4
threads, on a scratch SQLite database made by ``bench.api.prepare``):

floor / esdk
    As in :mod:`bench.crypto`: the least an envelope can do, and the AWS Encryption SDK's fastest
    cached configuration.
sdk
    :class:`keycore.sdk.KeyCoreSDK` with a warm lease: ``encrypt("bench", {"body": 1 KiB})`` and
    ``decrypt``; its epoch poll (1 s) and use reports (1 s) run against the real server meanwhile.
sdk-unreported
    The same with counting switched off (no use recorded, no reports): the reporting overhead is
    the ratio of the two.

Then, against the same server: the REST single call (``POST /crypto/encrypt``, 1 KiB, one kept-alive
connection, sequential), deterministic encryption of a 64-byte value in the SDK, and the latency of
a lease fetch (``POST /crypto/leases``: every check, the epoch read now, an audit event) and of a
lease re-derivation (``POST /crypto/leases/derive``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.api import Client, free_port, percentile, prepare, start_gunicorn, stop
from bench.crypto import Figures, Workload, _median, _median_ratio, esdk_workload, floor_workload, measure


class _NoCount:
    """Stands in for the SDK's use queue when counting is off."""

    @staticmethod
    def append(_item) -> None:
        return None

    def __len__(self) -> int:
        return 0


def sdk_workload(sdk, name: str) -> Workload:
    encrypt_doc, decrypt_doc = sdk.encrypt, sdk.decrypt

    def encrypt(plaintext: bytes):
        return encrypt_doc("bench", {"body": plaintext})

    def decrypt(doc) -> bytes:
        return decrypt_doc("bench", doc.edek, doc.fields)["body"]

    decrypt(encrypt(b"warm the lease"))
    return Workload(name, encrypt, decrypt)


def rest_single(port: int, key: str, size: int, requests: int) -> dict[str, float]:
    body = json.dumps(
        {"tenant": "bench", "fields": {"body": base64.b64encode(os.urandom(size)).decode()}, "requesting_id": "bench"}
    ).encode()
    client = Client(port, key)
    for _ in range(200):
        client.post("/api/v1/crypto/encrypt", body)
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        client.post("/api/v1/crypto/encrypt", body)
        timings.append(time.perf_counter() - started)
    client.close()
    timings.sort()
    return {
        "per_s": requests / sum(timings),
        "p50_ms": percentile(timings, 50) * 1000,
        "p95_ms": percentile(timings, 95) * 1000,
    }


def deterministic_rate(sdk, *, seconds: float, rounds: int) -> float:
    value = os.urandom(64)
    encrypt = sdk.encrypt_deterministic
    encrypt("bench", "email", value)
    rates = []
    for _ in range(rounds):
        count = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            for _ in range(1000):
                encrypt("bench", "email", value)
            count += 1000
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def lease_latency(sdk, count: int) -> dict[str, float]:
    fetch, derive = [], []
    for _ in range(count):
        started = time.perf_counter()
        answer = sdk._client.lease("bench", process="bench lease latency")
        fetch.append(time.perf_counter() - started)
        lease_id = base64.b64decode(answer["lease_id"])
        started = time.perf_counter()
        sdk._client.lease_derive("bench", answer["key_version"], lease_id, process="bench lease latency")
        derive.append(time.perf_counter() - started)
    fetch.sort()
    derive.sort()
    return {
        "fetch_p50_ms": percentile(fetch, 50) * 1000,
        "fetch_p95_ms": percentile(fetch, 95) * 1000,
        "derive_p50_ms": percentile(derive, 50) * 1000,
        "derive_p95_ms": percentile(derive, 95) * 1000,
        "count": count,
    }


def run(*, size: int = 1024, seconds: float = 0.5, rounds: int = 9, rest_requests: int = 2000) -> dict[str, Any]:
    from keycore.sdk import KeyCoreSDK

    folder = Path(tempfile.mkdtemp(prefix="keycore-bench-sdk-"))
    raw, env = prepare(folder)
    port = free_port()
    server = start_gunicorn(env, port, workers=2, threads=4, worker_class="gthread")
    base = f"http://127.0.0.1:{port}"
    try:
        reported = KeyCoreSDK(base, raw, requesting_id="bench", report_interval=1.0, poll_interval=1.0, timeout=60)
        unreported = KeyCoreSDK(base, raw, requesting_id="bench", report_interval=3600, poll_interval=1.0, timeout=60)
        unreported._uses = _NoCount()
        workloads = [
            floor_workload(),
            esdk_workload(),
            sdk_workload(reported, "sdk"),
            sdk_workload(unreported, "sdk-unreported"),
        ]
        payload = os.urandom(size)
        samples = measure(workloads, payload, seconds=seconds, rounds=rounds)
        figures: dict[str, Figures] = {name: _median(s) for name, s in samples.items()}
        reported.report()
        rest = rest_single(port, raw, size, rest_requests)
        det = deterministic_rate(reported, seconds=seconds, rounds=rounds)
        leases = lease_latency(reported, 200)
        reported.close()
        unreported.close()
    finally:
        stop(server)
    sdk = figures["sdk"]
    return {
        "size": size,
        "rounds": rounds,
        "python": platform.python_version(),
        "per_s": {name: {"encrypt": f.encrypt_per_s, "decrypt": f.decrypt_per_s} for name, f in figures.items()},
        "sdk_over_esdk": _median_ratio(samples["sdk"], samples["esdk"]),
        "sdk_over_floor": _median_ratio(samples["sdk"], samples["floor"]),
        "reported_over_unreported": _median_ratio(samples["sdk"], samples["sdk-unreported"]),
        "rest_single": rest,
        "sdk_over_rest": {"encrypt": sdk.encrypt_per_s / rest["per_s"]},
        "deterministic_64b_per_s": det,
        "leases": leases,
    }


def _print(result: dict[str, Any]) -> None:
    per_s = result["per_s"]
    print(f"1 KiB single-field documents, {result['rounds']} rounds, Python {result['python']}")
    print(f"{'workload':<16}{'encrypt/s':>12}{'decrypt/s':>12}")
    for name, f in per_s.items():
        print(f"{name:<16}{f['encrypt']:>12,.0f}{f['decrypt']:>12,.0f}")
    rest = result["rest_single"]
    print(
        f"{'REST single':<16}{rest['per_s']:>12,.0f}{'':>12}   p50 {rest['p50_ms']:.2f} ms, p95 {rest['p95_ms']:.2f} ms"
    )
    for label, key in (
        ("SDK / ESDK", "sdk_over_esdk"),
        ("SDK / floor", "sdk_over_floor"),
        ("reported / unreported", "reported_over_unreported"),
    ):
        r = result[key]
        print(f"{label:<24} encrypt {r['encrypt']:.2f}  decrypt {r['decrypt']:.2f}")
    print(f"SDK encrypt / REST single call: {result['sdk_over_rest']['encrypt']:.0f}x")
    print(f"deterministic encrypt, 64 bytes: {result['deterministic_64b_per_s']:,.0f}/s")
    leases = result["leases"]
    print(
        f"lease fetch p50 {leases['fetch_p50_ms']:.2f} ms, p95 {leases['fetch_p95_ms']:.2f} ms; "
        f"re-derive p50 {leases['derive_p50_ms']:.2f} ms, p95 {leases['derive_p95_ms']:.2f} ms ({leases['count']} each)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rest-requests", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(size=args.size, seconds=args.seconds, rounds=args.rounds, rest_requests=args.rest_requests)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
