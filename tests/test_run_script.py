"""`make run` (scripts/run.py) as a newcomer meets it: it fails clearly when its port is taken,
prints every demo login the README promises, and a SIGTERM stops everything it started.

Run against a folder of its own (KEYCORE_VAR_DIR) and the embedded default, never the
database or broker the test suite may have been pointed at.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.providers.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "KEYCORE_REQUIRE_SERVICES")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICES and not k.startswith("PYTEST")}
    env.update(KEYCORE_VAR_DIR=str(tmp_path / "var"), **extra)
    return env


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_taken_port_fails_at_once_and_never_claims_to_be_running(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "scripts/run.py"],
            cwd=ROOT,
            env=_env(tmp_path, PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert f"PORT={port + 1} make run" in result.stderr
    assert "is running" not in result.stdout + result.stderr
    assert not (tmp_path / "var" / "keycore.sqlite3").exists()  # it stopped before doing anything


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_it_prints_every_demo_login_and_sigterm_stops_everything_it_started(tmp_path):
    port, kms_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "scripts/run.py"],
        cwd=ROOT,
        env=_env(tmp_path, PORT=str(port), KEYCORE_DEMO_KMS_PORT=str(kms_port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 240
        while not any("Press Ctrl-C" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.5)
        output = "".join(lines)
        steps = ("Preparing the database", "Loading the demo data", "Starting the demo AWS KMS", "Starting the web")
        for step in steps:
            assert f"==> {step}" in output
        assert f"KeyCore is running at http://127.0.0.1:{port}/" in output
        for login in ("admin@vendor.example", "operator@vendor.example", "owner@acme.example", "owner@globex.example",
                      "owner@initech.example"):  # fmt: skip
            assert login in output.split("KeyCore is running", 1)[1]
        assert f"Demo AWS KMS    http://127.0.0.1:{kms_port}" in output
        started = _children(proc.pid)
        assert len(started) >= 3  # web server, worker, demo KMS (and the worker's own children)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in started if _alive(pid)]
        assert "KeyCore stopped." in "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _children(proc.pid):
            os.kill(pid, signal.SIGKILL)
