#!/usr/bin/env python3
"""`make run`: KeyCore in its embedded default — SQLite, a Celery worker on a broker that needs
no server, demo data, a demo AWS KMS — and where to sign in.

It says what it is doing while it works, fails (exit status 1) when the port is taken or a
process does not start, and stops everything it started on Ctrl-C, SIGTERM or SIGHUP, and
when its parent (make) goes away.

PORT (8000) and KEYCORE_HOST (127.0.0.1) choose where the web server listens;
KEYCORE_DEMO_KMS_PORT (8765) where the demo AWS KMS does (0 = no demo KMS).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_PASSWORD = "keycore-demo-password"  # noqa: S105 - seed_demo's accounts (keycore/management/commands/seed_demo.py)
STARTUP_TIMEOUT = 60.0
WORKER_SETTLE = 3.0  # seconds: a Celery worker logs its warnings within this of starting


class Stop(Exception):
    """A signal asked us to stop."""


def _stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def fail(message: str) -> int:
    print(f"\n  KeyCore did not start: {message}\n", file=sys.stderr, flush=True)
    return 1


def port_taken(host: str, port: int) -> bool:
    """True when something already listens on host:port (so our server could not)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def main() -> int:
    env = os.environ.copy()
    env.setdefault("DEBUG", "1")
    # the demo admin can sign in without an authenticator app; production enforces admin MFA
    env.setdefault("KEYCORE_REQUIRE_ADMIN_MFA", "0")
    host = env.get("KEYCORE_HOST", "127.0.0.1")
    port = int(env.get("PORT", "8000"))
    kms_port = int(env.get("KEYCORE_DEMO_KMS_PORT", "8765"))
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - the address to browse to
    url = f"http://{shown_host}:{port}/"
    env.setdefault("KEYCORE_BASE_URL", url.rstrip("/"))
    var = Path(env.get("KEYCORE_VAR_DIR", ROOT / "var"))
    python = sys.executable
    parent = os.getppid()

    if port_taken(host, port):
        return fail(
            f"port {port} on {host} is already in use (is KeyCore already running?). "
            f"Stop what uses it, or choose another port: PORT={port + 1} make run"
        )

    for name in ("SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), _stop)
    started: list[tuple[str, subprocess.Popen]] = []

    def start(name: str, *args: str, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen([python, *args], cwd=ROOT, env=env, **kwargs)
        started.append((name, proc))
        return proc

    def manage(*args: str) -> None:
        subprocess.run([python, "manage.py", *args], cwd=ROOT, env=env, check=True)

    try:
        database = env.get("DATABASE_URL") or var / "keycore.sqlite3"
        say(f"Preparing the database ({database}); the first time takes a while")
        manage("migrate", "--noinput", "-v", "0")
        say("Loading the demo data (tenants, their owners, a little key use)")
        manage("seed_demo")
        demo_kms = None
        if kms_port:
            demo_kms = _start_demo_kms(start, host=shown_host, port=kms_port, state=var / "demo-kms.json")
            if demo_kms:
                env["KEYCORE_DEMO_KMS"] = json.dumps(demo_kms)
        say("Starting the web server and the Celery worker")
        start(
            "the Celery worker",
            "-m",
            "celery",
            "--quiet",  # no banner: it would print after, and push away, ours
            "-A",
            "config",
            "worker",
            "--beat",
            "--schedule",
            str(var / "celerybeat-schedule"),
            "--pool=threads",
            "--concurrency=4",
            "--loglevel=WARNING",  # beat dispatches every few seconds; INFO would bury the sign-in lines
            "--without-gossip",
            "--without-mingle",
        )
        worker_started = time.monotonic()
        web = start("the web server", "manage.py", "runserver", "--noreload", f"{host}:{port}")
        if not _answers(f"http://{shown_host}:{port}/healthz", web):
            return fail(f"the web server did not answer on {url} (its output is above).")
        time.sleep(max(0.0, WORKER_SETTLE - (time.monotonic() - worker_started)))  # its few start-up lines first
        print(_banner(url, demo_kms), flush=True)
        while True:
            for name, proc in started:
                if proc.poll() is not None:
                    return fail(f"{name} stopped (exit status {proc.returncode}); its output is above.")
            if os.getppid() != parent:  # make was killed without passing the signal on
                raise Stop("parent gone")
            time.sleep(0.5)
    except (KeyboardInterrupt, Stop):
        return 0
    except subprocess.CalledProcessError as exc:
        return fail(f"`{' '.join(exc.cmd[1:])}` failed (exit status {exc.returncode}).")
    finally:
        _stop_all(started)
        if started:
            print("KeyCore stopped.", flush=True)


def _start_demo_kms(start, *, host: str, port: int, state: Path) -> dict | None:
    """moto's KMS with one demo key (scripts/demo_kms.py); None, with a note, when it cannot run here."""
    try:
        import moto  # noqa: F401
    except ImportError:
        say("No demo AWS KMS: moto is not installed (pip install -e '.[demo]')")
        return None
    if port_taken(host, port):
        say(f"No demo AWS KMS: port {port} is in use (choose another with KEYCORE_DEMO_KMS_PORT)")
        return None
    say(f"Starting the demo AWS KMS (moto) on {host}:{port}")
    proc = start(
        "the demo AWS KMS",
        "scripts/demo_kms.py",
        "--host",
        host,
        "--port",
        str(port),
        "--state",
        str(state),
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("KEYCORE_DEMO_KMS "):
        say("No demo AWS KMS: it did not start (its output is above)")
        return None
    return json.loads(line.split(" ", 1)[1])


def _answers(url: str, proc: subprocess.Popen) -> bool:
    """Wait until the web server answers its health check (False if it exits or takes too long)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own http:// URL
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _stop_all(started: list[tuple[str, subprocess.Popen]]) -> None:
    # a second signal while we clean up must not leave children behind
    for name in ("SIGTERM", "SIGHUP", "SIGINT"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    for _, proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for _, proc in started:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _banner(url: str, demo_kms: dict | None) -> str:
    kms = (
        f"""
  Demo AWS KMS    {demo_kms["endpoint_url"]}  (moto, on this machine: for trying "bring your own key";
                  the tenant portal's AWS KMS form shows what to paste)"""
        if demo_kms
        else ""
    )
    return f"""
  KeyCore is running at {url}

  Vendor portal   {url}vendor/
                  admin@vendor.example      {DEMO_PASSWORD}
                  operator@vendor.example   {DEMO_PASSWORD}
  Tenant portal   {url}tenant/
                  owner@acme.example        {DEMO_PASSWORD}
                  owner@globex.example      {DEMO_PASSWORD}
                  owner@initech.example     {DEMO_PASSWORD}
  API docs        {url}api/v1/docs/{kms}

  A Celery worker (with beat) runs beside the web server. Emails print here.
  Commands: make manage ARGS="create_api_key billing-service --scope crypto"
  Press Ctrl-C to stop everything.
"""


if __name__ == "__main__":
    sys.exit(main())
