"""Vendor portal tenants list at 100k+ tenants: p50/p95 of the first page, a deep page and two searches.

    python -m bench.tenants_list [--tenants 100000] [--database-url URL] [--requests 200]
                                 [--deep-pages 1000] [--keep DIR] [--json]

Seeds ``--tenants`` tenants with ``manage.py seed_tenants`` (prefix ``bench``) into a
throwaway database — a scratch SQLite file, or the PostgreSQL database named by
``--database-url`` (created if missing) — or reuses the ones already there
(``--keep DIR`` keeps and reuses a SQLite scratch folder). Then, signed in as a
vendor administrator, it requests each page ``--requests`` times through Django's
test client (middleware, session, access checks, every query, template
rendering) and reports the median and the 95th percentile:

* ``first page``: ``/vendor/tenants/`` (50 tenants by name);
* ``deep page``: the page reached by following ``--deep-pages`` "next" cursors from
  the first (1,000 pages = 50,000 tenants in);
* ``prefix search``: a name prefix matching ~2% of the tenants;
* ``contains search``: a word inside names, matching ~1–3%;
* plus, for context: an external-id prefix, a filtered list sorted by date, the
  dashboard, a rare substring (no matches: the worst case of a search) and two
  filters that match no tenant (the worst case of a filter).

Target: p95 ≤ 50 ms for the first four, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

PREFIX = "bench"


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` if it does not exist yet."""
    import psycopg

    parts = urlparse(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def next_page(html: str) -> str | None:
    """The pager's "next" link (this script reads the page as a browser would; no test instrumentation)."""
    import re

    match = re.search(r'<a href="([^"]+)" rel="next">', html)
    return match.group(1).replace("&amp;", "&") if match else None


def measure(client, url: str, requests: int) -> dict:
    for _ in range(5):  # warm the caches this URL touches
        assert client.get(url).status_code == 200, url
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, url
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(percentile(times, 0.95), 1),
        "max_ms": round(max(times), 1),
        "rows": response.content.count(b"<tr data-href="),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=100_000)
    parser.add_argument(
        "--database-url", help="PostgreSQL, e.g. postgres://postgres@127.0.0.1:5432/keycore_bench_vendor"
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--deep-pages", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="a folder for the SQLite scratch database, reused across runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    if args.database_url:
        ensure_database(args.database_url)
        os.environ["DATABASE_URL"] = args.database_url
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    from bench.django_env import setup_django

    setup_django(keep=args.keep)

    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from keycore.models import Tenant, User, VendorStaff
    from keycore.roles import VendorRole

    say = (lambda *a: None) if args.json else print
    have = Tenant.objects.filter(external_id__startswith=f"{PREFIX}-").count()
    seed_s = None
    if have < args.tenants:
        say(f"seeding {args.tenants - have:,} tenants into {connection.vendor} …")
        started = time.perf_counter()
        call_command("seed_tenants", args.tenants - have, prefix=PREFIX, random_seed=5, stdout=io.StringIO())
        seed_s = round(time.perf_counter() - started, 1)
        say(f"seeded in {seed_s} s")
    else:
        # what autovacuum keeps a production database at: statistics current, GIN pending lists merged
        from keycore.management.commands.seed_tenants import refresh_statistics

        refresh_statistics()
    total = Tenant.objects.count()

    user, _ = User.objects.get_or_create(email="bench-admin@vendor.example")
    VendorStaff.objects.update_or_create(user=user, defaults={"role": VendorRole.ADMIN, "is_active": True})
    client = Client(SERVER_NAME="localhost")
    client.force_login(user)

    base = "/vendor/tenants/"
    url = base
    for _ in range(args.deep_pages):
        next_url = next_page(client.get(url).content.decode())
        if not next_url:
            break
        url = base + next_url
    deep = url
    deep_cursor = parse_qs(urlparse(deep).query).get("cursor", [""])[0]

    scenarios = {
        "first page": base,
        "deep page": deep,
        "prefix search": base + "?q=nor",
        "contains search": base + "?q=harbor&match=contains",
        "external id prefix": base + f"?q={PREFIX}-00421",
        "filtered, newest first": base + "?status=active&health=ok&sort=-created",
        "rare substring (no match)": base + "?q=zzqx&match=contains",
        # filters nothing matches (every seeded tenant is active, on a local key): the worst case,
        # where a missing index means walking the sort's index through every row to prove it
        "filter, no match (provider)": base + "?provider=aws",
        "filter, no match, newest first": base + "?status=suspended&sort=-created",
        "dashboard": "/vendor/",
    }
    results = {}
    for name, url in scenarios.items():
        results[name] = measure(client, url, args.requests)
        r = results[name]
        say(f"{name:<28} p50 {r['p50_ms']:6.1f} ms   p95 {r['p95_ms']:6.1f} ms   max {r['max_ms']:6.1f} ms")
    report = {
        "database": connection.vendor,
        "tenants": total,
        "seed_seconds": seed_s,
        "requests_per_scenario": args.requests,
        "deep_page": f"after following {args.deep_pages} next-page links ({len(deep_cursor)}-character cursor)",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "results": results,
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        say(f"{total:,} tenants on {connection.vendor}; {args.requests} requests per scenario")


if __name__ == "__main__":
    main()
