"""`make bench`: every benchmark in bench/ is run, its figures meet their targets or say so, the page is rewritten."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import pytest

import bench
from bench import runner
from bench.runner import BEGIN, BENCHMARKS, END, Benchmark, Figure

#: modules of bench/ that are not benchmarks
HELPERS = {"django_env", "runner", "profiles"}


def test_every_benchmark_in_bench_is_run_by_make_bench():
    modules = {m.name for m in pkgutil.iter_modules(bench.__path__)} - HELPERS
    run = {b.module.removeprefix("bench.") for b in BENCHMARKS}
    assert modules == run, f"add to bench/runner.py BENCHMARKS: {sorted(modules - run)}"


def test_a_figure_knows_whether_and_by_how_much_it_missed_its_target():
    fast = Figure("b", "rate", 30_000, "fields/s", (">=", 20_000))
    slow = Figure("b", "rate", 10_000, "fields/s", (">=", 20_000))
    quick = Figure("b", "p95", 25, "ms", ("<=", 50))
    late = Figure("b", "p95", 150, "ms", ("<=", 50))
    free = Figure("b", "context", 3, "ms")
    assert (fast.met, slow.met, quick.met, late.met, free.met) == (True, False, True, False, None)
    assert slow.shortfall == 2 and late.shortfall == 3 and free.shortfall == 0
    assert fast.shortfall < 1 and quick.shortfall < 1


def test_the_generated_section_is_replaced_and_the_history_kept(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n\n## Crypto core\n\nhistory that stays\n")
    figures = [Figure("api", "single encrypt p50", 3.0, "ms", ("<=", 2.0), [("p95", 4.0, "ms")], "latency")]
    env = {k: "x" for k in ("date", "machine", "os", "load_average_before", "python", "django", "cryptography")}
    env |= {k: "x" for k in ("gunicorn", "celery", "prometheus_client", "database", "broker")}
    runs = [{"name": "api", "command": "python -m bench.api --json", "seconds": 3.0, "result": {}}]
    runner.write_document(runner.markdown(env, runs, figures, mode="quick"), doc)
    first = doc.read_text()
    assert first.startswith("# Benchmarks\n\n" + BEGIN)
    assert "| api | single encrypt p50 | 3.00 ms | ≤ 2.00 ms | **no** | p95 4.00 ms |" in first
    assert "Furthest from its target in this run: **api, single encrypt p50**" in first
    figures[0].value = 1.5
    runner.write_document(runner.markdown(env, runs, figures, mode="quick"), doc)
    second = doc.read_text()
    assert second.count(BEGIN) == 1 and second.count(END) == 1
    assert "| 1.50 ms | ≤ 2.00 ms | yes |" in second and "3.00 ms" not in second
    assert second.endswith("## Crypto core\n\nhistory that stays\n")


def test_the_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    figures = [
        Figure("crypto", "KeyCore encrypt", 130_000, "docs/s"),
        Figure("api", "batch", 25_000, "fields/s", (">=", 20_000)),
        Figure("api", "p50", 0.9, "ms", ("<=", 2.0), kind="latency"),
    ]
    runner.plot(figures, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_real_benchmark_run_becomes_figures_with_their_targets(tmp_path, monkeypatch):
    # on a scratch SQLite database of its own: CI's DATABASE_URL names a database only the test run's copy exists of
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    crypto = Benchmark("crypto", "bench.crypto", ("--seconds", "0.05", "--rounds", "1"), (), runner._crypto)
    run = runner.run_one(crypto, full=False)
    assert "result" in run, run.get("error")
    figures = runner._crypto(run["result"])
    names = {f.name for f in figures}
    assert {"KeyCore encrypt", "KeyCore / ESDK, encrypt", "KeyCore / floor, decrypt"} <= names
    encrypt = next(f for f in figures if f.name == "KeyCore encrypt")
    assert encrypt.value > 0 and {p[0] for p in encrypt.peers} == {"floor", "esdk"}


def test_make_bench_runs_the_runner_and_writes_the_page():
    makefile = (Path(runner.ROOT) / "Makefile").read_text()
    recipe = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    assert "-m bench.runner --write" in recipe
