#!/usr/bin/env python3
"""`make run`: KeyCore in its embedded default — SQLite, a Celery worker on a broker that needs
no server, demo data — and where to sign in. Ctrl-C stops the web server and the worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    env = os.environ.copy()
    env.setdefault("DEBUG", "1")
    # the demo admin can sign in without an authenticator app; production enforces admin MFA
    env.setdefault("KEYCORE_REQUIRE_ADMIN_MFA", "0")
    host = env.get("KEYCORE_HOST", "127.0.0.1")
    port = env.get("PORT", "8000")
    env.setdefault("KEYCORE_BASE_URL", f"http://{host}:{port}")
    python = sys.executable

    def manage(*args: str) -> None:
        subprocess.run([python, "manage.py", *args], cwd=ROOT, env=env, check=True)

    manage("migrate", "--noinput", "-v", "0")
    manage("seed_demo")
    var = Path(env.get("KEYCORE_VAR_DIR", ROOT / "var"))
    worker = subprocess.Popen(
        [
            python,
            "-m",
            "celery",
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
        ],
        cwd=ROOT,
        env=env,
    )
    web = subprocess.Popen([python, "manage.py", "runserver", "--noreload", f"{host}:{port}"], cwd=ROOT, env=env)
    time.sleep(2)
    url = f"http://{host}:{port}/"
    from_seed = "keycore-demo-password"
    print(
        f"""
  KeyCore is running at {url}

  Vendor portal   {url}vendor/
                  admin@vendor.example      {from_seed}
                  operator@vendor.example   {from_seed}
  Tenant portal   {url}tenant/
                  owner@acme.example        {from_seed}
                  owner@globex.example      {from_seed}
  API docs        {url}api/v1/docs/

  A Celery worker (with beat) runs beside the web server. Emails print here.
  Press Ctrl-C to stop both.
""",
        flush=True,
    )
    try:
        while web.poll() is None and worker.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (web, worker):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (web, worker):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    print("KeyCore stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
