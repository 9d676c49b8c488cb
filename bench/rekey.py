"""Rekey jobs at scale, on real Celery workers: rewraps per second, and a 100,000-tenant KEK rotation.

    python -m bench.rekey [--tenants 100000] [--keys-tenants 10000] [--aws-tenants 10] [--aws-keys 100]
                          [--workers 2] [--only local,aws,rotation] [--json]

Runs against ``DATABASE_URL`` — a scratch database: every figure starts by
emptying it — (PostgreSQL) or a scratch SQLite file, with the
broker of ``CELERY_BROKER_URL`` (Redis) or kombu's filesystem broker in the
scratch folder. ``--workers`` worker processes (``--pool=solo``: one task at a
time each, so N workers use at most N cores) do the work; this process only
seeds, starts the jobs and watches. Figures:

* **local→local rewraps/s** — a vendor-wide KEK rotation over ``--keys-tenants``
  tenants with 10 tenant-key versions each: every tenant key is unwrapped with
  its configuration's old local KEK, checked against its check value, wrapped
  with the new KEK and verified, and written with the configuration's new
  sealed KEK and one audit event per tenant, batch by batch;
* **local→AWS rewraps/s** — per-tenant rewrap jobs (what making a tenant's own
  KMS key primary starts) of ``--aws-tenants`` tenants with ``--aws-keys``
  versions each, to AWS KMS configurations on ``moto_server`` in its own
  process: per key one local unwrap, one KMS Encrypt and one KMS Decrypt (the
  verification). Each configuration costs one boto3 client per worker process
  (about half a CPU-second to build), hence few tenants with many keys;
* **vendor-wide rotation** — wall time of rotating every local KEK of
  ``--tenants`` tenants (one tenant key each), from the job's start to its end.

Each figure comes with the CPU seconds the workers and their database
backends used (PostgreSQL backends read from /proc on this machine), because a
shared machine's wall time says little on its own; seeding is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Figure:
    name: str
    items: int
    unit: str
    seconds: float
    per_second: float
    worker_cpu_s: float
    database_cpu_s: float | None
    note: str = ""
    worker_peak_rss_mib: float | None = None


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


class Workers:
    """``count`` Celery worker processes on a queue of their own."""

    def __init__(self, scratch: Path, count: int) -> None:
        from django.conf import settings

        self.queue = f"keycore-bench-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "CELERY_QUEUE": self.queue, "PYTHONPATH": str(ROOT)}
        self.transport_options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS or {})
        if settings.CELERY_BROKER_URL.startswith("filesystem"):
            broker = scratch / "broker"
            for sub in ("in", "processed", "control"):
                (broker / sub).mkdir(parents=True, exist_ok=True)
            self.env["KEYCORE_BROKER_DIR"] = str(broker)
            self.transport_options.update(
                data_folder_in=str(broker / "in"),
                data_folder_out=str(broker / "in"),
                processed_folder=str(broker / "processed"),
                control_folder=str(broker / "control"),
            )
        self.logs = [scratch / f"worker-{n}.log" for n in range(count)]
        self.procs: list[subprocess.Popen] = []
        self.count = count

    def __enter__(self) -> Workers:
        from config.celery import app

        app.conf.task_default_queue = self.queue
        app.conf.broker_transport_options = self.transport_options
        from kombu import pools

        pools.reset()
        app._pool = None
        for n in range(self.count):
            with open(self.logs[n], "ab") as log:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.rekey", "--serve-worker", f"bench{n}@%h"],
                        cwd=ROOT,
                        env=self.env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 60
        while not all("ready." in log.read_text(errors="replace") for log in self.logs if log.exists()) or not all(
            log.exists() for log in self.logs
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start:\n" + self.output())
            time.sleep(0.2)
        return self

    def cpu(self) -> float:
        return sum(_cpu_seconds(proc.pid) for proc in self.procs)

    def peak_rss_mib(self) -> float | None:
        """The largest peak resident set (VmHWM) of any worker since it started (Linux /proc)."""
        peaks = []
        for proc in self.procs:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
            except OSError:
                continue
        return round(max(peaks), 1) if peaks else None

    def output(self) -> str:
        return "\n".join(log.read_text(errors="replace")[-3000:] for log in self.logs if log.exists())

    def __exit__(self, *exc) -> None:
        import signal

        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


class DatabaseCpu:
    """CPU seconds of this database's PostgreSQL backends (other than ours), sampled while a job runs."""

    def __init__(self) -> None:
        from django.db import connection

        self.enabled = connection.vendor == "postgresql" and Path("/proc").exists()
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def _pids(self) -> list[int]:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [row[0] for row in cursor.fetchall()]

    def sample(self) -> None:
        if not self.enabled:
            return
        for pid in self._pids():
            used = _cpu_seconds(pid)
            self.start.setdefault(pid, used)
            self.last[pid] = used

    def used(self) -> float | None:
        if not self.enabled:
            return None
        self.sample()
        return sum(self.last[pid] - self.start[pid] for pid in self.last)


def _wait(job_ids: list[int], started: float, workers: Workers, db: DatabaseCpu, timeout: float) -> float:
    """Seconds from ``started`` until every job has finished, sampling database backends meanwhile."""
    from keycore.models import RekeyJob

    deadline = started + timeout
    while True:
        db.sample()
        states = list(RekeyJob.objects.filter(pk__in=job_ids).values_list("state", flat=True))
        if all(state not in ("pending", "running", "paused") for state in states):
            break
        if time.perf_counter() > deadline:
            raise RuntimeError(f"jobs not finished after {timeout:g}s: {sorted(set(states))}\n{workers.output()}")
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    bad = RekeyJob.objects.filter(pk__in=job_ids).exclude(state="succeeded")
    if bad.exists():
        job = bad.first()
        raise RuntimeError(f"job {job.uid} {job.state}: {job.last_error}\n{workers.output()}")
    return elapsed


def _empty_database() -> None:
    """Each figure starts from an empty (scratch!) database: a vendor-wide job covers every tenant in it."""
    from django.core.management import call_command

    call_command("flush", interactive=False, verbosity=0)


def _seed(count: int, keys: int, prefix: str) -> None:
    from tests.jobs.seeding import seed_local_tenants

    step = 20000
    for start in range(0, count, step):
        seed_local_tenants(min(step, count - start), keys, prefix=f"{prefix}{start // step}", documents=False)


def _kek_rotation(name: str, tenants: int, keys: int, workers: Workers) -> Figure:
    from keycore.models import RekeyJob, TenantKeyWrap
    from keycore.services.audit import Actor
    from keycore.services.jobs import job_start_kek_rotation

    _empty_database()
    _seed(tenants, keys, "r")
    wraps = TenantKeyWrap.objects.count()
    db = DatabaseCpu()
    db.sample()
    cpu = workers.cpu()
    started = time.perf_counter()
    job = job_start_kek_rotation(actor=Actor.system("bench"))
    seconds = _wait([job.pk], started, workers, db, timeout=3600)
    job = RekeyJob.objects.get(pk=job.pk)
    items = wraps if keys > 1 else job.done
    return Figure(
        name,
        items,
        "rewraps" if keys > 1 else "tenants",
        round(seconds, 2),
        round(items / seconds),
        round(workers.cpu() - cpu, 1),
        None if db.used() is None else round(db.used(), 1),
        f"{job.done} tenant KEKs rotated, {wraps} tenant keys rewrapped, {job.chunks_total} chunks, "
        f"{tenants} audit events",
        workers.peak_rss_mib(),
    )


def _aws_rewraps(tenants: int, keys: int, workers: Workers) -> Figure:
    from keycore.models import Tenant, TenantKeyWrap
    from keycore.services import keys as key_services
    from keycore.services.audit import Actor
    from tests.providers.servers import MotoServerProcess

    actor = Actor.system("bench")
    _empty_database()
    _seed(tenants, keys, "a")
    with MotoServerProcess() as moto:
        settings_, secrets = moto.provider_settings(moto.create_key())
        targets = [
            key_services.kms_config_create(
                tenant=tenant,
                owner="vendor",
                data=key_services.ConfigInput("aws", "Bench AWS key", settings_, secrets),
                actor=actor,
                skip_check=True,
            )
            for tenant in Tenant.objects.all()
        ]
        db = DatabaseCpu()
        db.sample()
        cpu = workers.cpu()
        started = time.perf_counter()
        jobs = [key_services.kms_config_make_primary(config=config, actor=actor).pk for config in targets]
        seconds = _wait(jobs, started, workers, db, timeout=1800)
        moved = TenantKeyWrap.objects.filter(kms_config__in=targets).count()
    return Figure(
        "local→AWS (moto_server) rewraps",
        moved,
        "rewraps",
        round(seconds, 2),
        round(moved / seconds),
        round(workers.cpu() - cpu, 1),
        None if db.used() is None else round(db.used(), 1),
        f"{tenants} rewrap jobs (one per tenant, {keys} keys each): per key a local unwrap, "
        "a KMS Encrypt and a verifying KMS Decrypt",
    )


def serve_worker(hostname: str) -> None:
    """Run one worker (solo pool) in this process, configured exactly as ``celery -A config worker`` would be."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from config.celery import app

    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            "-Q",
            os.environ["CELERY_QUEUE"],
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname={hostname}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=100_000, help="tenants in the vendor-wide rotation")
    parser.add_argument("--keys-tenants", type=int, default=10_000, help="tenants (10 keys each) for local→local")
    parser.add_argument("--aws-tenants", type=int, default=10, help="tenants for local→AWS")
    parser.add_argument("--aws-keys", type=int, default=100, help="tenant-key versions per tenant for local→AWS")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", default="local,aws,rotation")
    parser.add_argument("--scratch", type=Path, help="folder for the SQLite file, broker and worker logs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_worker:
        serve_worker(args.serve_worker)
        return 0

    from bench.django_env import setup_django

    scratch = setup_django(keep=args.scratch)
    from django.conf import settings
    from django.db import connection

    only = set(args.only.split(","))
    figures: list[Figure] = []
    with Workers(scratch, args.workers) as workers:
        if "local" in only:
            figures.append(_kek_rotation("local→local rewraps", args.keys_tenants, 10, workers))
        if "aws" in only:
            figures.append(_aws_rewraps(args.aws_tenants, args.aws_keys, workers))
        if "rotation" in only:
            figures.append(_kek_rotation("vendor-wide KEK rotation", args.tenants, 1, workers))
    info = {
        "database": connection.vendor,
        "broker": settings.CELERY_BROKER_URL.split("://")[0],
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps({"info": info, "figures": [asdict(f) for f in figures]}, indent=2))
        return 0
    print(
        f"database {info['database']}, broker {info['broker']}, {args.workers} workers (solo pool), "
        f"{info['cpus']} CPUs, load average {info['load_average_1m']}"
    )
    for f in figures:
        db = "" if f.database_cpu_s is None else f", database {f.database_cpu_s} s"
        print(
            f"{f.name:<34} {f.items:>8} {f.unit:<8} in {f.seconds:>7.2f} s = {f.per_second:>7} /s"
            f"   (CPU: workers {f.worker_cpu_s} s{db}; worker peak RSS {f.worker_peak_rss_mib} MiB)"
        )
        if f.note:
            print(f"{'':34} {f.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
