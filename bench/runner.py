"""Every benchmark in bench/, in one run, written into docs/benchmarks.md with a plot: ``make bench``.

    python -m bench.runner [--full] [--only crypto,events,detailed,providers,api,tenants_list,
                            tenant_overview,rekey,sdk,provision] [--write docs/benchmarks.md] [--json]
                           [--profile NAME|furthest] [--from-json results.json]

Each benchmark runs as its own process with ``--json`` (each keeps its own command line, and none
shares Django's setup with another), in **quick** mode by default — fewer rounds, tenants and requests,
so that the whole run takes minutes on a two-core machine — or with each script's own defaults
(``--full``). SQLite by default; with ``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL`` /
``CELERY_BROKER_URL`` set, the benchmarks that use a database or a broker use those. The rekey benchmark
empties its database first, so with it a ``DATABASE_URL`` must name a scratch database (its name must
contain ``bench``).

From the results: one list of *figures*, each with its value, its target (the floor an issue set) and
the peers measured in the same run (the ESDK and the AES-GCM floor beside KeyCore's rate, the p95 beside
the p50…). ``--write`` replaces the generated section of docs/benchmarks.md (between its markers; the
hand-written history below it stays) and draws docs/benchmarks.png: throughput and latency, each figure
against its target.

``--profile furthest`` then profiles the figure furthest from its target (pyinstrument, in process, the
same code path the benchmark measures) and prints where its time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "benchmarks.png"
BEGIN = "<!-- make bench: generated from here -->"
END = "<!-- make bench: generated up to here -->"


@dataclass
class Figure:
    """One measured figure: what it is, its value, its target, and what was measured beside it."""

    benchmark: str
    name: str
    value: float
    unit: str
    #: ">=" or "<=" and the number; None when no issue set one
    target: tuple[str, float] | None = None
    #: (label, value, unit) measured in the same run, for comparison
    peers: list[tuple[str, float, str]] = field(default_factory=list)
    #: "throughput" or "latency" (or "ratio"): which plot it belongs to
    kind: str = "throughput"

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        op, number = self.target
        return self.value >= number if op == ">=" else self.value <= number

    @property
    def shortfall(self) -> float:
        """How far from the target: above 1 means missed by that factor (0 without a target)."""
        if self.target is None or self.value <= 0:
            return 0.0
        op, number = self.target
        return number / self.value if op == ">=" else self.value / number


@dataclass(frozen=True)
class Benchmark:
    """A script of bench/ and how to run it: arguments for quick and full mode, and its figures."""

    name: str
    module: str
    quick: tuple[str, ...]
    full: tuple[str, ...] = ()
    figures: Callable[[Any], list[Figure]] = lambda result: []
    database: bool = False  # whether it takes --database-url instead of DATABASE_URL


# --- what each benchmark's JSON says ---------------------------------------------------------------


def _crypto(result: dict) -> list[Figure]:
    rates, ratios = result["documents_per_second"], result["ratios"]
    out = []
    for op in ("encrypt", "decrypt"):
        peers = [(name, rates[name][f"{op}_per_s"], "docs/s") for name in ("floor", "esdk")]
        out.append(Figure("crypto", f"KeyCore {op}", rates["keycore"][f"{op}_per_s"], "docs/s", None, peers))
        out.append(
            Figure("crypto", f"KeyCore / ESDK, {op}", ratios["keycore_over_esdk"][op], "×", (">=", 10.0), kind="ratio")
        )
        out.append(
            Figure(
                "crypto", f"KeyCore / floor, {op}", ratios["keycore_over_floor"][op], "×", (">=", 0.30), kind="ratio"
            )
        )
    return out


def _events(result: dict) -> list[Figure]:
    rates = result["documents_per_second"]
    out = []
    for op in ("encrypt", "decrypt"):
        peers = [
            ("recording on", rates["events_on"][f"{op}_per_s"], "docs/s"),
            ("recording off", rates["events_off"][f"{op}_per_s"], "docs/s"),
        ]
        out.append(
            Figure(
                "events",
                f"key-use recording slowdown, {op}",
                result["slowdown"][op] * 100,
                "%",
                ("<=", 10.0),
                peers,
                "ratio",
            )
        )
    cpu = result["cpu_us_per_operation"]
    # CPU per operation, every thread: the figure least moved by other processes' load
    out.append(
        Figure(
            "events",
            "key-use recording CPU cost per operation",
            result["cpu_cost_of_recording"] * 100,
            "%",
            ("<=", 10.0),
            [("on", cpu["events_on"], "µs"), ("off", cpu["events_off"], "µs")],
            "ratio",
        )
    )
    return out


def _detailed(result: dict) -> list[Figure]:
    rates = result["documents_per_second"]
    out = []
    for op in ("encrypt", "decrypt"):
        peers = [
            ("counts", rates["counts"][f"{op}_per_s"], "docs/s"),
            ("detailed", rates["detailed"][f"{op}_per_s"], "docs/s"),
        ]
        out.append(
            Figure(
                "detailed",
                f"detailed-events slowdown, {op}",
                result["slowdown"][op] * 100,
                "%",
                ("<=", 25.0),
                peers,
                "ratio",
            )
        )
    cpu = result["cpu_us_per_operation"]
    out.append(
        Figure(
            "detailed",
            "detailed-events CPU cost per operation",
            result["cpu_cost_of_detail"] * 100,
            "%",
            ("<=", 25.0),
            [("detailed", cpu["detailed"], "µs"), ("counts", cpu["counts"], "µs")],
            "ratio",
        )
    )
    return out


def _providers(result: dict) -> list[Figure]:
    out = []
    for r in result["results"]:
        out.append(
            Figure(
                "providers",
                f"{r['provider']} wrap+unwrap, {r['threads']} thread{'s' if r['threads'] > 1 else ''}",
                r["round_trips_per_s"],
                "rt/s",
                None,
                [("p50", r["p50_ms"], "ms"), ("p95", r["p95_ms"], "ms")],
            )
        )
    return out


def _api(result: dict) -> list[Figure]:
    single, one, two = result["single"], result["batch_1_connection"], result["batch_2_connections"]
    reference = ("this machine's encrypt_document", result["reference_encrypt_document_per_s"], "docs/s")
    return [
        Figure(
            "api",
            "single encrypt p50",
            single["p50_ms"],
            "ms",
            ("<=", 2.0),
            [("p95", single["p95_ms"], "ms"), ("p99", single["p99_ms"], "ms"), reference],
            "latency",
        ),
        Figure(
            "api",
            "batch encrypt, 1 connection",
            one["fields_per_s"],
            "fields/s",
            (">=", 20_000.0),
            [("2 connections", two["fields_per_s"], "fields/s"), reference],
        ),
    ]


def _sdk(result: dict) -> list[Figure]:
    per_s, rest, leases = result["per_s"], result["rest_single"], result["leases"]
    floor, esdk = per_s["floor"], per_s["esdk"]
    return [
        Figure(
            "sdk",
            "SDK encrypt, 1 KiB, warm lease",
            per_s["sdk"]["encrypt"],
            "docs/s",
            None,
            [("AES-GCM floor", floor["encrypt"], "docs/s"), ("ESDK", esdk["encrypt"], "docs/s")],
        ),
        Figure("sdk", "SDK / ESDK, encrypt", result["sdk_over_esdk"]["encrypt"], "×", (">=", 15.0), [], "ratio"),
        Figure("sdk", "SDK / floor, encrypt", result["sdk_over_floor"]["encrypt"], "×", (">=", 0.60), [], "ratio"),
        Figure("sdk", "SDK / floor, decrypt", result["sdk_over_floor"]["decrypt"], "×", (">=", 0.60), [], "ratio"),
        Figure(
            "sdk",
            "SDK / REST single call, encrypt",
            result["sdk_over_rest"]["encrypt"],
            "×",
            (">=", 100.0),
            [("REST single call", rest["per_s"], "calls/s")],
            "ratio",
        ),
        Figure(
            "sdk", "deterministic encrypt, 64 bytes", result["deterministic_64b_per_s"], "values/s", (">=", 100_000.0)
        ),
        Figure(
            "sdk",
            "lease fetch p50",
            leases["fetch_p50_ms"],
            "ms",
            None,
            [("p95", leases["fetch_p95_ms"], "ms"), ("derive p50", leases["derive_p50_ms"], "ms")],
            "latency",
        ),
    ]


def _provision(result: dict) -> list[Figure]:
    return [
        Figure(
            "provision",
            f"bulk provisioning ({result['tenants']:,} tenants, {result['database']})",
            result["tenants_per_second"],
            "tenants/s",
            (">=", 2_000.0),
            [("CPU per tenant", result["cpu_ms_per_tenant"], "ms")],
        )
    ]


TENANTS_LIST_TARGETS = {
    "first page": 50.0,
    "deep page": 50.0,
    "prefix search": 50.0,
    "contains search": 50.0,
    "dashboard": 100.0,
}


def _tenants_list(result: dict) -> list[Figure]:
    out = []
    for name, r in result["results"].items():
        target = TENANTS_LIST_TARGETS.get(name)
        out.append(
            Figure(
                "tenants_list",
                f"vendor {name} p95 ({result['tenants']:,} tenants, {result['database']})",
                r["p95_ms"],
                "ms",
                ("<=", target) if target else None,
                [("p50", r["p50_ms"], "ms")],
                "latency",
            )
        )
    return out


def _tenant_overview(result: list) -> list[Figure]:
    out = []
    for r in result:
        out.append(
            Figure(
                "tenant_overview",
                f"tenant overview page, {r['rows']:,} key-use rows",
                r["page_ms"],
                "ms",
                None,
                [("cold sum", r["cold_ms"], "ms"), ("warm sum", r["warm_ms"], "ms")],
                "latency",
            )
        )
    return out


def _rekey(result: dict) -> list[Figure]:
    targets = {"local→local rewraps": (">=", 10_000.0), "vendor-wide KEK rotation": (">=", 100_000 / 30)}
    out = []
    for f in result["figures"]:
        cpu = [("workers' CPU", f["worker_cpu_s"], "s")]
        if f["database_cpu_s"] is not None:
            cpu.append(("database CPU", f["database_cpu_s"], "s"))
        out.append(
            Figure(
                "rekey",
                f"{f['name']} ({f['items']:,} {f['unit']}, {f['seconds']:.1f} s)",
                f["per_second"],
                f"{f['unit']}/s",
                targets.get(f["name"]),
                cpu,
            )
        )
    return out


BENCHMARKS = [
    Benchmark("crypto", "bench.crypto", ("--seconds", "0.25", "--rounds", "5"), (), _crypto),
    Benchmark(
        "events",
        "bench.crypto",
        ("--events", "both", "--seconds", "0.25", "--rounds", "5"),
        ("--events", "both"),
        _events,
    ),
    Benchmark(
        "detailed",
        "bench.crypto",
        ("--detailed", "both", "--seconds", "0.25", "--rounds", "5"),
        ("--detailed", "both"),
        _detailed,
    ),
    Benchmark("providers", "bench.providers", ("--seconds", "1"), (), _providers),
    Benchmark("api", "bench.api", ("--requests", "1000", "--batches", "5"), (), _api),
    Benchmark(
        "tenants_list",
        "bench.tenants_list",
        ("--tenants", "10000", "--requests", "50", "--deep-pages", "100"),
        (),
        _tenants_list,
        database=True,
    ),
    Benchmark(
        "tenant_overview", "bench.tenant_overview", ("--rows", "10000,100000", "--repeat", "3"), (), _tenant_overview
    ),
    Benchmark(
        "rekey",
        "bench.rekey",
        ("--tenants", "10000", "--keys-tenants", "1000", "--aws-tenants", "2", "--aws-keys", "20"),
        (),
        _rekey,
    ),
    Benchmark("sdk", "bench.sdk", ("--seconds", "0.25", "--rounds", "5", "--rest-requests", "500"), (), _sdk),
    Benchmark("provision", "bench.provision", ("--calls", "5"), (), _provision),
]


# --- running ---------------------------------------------------------------------------------------


def _json_from(stdout: str) -> Any:
    """The JSON document a benchmark printed (anything printed before it is skipped)."""
    start = min((i for i in (stdout.find("{"), stdout.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ValueError("no JSON in the output")
    return json.JSONDecoder().raw_decode(stdout[start:])[0]


def run_one(bench: Benchmark, *, full: bool) -> dict[str, Any]:
    args = [sys.executable, "-m", bench.module, *(bench.full if full else bench.quick), "--json"]
    database_url = os.environ.get("DATABASE_URL", "")
    env = dict(os.environ)
    if bench.database and database_url:
        args += ["--database-url", database_url]
    started = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    command = " ".join(["python", *args[1:]])
    if proc.returncode != 0:
        return {"name": bench.name, "command": command, "seconds": seconds, "error": proc.stderr.strip()[-1500:]}
    try:
        result = _json_from(proc.stdout)
    except ValueError as exc:
        return {"name": bench.name, "command": command, "seconds": seconds, "error": f"{exc}: {proc.stdout[-500:]}"}
    return {"name": bench.name, "command": command, "seconds": seconds, "result": result}


def figures_of(runs: list[dict[str, Any]]) -> list[Figure]:
    by_name = {b.name: b for b in BENCHMARKS}
    out: list[Figure] = []
    for run in runs:
        if "result" in run:
            out.extend(by_name[run["name"]].figures(run["result"]))
    return out


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _database_version() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        try:
            import psycopg

            with psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=5) as conn:
                return "PostgreSQL " + conn.execute("SHOW server_version").fetchone()[0].split()[0]
        except Exception as exc:
            return f"PostgreSQL (version unknown: {exc.__class__.__name__})"
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version}"


def _redis_version() -> str | None:
    url = os.environ.get("REDIS_URL") or os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith("redis"):
        return None
    try:
        import redis

        return "Redis " + redis.Redis.from_url(url, socket_timeout=5).info("server")["redis_version"]
    except Exception as exc:
        return f"Redis (version unknown: {exc.__class__.__name__})"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    memory = ""
    try:
        kib = int(
            next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1]
        )
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_model()}, {os.cpu_count()} CPUs" + (f", {memory}" if memory else ""),
        "os": f"{platform.system()} {platform.release()}",
        "load_average_before": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "django": _version("django"),
        "cryptography": _version("cryptography"),
        "gunicorn": _version("gunicorn"),
        "celery": _version("celery"),
        "prometheus_client": _version("prometheus-client"),
        "database": _database_version(),
        "broker": _redis_version() or "kombu filesystem broker",
    }


def _check_scratch_database() -> None:
    url = os.environ.get("DATABASE_URL", "")
    if url and "bench" not in urlparse(url).path:
        raise SystemExit(
            f"DATABASE_URL names {urlparse(url).path.lstrip('/')!r}: the rekey benchmark empties its database, "
            "so make bench runs only on a scratch database whose name contains 'bench'."
        )


# --- writing -----------------------------------------------------------------------------------------


def _number(value: float, unit: str) -> str:
    if unit == "×":
        return f"{value:.2f}×" if value < 1 else f"{value:.1f}×"
    if unit == "%":
        return f"{value:.1f} %"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.2f} {unit}"


def _target(figure: Figure) -> str:
    if figure.target is None:
        return "—"
    op, number = figure.target
    if figure.unit == "×" and number < 1:
        return f"{'≥' if op == '>=' else '≤'} {number:.0%} of the floor"
    return f"{'≥' if op == '>=' else '≤'} {_number(number, figure.unit)}"


def markdown(env: dict[str, Any], runs: list[dict[str, Any]], figures: list[Figure], *, mode: str) -> str:
    lines = [
        BEGIN,
        "## Latest run (`make bench`)",
        "",
        f"Generated by `python -m bench.runner` ({mode} mode) on {env['date']}: {env['machine']}, {env['os']}, "
        f"load average {env['load_average_before']} when it started"
        + (f" and {env['load_average_after']} when it ended" if "load_average_after" in env else "")
        + f". Python {env['python']}, Django "
        f"{env['django']}, cryptography {env['cryptography']}, gunicorn {env['gunicorn']}, Celery {env['celery']}, "
        f"prometheus-client {env['prometheus_client']}; {env['database']}, {env['broker']}. Each figure comes "
        "with its target and the peers measured in the same run; the sections below it are the history, "
        "with each benchmark's method. Quick mode measures fewer rounds and smaller fleets than the sections "
        "below: compare like with like. Wall-clock figures follow the machine's load (a load average above the "
        "number of CPUs means other processes took most of them); ratios measured in interleaved rounds and "
        "CPU per operation move least.",
        "",
        "![Throughput and latency of the latest run, each against its target](benchmarks.png)",
        "",
        "| benchmark | figure | value | target | met | peers in the same run |",
        "|---|---|---:|---|:-:|---|",
    ]
    for f in figures:
        met = {True: "yes", False: "**no**", None: ""}[f.met]
        peers = "; ".join(f"{label} {_number(value, unit)}" for label, value, unit in f.peers)
        lines.append(f"| {f.benchmark} | {f.name} | {_number(f.value, f.unit)} | {_target(f)} | {met} | {peers} |")
    lines += ["", "Commands, as run:", "", "```"]
    for run in runs:
        lines.append(f"{run['command']}    # {run['seconds']:.0f} s" + ("" if "result" in run else ", failed"))
    lines.append("```")
    failed = [run for run in runs if "error" in run]
    if failed:
        lines += ["", "Not measured in this run:", ""]
        for run in failed:
            reason = run["error"].strip().splitlines()[-1] if run["error"].strip() else "no output"
            lines.append(f"* {run['name']}: {reason[:300]}")
    missed = sorted((f for f in figures if f.shortfall > 0), key=lambda f: -f.shortfall)
    if missed:
        worst = missed[0]
        lines += [
            "",
            f"Furthest from its target in this run: **{worst.benchmark}, {worst.name}** "
            f"({_number(worst.value, worst.unit)} against {_target(worst)}).",
        ]
    lines += ["", END]
    return "\n".join(lines)


def write_document(text: str, path: Path = DOC) -> None:
    """Replace the generated section of the document (or put it after the title, the first time)."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        path.write_text(head + text + tail)
        return
    title, _, body = current.partition("\n")
    path.write_text(f"{title}\n\n{text}\n{body}")


def plot(figures: list[Figure], path: Path = PLOT) -> None:
    """Two panels: throughput (per second, log scale) and latency (ms), each bar with its target marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    throughput = [f for f in figures if f.kind == "throughput"]
    latency = [f for f in figures if f.kind == "latency" and f.unit == "ms"]
    panels = [
        (p, title) for p, title in ((throughput, "Throughput (per second, log scale)"), (latency, "Latency (ms)")) if p
    ]
    if not panels:
        return
    height = max(3.0, 0.32 * sum(len(p) for p, _ in panels) + 1.5 * len(panels))
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, height), squeeze=False)
    for ax, (items, title) in zip(axes[:, 0], panels, strict=True):
        labels = [f"{f.benchmark}: {f.name}" for f in items]
        colours = ["#2e7d32" if f.met else "#c62828" if f.met is False else "#607d8b" for f in items]
        ys = range(len(items))
        ax.barh(list(ys), [f.value for f in items], color=colours)
        for y, f in zip(ys, items, strict=True):
            if f.target is not None:
                ax.plot([f.target[1]] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
            ax.text(f.value, y, f"  {_number(f.value, f.unit)}", va="center", fontsize=7)
        ax.set_yticks(list(ys), labels, fontsize=7)
        ax.invert_yaxis()
        if title.startswith("Throughput"):
            ax.set_xscale("log")
        ax.set_title(title + " — green: target met, red: missed, black line: target", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- profiling ---------------------------------------------------------------------------------------


def profile(benchmark: str, *, seconds: float = 5.0) -> str:
    """Where the named benchmark's measured code path spends its time (pyinstrument, in this process)."""
    from bench import profiles

    return profiles.profile(benchmark, seconds=seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runner", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="each benchmark's own defaults (long) instead of quick")
    parser.add_argument("--only", default=",".join(b.name for b in BENCHMARKS), help="comma-separated benchmarks")
    parser.add_argument(
        "--write",
        type=Path,
        nargs="?",
        const=DOC,
        help="rewrite this document (default docs/benchmarks.md) and its plot",
    )
    parser.add_argument("--json", type=Path, help="also save the raw results here")
    parser.add_argument("--from-json", type=Path, help="write the document from saved results instead of running")
    parser.add_argument("--profile", help="a benchmark name, or 'furthest': profile it after the run")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        env, runs, mode = saved["environment"], saved["runs"], saved["mode"]
    else:
        only = set(args.only.split(","))
        if "rekey" in only:
            _check_scratch_database()
        unknown = only - {b.name for b in BENCHMARKS}
        if unknown:
            parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
        env, mode, runs = environment(), "full" if args.full else "quick", []
        for bench in BENCHMARKS:
            if bench.name not in only:
                continue
            print(f"==> {bench.name}", file=sys.stderr, flush=True)
            run = run_one(bench, full=args.full)
            runs.append(run)
            status = (
                "ok"
                if "result" in run
                else "FAILED: " + run["error"].splitlines()[-1][:200]
                if run["error"]
                else "FAILED"
            )
            print(f"    {run['seconds']:.0f} s, {status}", file=sys.stderr, flush=True)
        env["load_average_after"] = round(os.getloadavg()[0], 2)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"environment": env, "mode": mode, "runs": runs}, indent=2))
    figures = figures_of(runs)
    for f in figures:
        met = {True: "met", False: "MISSED", None: ""}[f.met]
        print(f"{f.benchmark:16} {f.name:58} {_number(f.value, f.unit):>18}  {_target(f):>22}  {met}")
    if args.write:
        write_document(markdown(env, runs, figures, mode=mode), args.write)
        plot(figures, args.write.parent / "benchmarks.png")
        print(f"wrote {args.write} and {args.write.parent / 'benchmarks.png'}", file=sys.stderr)
    if args.profile:
        name = args.profile
        if name == "furthest":
            missed = sorted((f for f in figures if f.shortfall > 0), key=lambda f: -f.shortfall)
            if not missed:
                print("no figure with a target was measured", file=sys.stderr)
                return 0
            name = missed[0].benchmark
        print(profile(name))
    failed = [run["name"] for run in runs if "error" in run]
    return 1 if failed and len(failed) == len(runs) else 0


if __name__ == "__main__":
    sys.exit(main())
