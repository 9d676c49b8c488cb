"""Bulk provisioning through a real server: ``POST /api/v1/tenants/bulk/``, 1,000 tenants per call.

    DATABASE_URL=postgres://… python -m bench.provision [--calls 20] [--per-call 1000] [--connections 2]
                                                       [--workers 2] [--profile] [--json]

Prepares the database as ``bench/django_env.py`` does (``DATABASE_URL``, or a scratch
SQLite file), creates a ``tenants:write`` API key through the services and starts
``gunicorn config.wsgi`` (``--workers``, gthread, production settings) against it.
Then ``--connections`` clients post ``--calls`` bulk requests in all, each of
``--per-call`` new tenants (fresh external ids, word-list names). Every response is
checked: status 200, every item 201. Afterwards the benchmark checks what the
service promised for a sample of the tenants — a primary vendor-provided key
sealed under the root key, tenant key v1 that unwraps under it, and the
``tenant.created`` audit event on the tenant's chain, whose hashes verify.

The figure is tenants per second over the whole run (sustained: every call counted,
first to last), with the CPU seconds the gunicorn workers and the database used.

``--profile`` runs one bulk call in this process under pyinstrument instead (no
server) and prints where its time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import threading
import time
import uuid
from pathlib import Path

from bench.api import GC_FREEZE_CONFIG, Client, WorkerClock, free_port, start_gunicorn, stop

ROOT = Path(__file__).resolve().parent.parent


def bulk_body(prefix: str, first: int, count: int, rng: random.Random) -> bytes:
    from keycore.management.commands.seed_tenants import company_name

    return json.dumps(
        {"tenants": [{"external_id": f"{prefix}-{first + i:07d}", "name": company_name(rng)} for i in range(count)]}
    ).encode()


def database_cpu() -> dict[int, float] | None:
    """CPU seconds of each PostgreSQL backend of this database (Linux /proc), by pid; None on SQLite."""
    from django.db import connection

    from bench.rekey import _cpu_seconds

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        pids = [row[0] for row in cursor.fetchall()]
    return {pid: _cpu_seconds(pid) for pid in pids}


def database_cpu_since(before: dict[int, float] | None) -> float | None:
    """CPU the backends used since ``before`` (backends that started meanwhile count from zero)."""
    after = database_cpu()
    if before is None or after is None:
        return None
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def check_sample(external_ids: list[str]) -> None:
    """What ``tenant_create`` promises, for a sample: a working sealed key and an audited, verifying chain."""
    from keycore.models import AuditEvent, Tenant
    from keycore.services.events import chain_verify
    from keycore.services.keyring import clear_caches, unwrap_tenant_key

    clear_caches()
    for external_id in external_ids:
        tenant = Tenant.objects.get(external_id=external_id)
        unwrap_tenant_key(tenant, 1)  # unseals its KEK with the root key, unwraps v1, checks the check value
        assert AuditEvent.objects.filter(tenant=tenant, action="tenant.created").count() == 1, external_id
        report = chain_verify(tenant.pk)
        assert report.ok, (external_id, report)


def profile_one(per_call: int) -> None:
    from pyinstrument import Profiler
    from rest_framework.test import APIClient

    from keycore.services.apikeys import api_key_create
    from keycore.services.audit import Actor

    _key, raw = api_key_create(
        name=f"profile-{uuid.uuid4().hex[:6]}", scopes=["tenants:write"], actor=Actor.system("bench")
    )
    client = APIClient(SERVER_NAME="127.0.0.1", HTTP_HOST="127.0.0.1")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    rng = random.Random(1)
    prefix = f"p{uuid.uuid4().hex[:6]}"
    warm = bulk_body(prefix + "w", 1, 20, rng)
    client.post("/api/v1/tenants/bulk/", data=warm, content_type="application/json")
    body = bulk_body(prefix, 1, per_call, rng)
    profiler = Profiler(interval=0.0005)
    started = time.perf_counter()
    with profiler:
        response = client.post("/api/v1/tenants/bulk/", data=body, content_type="application/json")
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and response.json()["created"] == per_call, response.content[:300]
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    print(f"{per_call} tenants in {elapsed:.2f} s in process ({per_call / elapsed:,.0f} tenants/s)")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--per-call", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="scratch folder to reuse (SQLite)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from bench.api import server_env
    from bench.django_env import setup_django

    folder = setup_django(keep=args.keep)
    env = server_env(folder)
    if args.profile:
        profile_one(args.per_call)
        return {}
    from keycore.services.apikeys import api_key_create
    from keycore.services.audit import Actor

    _key, raw = api_key_create(
        name=f"provision-{uuid.uuid4().hex[:6]}", scopes=["tenants:write"], actor=Actor.system("bench")
    )
    config = folder / "gunicorn.conf.py"
    config.write_text(GC_FREEZE_CONFIG)
    port = free_port()
    process = start_gunicorn(env, port, args.workers, 2, "gthread", config)
    prefix = f"b{uuid.uuid4().hex[:6]}"
    rng = random.Random(7)
    bodies = [bulk_body(prefix, 1 + n * args.per_call, args.per_call, rng) for n in range(args.calls)]
    try:
        clock = WorkerClock(process.pid)
        warm = Client(port, raw)
        warm.post("/api/v1/tenants/bulk/", bulk_body(prefix + "w", 1, 50, rng))
        warm.close()
        queue = list(range(args.calls))
        lock = threading.Lock()
        failures: list[str] = []

        def run() -> None:
            client = Client(port, raw)
            try:
                while True:
                    with lock:
                        if not queue:
                            return
                        n = queue.pop(0)
                    answer = client.post("/api/v1/tenants/bulk/", bodies[n])
                    if answer["created"] != args.per_call:
                        failures.append(json.dumps(answer["results"][:3])[:500])
            finally:
                client.close()

        cpu_before, db_before = clock.seconds() or 0.0, database_cpu()
        started = time.perf_counter()
        threads = [threading.Thread(target=run) for _ in range(args.connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        cpu = (clock.seconds() or 0.0) - cpu_before
        db_cpu = database_cpu_since(db_before)
    finally:
        stop(process)
    if failures:
        raise SystemExit("calls did not create every tenant: " + failures[0])
    tenants = args.calls * args.per_call
    check_sample([f"{prefix}-{n:07d}" for n in (1, tenants // 2, tenants)])
    from django.db import connection

    result = {
        "database": connection.vendor,
        "tenants": tenants,
        "calls": args.calls,
        "per_call": args.per_call,
        "connections": args.connections,
        "workers": args.workers,
        "seconds": round(elapsed, 2),
        "tenants_per_second": round(tenants / elapsed),
        "worker_cpu_s": round(cpu, 1),
        "database_cpu_s": None if db_cpu is None else round(db_cpu, 1),
        "cpu_ms_per_tenant": round(1000 * (cpu + (db_cpu or 0.0)) / tenants, 3),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{tenants:,} tenants in {elapsed:.1f} s: {tenants / elapsed:,.0f} tenants/s "
            f"({args.workers} gunicorn workers, {args.connections} connections, {connection.vendor}); "
            f"worker CPU {cpu:.1f} s, database CPU {result['database_cpu_s']} s "
            f"({result['cpu_ms_per_tenant']} ms a tenant, "
            f"{1000 / result['cpu_ms_per_tenant']:,.0f} tenants/s a free core), "
            f"load {os.getloadavg()[0]:.1f}"
        )
    return result


if __name__ == "__main__":
    main()
