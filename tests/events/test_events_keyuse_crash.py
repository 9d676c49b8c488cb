"""What a crash loses, measured on real processes (docs/events.md, "What can be lost"):

* admin events: nothing — they commit with the change they describe;
* key-use counts: at most what was recorded since the process's last flush. A SIGKILL right
  after a flush loses nothing that was flushed; a clean exit flushes everything.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from django.db.models import Sum

from keycore.models import AuditEvent, KeyUseEvent
from tests.workers import ROOT, process_env, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CHILD = r"""
import sys
import django

django.setup()
from keycore.services.crypto import CallMeta, crypto_encrypt
from keycore.services.keyuse import recorder

meta = CallMeta(requesting_id=sys.argv[1], label="crash")


def encrypt(n):
    for _ in range(n):
        crypto_encrypt(tenant="acme", fields={"f": b"x"}, meta=meta)


for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    if command == "encrypt":
        encrypt(int(arg))
    elif command == "flush":
        recorder.flush()
    elif command == "exit":
        sys.exit(0)
    print("done", command, flush=True)
"""


class Child:
    """A separate KeyCore process that encrypts for acme when told to."""

    def __init__(self, who: str, *, interval: float) -> None:
        env = process_env(KEYCORE_KEYUSE_FLUSH_INTERVAL=str(interval), KEYCORE_KEYUSE_AUTOFLUSH="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, who],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def do(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line.startswith("done"), f"child said {line!r}; stderr: {self.proc.stderr.read()[-2000:]}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL

    def exit(self) -> int:
        self.proc.stdin.write("exit\n")
        self.proc.stdin.flush()
        return self.proc.wait(timeout=30)


def counted(who: str) -> int:
    return KeyUseEvent.objects.filter(requesting_id=who).aggregate(n=Sum("count"))["n"] or 0


def test_a_sigkill_right_after_a_flush_loses_exactly_what_came_after_it(tenant):
    child = Child("crash-after-flush", interval=3600)  # the timer never fires: only explicit flushes
    try:
        child.do("encrypt 300")
        child.do("flush")
        child.do("encrypt 200")  # recorded, never flushed
        child.kill()
    finally:
        if child.proc.poll() is None:
            child.proc.kill()
    assert counted("crash-after-flush") == 300


def test_the_flusher_thread_bounds_the_loss_to_one_interval(tenant):
    """Everything recorded more than one flush interval before the kill is in the database."""
    interval = 0.3
    child = Child("crash-timer", interval=interval)
    try:
        child.do("encrypt 400")
        wait_for(lambda: counted("crash-timer") == 400, timeout=20, what="the flusher thread's flush")
        child.do("encrypt 250")
        # written by the child's own threads (no explicit flush), within a few intervals even on a busy machine
        wait_for(lambda: counted("crash-timer") == 650, timeout=20, what="the flusher thread's second write")
        child.do("encrypt 100")  # the last interval's worth, at risk
        child.kill()
    finally:
        if child.proc.poll() is None:
            child.proc.kill()
    assert 650 <= counted("crash-timer") <= 750


def test_a_clean_exit_flushes_everything(tenant):
    child = Child("clean-exit", interval=3600)
    child.do("encrypt 120")
    child.do("flush")
    child.do("encrypt 80")
    assert child.exit() == 0
    assert counted("clean-exit") == 200


def test_admin_events_commit_with_their_change_so_a_crash_loses_none(tenant):
    script = r"""
import os, signal, django
django.setup()
from keycore.models import Tenant
from keycore.services.audit import Actor
from keycore.services.tenants import tenant_update

tenant_update(tenant=Tenant.objects.get(external_id="acme"), actor=Actor.system("crash-test"), name="Acme Renamed")
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=process_env(), capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    tenant.refresh_from_db()
    assert tenant.name == "Acme Renamed"
    assert (
        AuditEvent.objects.filter(tenant=tenant, action="tenant.updated", actor_label="system:crash-test").count() == 1
    )
