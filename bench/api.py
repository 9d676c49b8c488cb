"""The crypto API through a real server: gunicorn, two workers, a keep-alive client on the same machine.

    python -m bench.api [--requests 3000] [--batches 20] [--field-size 1024] [--object-ids] [--detailed] [--json]

Prepares a throwaway database the way ``bench/django_env.py`` does (a SQLite file
in a scratch folder, or ``DATABASE_URL`` if set), creates a tenant and a
crypto-scoped API key through the services, and starts ``gunicorn config.wsgi``
(``--workers 2``, gthread, production settings: ``DEBUG`` off) against it. Then:

single
    ``POST /api/v1/crypto/encrypt`` of one document with one ``--field-size``
    field, one request at a time over one kept-alive connection; latency
    percentiles over ``--requests`` requests after a warm-up.
batch
    ``POST /api/v1/crypto/batch-encrypt`` of 1,000 documents of one
    ``--field-size`` field each; fields per second over ``--batches`` requests,
    from one connection and from two at once (one per worker).

Every response is checked (status 200, every item encrypted). Key-use recording,
the key cache, the revocation poll and the per-key throttle are all on, as
deployed. Redis is used for the throttle's counters when ``REDIS_URL`` is set,
otherwise the embedded file-based cache.

``--detailed`` records the tenant's key use in detail (each operation with its
object id and request id; issue 19). Compare it with ``--object-ids`` (the same
requests, counts only): the requests are then alike, and only the recording differs.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(folder: Path, *, detailed: bool = False) -> tuple[str, dict[str, str]]:
    """Migrate, create tenant 'bench' (its key use recorded in detail if asked) and a crypto key; returns the
    key and the server's environment."""
    from bench.django_env import setup_django

    setup_django(keep=folder)
    (folder / "static").mkdir(exist_ok=True)

    from keycore.services.apikeys import api_key_create
    from keycore.services.audit import Actor
    from keycore.services.tenants import tenant_create

    actor = Actor.system("bench")
    tenant = tenant_create(external_id="bench", name="Bench Tenant", actor=actor, send=False)
    if detailed:
        from keycore.services.tenants import tenant_update

        tenant_update(tenant=tenant, actor=actor, detailed_events=True)
    _key, raw = api_key_create(name="bench", scopes=["crypto"], actor=actor)
    return raw, server_env(folder)


def server_env(folder: Path) -> dict[str, str]:
    """The environment of a production-settings server on the database Django is set up with."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{database['NAME']}"
    (folder / "static").mkdir(exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")},
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "KEYCORE_ROOT_KEY": settings.KEYCORE_ROOT_KEY,
        "KEYCORE_VAR_DIR": str(folder / "var"),
        "DATABASE_URL": database_url,
        "ALLOWED_HOSTS": "127.0.0.1",
        "KEYCORE_SECURE_COOKIES": "0",
        "STATIC_ROOT": str(folder / "static"),  # made below: whitenoise warns about a missing one
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    return env


#: the deployed gunicorn config: metrics in multi-process mode, gc.freeze() once a worker has loaded Django
DEPLOYED_CONFIG = ROOT / "config" / "gunicorn.py"
#: the same without gc.freeze(), for --no-gc-freeze
NO_GC_FREEZE_CONFIG = f"""
exec(open({str(DEPLOYED_CONFIG)!r}).read())


def post_worker_init(worker):
    pass
"""


def start_gunicorn(
    env: dict[str, str], port: int, workers: int, threads: int, worker_class: str, config: Path | None = None
) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            *(["--config", str(config)] if config else ["--config", "/dev/null"]),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--worker-class",
            worker_class,
            "--threads",
            str(threads),
            "--keep-alive",
            "30",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.2)
    stop(process)
    raise RuntimeError("gunicorn did not start listening within 60 s")


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class Client:
    """One kept-alive HTTP/1.1 connection."""

    def __init__(self, port: int, key: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post_raw(self, path: str, body: bytes) -> bytes:
        self.conn.request("POST", path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}: {data[:300]!r}")
        return data

    def post(self, path: str, body: bytes) -> dict:
        return json.loads(self.post_raw(path, body))

    def close(self) -> None:
        self.conn.close()


class WorkerClock:
    """CPU seconds the gunicorn workers used (Linux /proc): what a call costs the server, whatever else runs.

    On a machine shared with other work, wall-clock figures measure the contention as much as KeyCore;
    the CPU time the workers spend per call is much steadier, and says what two workers could do on two
    free cores.
    """

    def __init__(self, master_pid: int) -> None:
        self.master = master_pid
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _workers(self) -> list[int]:
        try:
            return [int(p) for p in Path(f"/proc/{self.master}/task/{self.master}/children").read_text().split()]
        except OSError:
            return []

    def peak_rss_mib(self) -> float | None:
        """The largest peak resident set (VmHWM) of any worker so far (Linux /proc)."""
        peaks = []
        for pid in self._workers():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
            except OSError:
                continue
        return round(max(peaks), 1) if peaks else None

    def seconds(self) -> float | None:
        total = 0
        workers = self._workers()
        if not workers:
            return None
        for pid in workers:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / self.tick


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def bench_single(
    port: int, key: str, requests: int, field_size: int, clock: WorkerClock, *, object_ids: bool = False
) -> dict:
    body = json.dumps(
        {
            "tenant": "bench",
            "fields": {"body": base64.b64encode(os.urandom(field_size)).decode()},
            "requesting_id": "bench",
            "label": "bench",
            **({"object_id": "doc-0001", "request_id": "req-0001"} if object_ids else {}),
        }
    ).encode()
    client = Client(port, key)
    for _ in range(300):  # warm-up: both workers' caches, connection, code paths
        client.post("/api/v1/crypto/encrypt", body)
    timings = []
    now = time.perf_counter
    cpu_before = clock.seconds()
    for _ in range(requests):
        started = now()
        answer = client.post("/api/v1/crypto/encrypt", body)
        timings.append(now() - started)
        if "edek" not in answer:
            raise RuntimeError(f"unexpected answer {answer!r}")
    cpu_after = clock.seconds()
    client.close()
    timings.sort()
    cpu = (cpu_after - cpu_before) / requests if cpu_before is not None and cpu_after is not None else None
    return {
        "server_cpu_ms_per_request": cpu * 1000 if cpu else None,
        "requests": requests,
        "p50_ms": percentile(timings, 50) * 1000,
        "p95_ms": percentile(timings, 95) * 1000,
        "p99_ms": percentile(timings, 99) * 1000,
        "mean_ms": statistics.fmean(timings) * 1000,
        "requests_per_s": requests / sum(timings),
    }


def batch_body(items: int, field_size: int, *, object_ids: bool = False) -> bytes:
    return json.dumps(
        {
            "requesting_id": "bench",
            "label": "bench",
            **({"request_id": "req-0001"} if object_ids else {}),
            "items": [
                {
                    "tenant": "bench",
                    "fields": {"body": base64.b64encode(os.urandom(field_size)).decode()},
                    **({"object_id": f"doc-{n:06d}"} if object_ids else {}),
                }
                for n in range(items)
            ],
        }
    ).encode()


def bench_batch(
    port: int,
    key: str,
    batches: int,
    items: int,
    field_size: int,
    connections: int,
    clock: WorkerClock,
    *,
    object_ids: bool = False,
) -> dict:
    body = batch_body(items, field_size, object_ids=object_ids)
    clients = [Client(port, key) for _ in range(connections)]
    for client in clients:
        for _ in range(2):
            answer = client.post("/api/v1/crypto/batch-encrypt", body)
            if answer["succeeded"] != items or len(answer["results"]) != items:
                raise RuntimeError(f"{answer['failed']} items failed: {answer['results'][:1]!r}")
            if not all("edek" in r and r["fields"]["body"] for r in answer["results"]):
                raise RuntimeError("an item came back without its EDEK or field")
    errors: list[BaseException] = []

    # the warm-up answers were parsed and checked in full; timed answers are checked by their head, so that
    # parsing 1.5 MB of JSON in this process does not take CPU from the server on the same machine
    head = f'{{"succeeded":{items},"failed":0,'.encode()

    def run(client: Client) -> None:
        try:
            for _ in range(batches):
                data = client.post_raw("/api/v1/crypto/batch-encrypt", body)
                if not data.startswith(head):
                    raise RuntimeError(f"not every item was encrypted: {data[:300]!r}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    cpu_before = clock.seconds()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu_after = clock.seconds()
    for client in clients:
        client.close()
    if errors:
        raise errors[0]
    fields = batches * items * connections
    cpu = (cpu_after - cpu_before) / (batches * connections) if cpu_before is not None and cpu_after else None
    return {
        "server_cpu_ms_per_request": cpu * 1000 if cpu else None,
        # two workers, each a core of its own: what the same CPU work per request would sustain
        "fields_per_s_two_free_cores": 2 * items / cpu if cpu else None,
        "connections": connections,
        "requests": batches * connections,
        "items_per_request": items,
        "request_bytes": len(body),
        "fields_per_s": fields / elapsed,
        "ms_per_request": elapsed / batches * 1000,  # wall time per request on each connection
    }


def reference_rate(seconds: float = 1.0) -> float:
    """Documents/s of encrypt_document in this process: how fast this machine is during the run."""
    from keycore.crypto.envelope import TenantKeyHandle, encrypt_document, new_tenant_key

    handle = TenantKeyHandle(os.urandom(16), 1, new_tenant_key())
    fields = {"body": os.urandom(1024)}
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(200):
            encrypt_document(handle, fields)
        done += 200
    return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="single encrypts timed")
    parser.add_argument("--batches", type=int, default=20, help="batch requests per connection")
    parser.add_argument("--items", type=int, default=1000, help="documents per batch")
    parser.add_argument("--field-size", type=int, default=1024, help="bytes per field")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="gthread threads per worker")
    parser.add_argument("--worker-class", default="gthread", choices=["gthread", "sync"])
    parser.add_argument("--no-gc-freeze", action="store_true", help="leave the garbage collector as it is")
    parser.add_argument(
        "--object-ids", action="store_true", help="every call (batch item) names its object id and request id"
    )
    parser.add_argument(
        "--detailed", action="store_true", help="the tenant's key use is recorded in detail (implies --object-ids)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    object_ids = args.object_ids or args.detailed

    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="keycore-bench-api-"))
    process = None
    try:
        key, env = prepare(folder, detailed=args.detailed)
        port = free_port()
        config = DEPLOYED_CONFIG
        if args.no_gc_freeze:
            config = folder / "gunicorn.conf.py"
            config.write_text(NO_GC_FREEZE_CONFIG)
        process = start_gunicorn(env, port, args.workers, args.threads, args.worker_class, config)
        clock = WorkerClock(process.pid)
        reference = [reference_rate()]
        single = bench_single(port, key, args.requests, args.field_size, clock, object_ids=object_ids)
        batch_one = bench_batch(port, key, args.batches, args.items, args.field_size, 1, clock, object_ids=object_ids)
        batch_two = bench_batch(port, key, args.batches, args.items, args.field_size, 2, clock, object_ids=object_ids)
        peak_rss = clock.peak_rss_mib()
        reference.append(reference_rate())
    finally:
        if process is not None:
            stop(process)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    from django.conf import settings

    figures = {
        "server": f"gunicorn, {args.workers} workers, {args.worker_class}"
        + (f" x{args.threads}" if args.worker_class == "gthread" else "")
        + (", gc.freeze() after start" if not args.no_gc_freeze else "")
        + ", DEBUG off",
        "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "throttle_cache": "redis" if os.environ.get("REDIS_URL") else "file",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "field_size": args.field_size,
        "object_ids": object_ids,
        "key_use": "detailed" if args.detailed else "counts",
        "reference_encrypt_document_per_s": statistics.fmean(reference),
        "single": single,
        "batch_1_connection": batch_one,
        "batch_2_connections": batch_two,
        "worker_peak_rss_mib": peak_rss,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{figures['server']}; {figures['database']}; throttle counters in {figures['throttle_cache']} cache")
        print(
            f"key use recorded as {figures['key_use']}"
            + ("; every call names its object id and request id" if object_ids else "")
        )
        print(
            f"this machine meanwhile: encrypt_document {figures['reference_encrypt_document_per_s']:,.0f}/s "
            "in one process (the crypto core's own speed, for scale)"
        )
        print(
            f"single encrypt ({args.field_size} B field, {single['requests']} requests, one connection): "
            f"p50 {single['p50_ms']:.2f} ms, p95 {single['p95_ms']:.2f} ms, p99 {single['p99_ms']:.2f} ms, "
            f"{single['requests_per_s']:,.0f} req/s"
        )
        if single["server_cpu_ms_per_request"]:
            print(f"  server CPU per single encrypt: {single['server_cpu_ms_per_request']:.2f} ms")
        for batch in (batch_one, batch_two):
            print(
                f"batch-encrypt ({batch['items_per_request']} x {args.field_size} B, {batch['connections']} "
                f"connection(s)): {batch['fields_per_s']:,.0f} fields/s"
            )
            if batch["server_cpu_ms_per_request"]:
                print(
                    f"  server CPU per batch: {batch['server_cpu_ms_per_request']:.1f} ms, i.e. "
                    f"{batch['fields_per_s_two_free_cores']:,.0f} fields/s for two workers on two free cores"
                )
        print(f"peak resident memory of one web worker (VmHWM): {peak_rss} MiB")
    return figures


if __name__ == "__main__":
    main()
