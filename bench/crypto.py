"""Crypto throughput: KeyCore against the raw AES-GCM floor and the AWS Encryption SDK.

    python -m bench.crypto [--seconds 0.5] [--rounds 9] [--size 1024] [--events on|off|both] [--detailed both]
                           [--json]

Documents per second for encrypting and decrypting single-field documents of
``--size`` bytes, in one process, for three workloads:

floor
    The least work an envelope can do: a fresh DEK, one AES-GCM field, the DEK
    wrapped by AES-GCM under a fixed key, in a bare loop. Nothing can beat it.
esdk
    The AWS Encryption SDK for Python with a raw AES master key behind its caching
    materials manager (the data key is reused while cached, as the SDK recommends
    for throughput), on AES_256_GCM_IV12_TAG16_HKDF_SHA256: unsigned, and the
    fastest suite the caching manager will cache (the suite without a KDF is never
    cached; the committing suite adds an HKDF-SHA512 and a commitment per message).
keycore
    :func:`keycore_encrypt_decrypt`: what a KeyCore caller pays per document.

Rounds interleave the workloads so background load hits all three alike; each
rate is the median over rounds, each ratio the median of the per-round ratios.
The garbage collector is off while a loop is timed, as ``timeit`` does.

``--events`` switches KeyCore's key-use recording (security events) on (the
default, as deployed) or off; ``--events both`` measures KeyCore with recording
on and off in interleaved rounds and prints both and the slowdown (issue 9's
target: at most 10 %). With recording on, the recorder's flusher thread writes
the counts to the database every second during the measurement, as in production.

``--detailed both`` measures KeyCore with recording on, the tenant in counts-only
mode and in *detailed* mode (each operation recorded with its object id and
request id), in interleaved rounds (issue 19's target: at most 25 % slower with
detailed mode on). The writer thread writes during the rounds; each round ends
by writing what is left, and that CPU is counted in "CPU per operation".
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import cryptography
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


@dataclass(frozen=True)
class Workload:
    """Encrypt one document's plaintext into its stored form, and back.

    ``setup`` runs before each timed round, untimed (e.g. switching event recording on or off).
    """

    name: str
    encrypt: Callable[[bytes], Any]
    decrypt: Callable[[Any], bytes]
    setup: Callable[[], None] | None = None


@dataclass(frozen=True)
class Figures:
    encrypt_per_s: float
    decrypt_per_s: float


# -- (a) the floor ---------------------------------------------------------------------------


def floor_workload() -> Workload:
    kek = AESGCM(os.urandom(32))
    urandom = os.urandom

    def encrypt(plaintext: bytes) -> tuple[bytes, bytes]:
        rnd = urandom(56)
        dek, field_nonce, wrap_nonce = rnd[:32], rnd[32:44], rnd[44:]
        return wrap_nonce + kek.encrypt(wrap_nonce, dek, None), field_nonce + AESGCM(dek).encrypt(
            field_nonce, plaintext, None
        )

    def decrypt(stored: tuple[bytes, bytes]) -> bytes:
        edek, field = stored
        dek = kek.decrypt(edek[:12], edek[12:], None)
        return AESGCM(dek).decrypt(field[:12], field[12:], None)

    return Workload("floor", encrypt, decrypt)


# -- (b) the AWS Encryption SDK --------------------------------------------------------------


def esdk_workload() -> Workload:
    import aws_encryption_sdk
    from aws_encryption_sdk import CachingCryptoMaterialsManager, CommitmentPolicy, LocalCryptoMaterialsCache
    from aws_encryption_sdk.identifiers import Algorithm, EncryptionKeyType, WrappingAlgorithm
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
    from aws_encryption_sdk.key_providers.raw import RawMasterKey

    # aws-encryption-sdk 4.x takes raw AES keyrings from the Material Providers Library
    # when it is installed; without it (as here) the raw master key and the caching
    # materials manager of the SDK itself are the supported path, with the same wire format.
    master_key = RawMasterKey(
        provider_id="keycore-bench",
        key_id=b"bench-wrapping-key",
        wrapping_key=WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=os.urandom(32),
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        ),
    )
    materials = CachingCryptoMaterialsManager(
        master_key_provider=master_key, cache=LocalCryptoMaterialsCache(capacity=1000), max_age=300.0
    )
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT)
    suite = Algorithm.AES_256_GCM_IV12_TAG16_HKDF_SHA256
    context = {"tenant": str(uuid.uuid4())}  # bound like KeyCore binds the tenant

    def encrypt(plaintext: bytes) -> bytes:
        ciphertext, _ = client.encrypt(
            source=plaintext, materials_manager=materials, algorithm=suite, encryption_context=context
        )
        return ciphertext

    def decrypt(stored: bytes) -> bytes:
        plaintext, _ = client.decrypt(source=stored, materials_manager=materials)
        return plaintext

    return Workload("esdk", encrypt, decrypt)


# -- (c) KeyCore -----------------------------------------------------------------------------


def keycore_encrypt_decrypt() -> Workload:
    """KeyCore as the vendor's application sees it, per document, in process.

    Through :mod:`keycore.services.crypto`: the tenant resolved by its external id
    (cached), its tenant key from the warm key cache (with the revocation epoch
    polled from the database, as in production), the envelope crypto, and the
    key-use event counted by the recorder that flushes to the database every second.
    """
    from bench.django_env import setup_django

    setup_django()
    from keycore.services.audit import Actor
    from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
    from keycore.services.tenants import tenant_create

    tenant = tenant_create(external_id=f"bench-{uuid.uuid4().hex[:8]}", name="Benchmark", actor=Actor.system("bench"))
    external_id = tenant.external_id
    meta = CallMeta(requesting_id="bench-service", label="documents", source_ip="127.0.0.1")

    def encrypt(plaintext: bytes):
        return crypto_encrypt(tenant=external_id, fields={"body": plaintext}, meta=meta)

    def decrypt(stored) -> bytes:
        return crypto_decrypt(tenant=external_id, edek=stored.edek, fields=stored.fields, meta=meta)["body"]

    decrypt(encrypt(b"warm the caches"))
    return Workload("keycore", encrypt, decrypt)


# -- measuring -------------------------------------------------------------------------------


#: per workload: process CPU seconds (every thread: the key-use cutter and writer too) and documents,
#: summed over timed rounds — a cost measure that load from other processes does not move
CPU_TOTALS: dict[str, list[float]] = {}
#: per workload: what to run after each timed round, inside the CPU measurement (writing what is left)
DRAIN_AFTER_ROUND: dict[str, Callable[[], Any]] = {}


def _timed_round(workload: Workload, payload: bytes, count: int) -> Figures:
    encrypt, decrypt = workload.encrypt, workload.decrypt
    if workload.setup is not None:
        workload.setup()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        cpu_started = time.process_time()
        started = time.perf_counter()
        stored = [encrypt(payload) for _ in range(count)]
        encrypted = time.perf_counter()
        for item in stored:
            decrypt(item)
        decrypted = time.perf_counter()
        drain = DRAIN_AFTER_ROUND.get(workload.name)
        if drain is not None:
            drain()
        totals = CPU_TOTALS.setdefault(workload.name, [0.0, 0])
        totals[0] += time.process_time() - cpu_started
        totals[1] += 2 * count
    finally:
        if gc_was_enabled:
            gc.enable()
    if decrypt(stored[-1]) != payload:
        raise AssertionError(f"{workload.name} did not round-trip")
    return Figures(count / (encrypted - started), count / (decrypted - encrypted))


def _calibrate(workload: Workload, payload: bytes, seconds: float) -> int:
    """How many documents make a round of about ``seconds`` (encrypt and decrypt)."""
    count = 50
    while True:
        figures = _timed_round(workload, payload, count)
        elapsed = count / figures.encrypt_per_s + count / figures.decrypt_per_s
        if elapsed >= 0.2:
            return max(1, int(count * seconds / elapsed))
        count *= 4


def measure(workloads: list[Workload], payload: bytes, *, seconds: float, rounds: int) -> dict[str, list[Figures]]:
    """Per workload, one :class:`Figures` per round; rounds run the workloads one after another."""
    counts = {w.name: _calibrate(w, payload, seconds) for w in workloads}
    samples: dict[str, list[Figures]] = {w.name: [] for w in workloads}
    for _ in range(rounds):
        for w in workloads:
            samples[w.name].append(_timed_round(w, payload, counts[w.name]))
    return samples


def _median(samples: list[Figures]) -> Figures:
    return Figures(
        statistics.median(f.encrypt_per_s for f in samples), statistics.median(f.decrypt_per_s for f in samples)
    )


def _median_ratio(top: list[Figures], bottom: list[Figures]) -> dict[str, float]:
    """Median of the per-round ratios: workloads of one round ran seconds apart, under the same load."""
    return {
        "encrypt": statistics.median(t.encrypt_per_s / b.encrypt_per_s for t, b in zip(top, bottom, strict=True)),
        "decrypt": statistics.median(t.decrypt_per_s / b.decrypt_per_s for t, b in zip(top, bottom, strict=True)),
    }


def set_event_recording(on: bool) -> None:
    """Switch KeyCore's key-use recording (the security events of every crypto call) on or off."""
    from keycore.services.keyuse import recorder

    recorder.enabled = on


def keycore_events_workloads() -> tuple[Workload, Workload]:
    """The KeyCore workload twice: with key-use recording on, and off (switched before each round)."""
    base = keycore_encrypt_decrypt()
    on = Workload("keycore-events-on", base.encrypt, base.decrypt, lambda: set_event_recording(True))
    off = Workload("keycore-events-off", base.encrypt, base.decrypt, lambda: set_event_recording(False))
    return on, off


def recording_cost_ns(*, number: int = 200_000, repeat: int = 7) -> dict[str, float]:
    """What recording adds per operation, measured alone (best of ``repeat``, as ``timeit`` advises):
    the crypto thread's append, and the cutter's pop-and-count of that append."""
    import itertools
    import threading
    import timeit

    from keycore.services.keyuse import KeyUseRecorder, _drain

    recorder = KeyUseRecorder()
    recorder._thread = threading.current_thread()  # no cutter or writer threads: measured by hand
    record = recorder.record

    def call() -> None:
        record(1, "encrypt", "ok", "documents", "bench-service", "127.0.0.1", 1, 1)

    hot = min(timeit.repeat(call, number=number, repeat=repeat))
    empty = min(timeit.repeat(lambda: None, number=number, repeat=repeat))
    item = (1, "encrypt", "documents", "bench-service", "127.0.0.1", "ok", 1)
    drains = []
    for _ in range(repeat):
        recorder._queue.extend(itertools.repeat(item, number))
        started = time.perf_counter()
        _drain(recorder._queue)
        drains.append(time.perf_counter() - started)
    return {"record_ns": (hot - empty) / number * 1e9, "count_ns": min(drains) / number * 1e9}


def run_events(*, size: int = 1024, seconds: float = 0.5, rounds: int = 9) -> dict[str, Any]:
    """KeyCore with security-event recording on vs off, interleaved round by round."""
    payload = os.urandom(size)
    on, off = keycore_events_workloads()  # sets Django up
    CPU_TOTALS.clear()
    from django.db.models import Sum

    from keycore.models import KeyUseEvent
    from keycore.services.keyuse import recorder

    figures = measure([on, off], payload, seconds=seconds, rounds=rounds)
    set_event_recording(True)
    recorder.flush()
    ratio = _median_ratio(figures[on.name], figures[off.name])
    best_on = max(f.encrypt_per_s for f in figures[on.name]), max(f.decrypt_per_s for f in figures[on.name])
    best_off = max(f.encrypt_per_s for f in figures[off.name]), max(f.decrypt_per_s for f in figures[off.name])
    cost = recording_cost_ns()
    best_op_ns = 1e9 / max(best_off)  # the fastest operation KeyCore did without recording
    cpu_on, cpu_off = (CPU_TOTALS[w.name][0] / CPU_TOTALS[w.name][1] * 1e6 for w in (on, off))
    return {
        "document_bytes": size,
        "rounds": rounds,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "documents_per_second": {
            "events_on": asdict(_median(figures[on.name])),
            "events_off": asdict(_median(figures[off.name])),
        },
        "slowdown": {"encrypt": 1 - ratio["encrypt"], "decrypt": 1 - ratio["decrypt"]},
        # mean CPU per operation (an encrypt or a decrypt), all threads, timed rounds only
        "cpu_us_per_operation": {"events_on": cpu_on, "events_off": cpu_off},
        "cpu_cost_of_recording": cpu_on / cpu_off - 1,
        # the best round of each: less moved by other processes' load than the medians
        "best_round_slowdown": {"encrypt": 1 - best_on[0] / best_off[0], "decrypt": 1 - best_on[1] / best_off[1]},
        "recording_ns_per_operation": cost,
        "recording_share_of_fastest_operation": (cost["record_ns"] + cost["count_ns"]) / best_op_ns,
        "key_uses_recorded": KeyUseEvent.objects.aggregate(n=Sum("count"))["n"] or 0,
    }


def keycore_detailed_workloads() -> tuple[Workload, Workload]:
    """The KeyCore workload for one tenant in counts-only and in detailed mode (switched before each round),
    every call carrying an object id and a request id as an application would."""
    from bench.django_env import setup_django

    setup_django()
    from keycore.models import Tenant
    from keycore.services.audit import Actor
    from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
    from keycore.services.keyring import tenant_cache
    from keycore.services.keyuse import attribution, recorder
    from keycore.services.tenants import tenant_create

    tenant = tenant_create(external_id=f"bench-{uuid.uuid4().hex[:8]}", name="Benchmark", actor=Actor.system("bench"))
    external_id = tenant.external_id
    via = attribution(None, "192.0.2.10")
    counter = iter(range(10**12))
    request = f"req-{uuid.uuid4().hex[:12]}"

    def meta() -> CallMeta:
        return CallMeta(
            requesting_id="bench-service",
            label="documents",
            object_id=f"doc-{next(counter)}",
            request_id=request,
            via=via,
        )

    # built before timing (an application has its ids at hand), a different document for each call
    metas = itertools.cycle([meta() for _ in range(10_000)])

    def encrypt(plaintext: bytes):
        return crypto_encrypt(tenant=external_id, fields={"body": plaintext}, meta=next(metas))

    def decrypt(stored) -> bytes:
        return crypto_decrypt(tenant=external_id, edek=stored.edek, fields=stored.fields, meta=next(metas))["body"]

    def mode(detailed: bool) -> Callable[[], None]:
        def setup() -> None:
            set_event_recording(True)
            recorder.flush()
            Tenant.objects.filter(pk=tenant.pk).update(detailed_events=detailed)
            tenant_cache().clear()
            decrypt(encrypt(b"warm the caches"))

        return setup

    decrypt(encrypt(b"warm the caches"))
    counts = Workload("keycore-counts", encrypt, decrypt, mode(False))
    detailed = Workload("keycore-detailed", encrypt, decrypt, mode(True))
    return counts, detailed


def run_detailed(*, size: int = 1024, seconds: float = 0.5, rounds: int = 9) -> dict[str, Any]:
    """KeyCore with recording on, the tenant's key use as counts vs in detail, interleaved round by round."""
    payload = os.urandom(size)
    counts, detailed = keycore_detailed_workloads()
    CPU_TOTALS.clear()
    from django.db.models import Count, Sum

    from keycore.models import KeyUseEvent
    from keycore.services.keyuse import recorder

    DRAIN_AFTER_ROUND.update({counts.name: recorder.flush, detailed.name: recorder.flush})
    try:
        figures = measure([counts, detailed], payload, seconds=seconds, rounds=rounds)
    finally:
        DRAIN_AFTER_ROUND.clear()
    recorder.flush()
    ratio = _median_ratio(figures[detailed.name], figures[counts.name])
    cpu_counts, cpu_detailed = (CPU_TOTALS[w.name][0] / CPU_TOTALS[w.name][1] * 1e6 for w in (counts, detailed))
    rows = KeyUseEvent.objects.exclude(details="").aggregate(rows=Count("id"), uses=Sum("count"))
    return {
        "document_bytes": size,
        "rounds": rounds,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "documents_per_second": {
            "counts": asdict(_median(figures[counts.name])),
            "detailed": asdict(_median(figures[detailed.name])),
        },
        "slowdown": {"encrypt": 1 - ratio["encrypt"], "decrypt": 1 - ratio["decrypt"]},
        "cpu_us_per_operation": {"counts": cpu_counts, "detailed": cpu_detailed},
        "cpu_cost_of_detail": cpu_detailed / cpu_counts - 1,
        "detailed_rows": rows["rows"] or 0,
        "detailed_operations_written": rows["uses"] or 0,
    }


def _print_detailed(result: dict[str, Any]) -> None:
    rates = result["documents_per_second"]
    print(
        f"KeyCore, key use as counts vs in detail: {result['document_bytes']}-byte single-field documents, "
        f"median of {result['rounds']} interleaved rounds "
        f"(Python {result['python']}, cryptography {result['cryptography']}, {result['machine']})"
    )
    print(f"{'':12}{'encrypt/s':>14}{'decrypt/s':>14}")
    for name in ("counts", "detailed"):
        print(f"{name:12}{rates[name]['encrypt_per_s']:>14,.0f}{rates[name]['decrypt_per_s']:>14,.0f}")
    slow = result["slowdown"]
    print(f"{'slowdown':12}{slow['encrypt']:>14.1%}{slow['decrypt']:>14.1%}   (target: at most 25 %)")
    cpu = result["cpu_us_per_operation"]
    print(
        f"CPU per operation, all threads, writing included: {cpu['detailed']:.2f} µs detailed, "
        f"{cpu['counts']:.2f} µs counts ({result['cpu_cost_of_detail']:+.1%})"
    )
    print(f"detailed operations written: {result['detailed_operations_written']:,} in {result['detailed_rows']:,} rows")


def _print_events(result: dict[str, Any]) -> None:
    rates = result["documents_per_second"]
    print(
        f"KeyCore with security events on vs off: {result['document_bytes']}-byte single-field documents, "
        f"median of {result['rounds']} interleaved rounds "
        f"(Python {result['python']}, cryptography {result['cryptography']}, {result['machine']})"
    )
    print(f"{'':12}{'encrypt/s':>14}{'decrypt/s':>14}")
    for name, label in (("events_on", "events on"), ("events_off", "events off")):
        print(f"{label:12}{rates[name]['encrypt_per_s']:>14,.0f}{rates[name]['decrypt_per_s']:>14,.0f}")
    slow = result["slowdown"]
    print(f"{'slowdown':12}{slow['encrypt']:>14.1%}{slow['decrypt']:>14.1%}   (target: at most 10 %)")
    cpu = result["cpu_us_per_operation"]
    print(
        f"CPU per operation, all threads: {cpu['events_on']:.2f} µs on, {cpu['events_off']:.2f} µs off "
        f"({result['cpu_cost_of_recording']:+.1%})"
    )
    best = result["best_round_slowdown"]
    print(f"best rounds: slowdown {best['encrypt']:.1%} encrypt, {best['decrypt']:.1%} decrypt")
    cost = result["recording_ns_per_operation"]
    print(
        f"recording alone: {cost['record_ns']:.0f} ns to record + {cost['count_ns']:.0f} ns to count = "
        f"{result['recording_share_of_fastest_operation']:.1%} of the fastest operation"
    )
    print(f"key uses recorded and written during the run: {result['key_uses_recorded']:,}")


def measure_keycore(payload: bytes, *, seconds: float = 0.5, rounds: int = 9) -> Figures:
    """KeyCore's figures alone (the seam: :func:`keycore_encrypt_decrypt` decides what is measured)."""
    return _median(measure([keycore_encrypt_decrypt()], payload, seconds=seconds, rounds=rounds)["keycore"])


def run(
    *, size: int = 1024, seconds: float = 0.5, rounds: int = 9, workloads: list[Workload] | None = None
) -> dict[str, Any]:
    payload = os.urandom(size)
    workloads = workloads or [floor_workload(), esdk_workload(), keycore_encrypt_decrypt()]
    figures = measure(workloads, payload, seconds=seconds, rounds=rounds)
    return {
        "document_bytes": size,
        "rounds": rounds,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "documents_per_second": {name: asdict(_median(samples)) for name, samples in figures.items()},
        "ratios": {
            "keycore_over_esdk": _median_ratio(figures["keycore"], figures["esdk"]),
            "keycore_over_floor": _median_ratio(figures["keycore"], figures["floor"]),
        },
    }


def _print_table(result: dict[str, Any]) -> None:
    rates = result["documents_per_second"]
    ratios = result["ratios"]
    print(
        f"{result['document_bytes']}-byte single-field documents, median of {result['rounds']} rounds "
        f"(Python {result['python']}, cryptography {result['cryptography']}, {result['machine']})"
    )
    print(f"{'':10}{'encrypt/s':>14}{'decrypt/s':>14}")
    for name in ("floor", "esdk", "keycore"):
        print(f"{name:10}{rates[name]['encrypt_per_s']:>14,.0f}{rates[name]['decrypt_per_s']:>14,.0f}")
    for label, key, fmt in (
        ("KeyCore/ESDK", "keycore_over_esdk", "{:.1f}x"),
        ("KeyCore/floor", "keycore_over_floor", "{:.0%}"),
    ):
        enc, dec = fmt.format(ratios[key]["encrypt"]), fmt.format(ratios[key]["decrypt"])
        print(f"{label:14}{'encrypt ' + enc:>16}{'decrypt ' + dec:>18}")


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.getLogger("aws_encryption_sdk").setLevel(logging.WARNING)  # it logs every data-key decryption
    parser = argparse.ArgumentParser(prog="python -m bench.crypto", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="plaintext bytes per document (default 1024)")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one round per workload (default 0.5)")
    parser.add_argument("--rounds", type=int, default=9, help="rounds; figures are medians (default 9)")
    parser.add_argument(
        "--events",
        choices=["on", "off", "both"],
        default="on",
        help="key-use recording: on (default, as deployed), off, or both (KeyCore on vs off and the slowdown)",
    )
    parser.add_argument(
        "--detailed",
        choices=["both"],
        help="both: KeyCore with the tenant's key use recorded as counts vs in detail, and the slowdown",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.detailed == "both":
        result = run_detailed(size=args.size, seconds=args.seconds, rounds=args.rounds)
        printer = _print_detailed
    elif args.events == "both":
        result = run_events(size=args.size, seconds=args.seconds, rounds=args.rounds)
        printer = _print_events
    else:
        workloads = [floor_workload(), esdk_workload(), keycore_encrypt_decrypt()]
        set_event_recording(args.events == "on")
        result = run(size=args.size, seconds=args.seconds, rounds=args.rounds, workloads=workloads)
        result["events"] = args.events
        printer = _print_table
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        printer(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
