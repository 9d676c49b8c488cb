"""Concurrent appenders never fork a chain: threads and separate processes append admin events and
key-use rows to one tenant's chain at once, and the chain stays one gap-free, verifiable sequence.

On PostgreSQL appenders queue on the chain head's row lock (SELECT … FOR UPDATE); on SQLite the
database serialises writers. CI runs this on PostgreSQL.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime

import pytest
from django.db import connection, transaction

from keycore.models import AuditEvent, EventChain, KeyUseEvent
from keycore.services.audit import Actor, audit_record, chain_key
from keycore.services.events import chain_verify, keyuse_append
from tests.conftest import require
from tests.workers import ROOT, process_env

pytestmark = [pytest.mark.django_db(transaction=True)]

APPENDER = r"""
import sys
import django

django.setup()
from datetime import UTC, datetime

from keycore.models import Tenant
from keycore.services.audit import Actor, audit_record
from keycore.services.events import keyuse_append

tenant = Tenant.objects.get(external_id="acme")
name, rounds = sys.argv[1], int(sys.argv[2])
for i in range(rounds):
    audit_record(actor=Actor.system(name), action="tenant.updated", tenant=tenant, target=tenant)
    keyuse_append([{
        "tenant_id": tenant.pk, "minute": datetime(2026, 1, 1, tzinfo=UTC), "operation": "encrypt",
        "label": name, "requesting_id": name, "source_ip": "", "result": "ok", "count": 1, "key_version": 1,
    }])
print("ok", flush=True)
"""


def keyuse_row(tenant, who: str) -> dict:
    return {
        "tenant_id": tenant.pk,
        "minute": datetime(2026, 1, 1, tzinfo=UTC),
        "operation": "encrypt",
        "label": who,
        "requesting_id": who,
        "source_ip": "",
        "result": "ok",
        "count": 1,
        "key_version": 1,
    }


def assert_one_chain(tenant, expected_rows: int) -> None:
    key = chain_key(tenant.pk)
    seqs = sorted(
        [
            *AuditEvent.objects.filter(chain=key).values_list("seq", flat=True),
            *KeyUseEvent.objects.filter(chain=key).values_list("seq", flat=True),
        ]
    )
    assert seqs == list(range(1, expected_rows + 1)), "one gap-free sequence: no fork, no duplicate"
    assert EventChain.objects.get(key=key).seq == expected_rows
    report = chain_verify(tenant.pk)
    assert report.ok, report.problem


def test_threads_appending_at_once_keep_one_chain(tenant):
    start = EventChain.objects.get(key=chain_key(tenant.pk)).seq
    threads, rounds = 6, 15
    barrier = threading.Barrier(threads)
    problems: list[BaseException] = []

    def append(n: int) -> None:
        try:
            barrier.wait()
            for _ in range(rounds):
                audit_record(actor=Actor.system(f"t{n}"), action="tenant.updated", tenant=tenant, target=tenant)
                keyuse_append([keyuse_row(tenant, f"t{n}")])
        except BaseException as exc:  # pragma: no cover - reported below
            problems.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=append, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not problems, problems
    assert_one_chain(tenant, start + threads * rounds * 2)


@pytest.mark.slow
def test_separate_processes_appending_at_once_keep_one_chain(tenant):
    start = EventChain.objects.get(key=chain_key(tenant.pk)).seq
    processes, rounds = 4, 20
    children = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, f"p{n}", str(rounds)],
            cwd=ROOT,
            env=process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and out.strip() == "ok", err[-2000:]
    assert_one_chain(tenant, start + processes * rounds * 2)


def test_on_postgresql_an_appender_waits_for_the_chain_heads_lock(tenant):
    """While one transaction holds acme's chain head, another appender blocks; it then appends after it."""
    require(connection.vendor == "postgresql", "row locks on the chain head are PostgreSQL's (SQLite serialises)")
    key = chain_key(tenant.pk)
    start = EventChain.objects.get(key=key).seq
    holding = threading.Event()
    release = threading.Event()
    appended = threading.Event()

    def holder():
        try:
            with transaction.atomic():
                audit_record(actor=Actor.system("holder"), action="tenant.updated", tenant=tenant, target=tenant)
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    def second():
        try:
            holding.wait(10)
            audit_record(actor=Actor.system("second"), action="tenant.updated", tenant=tenant, target=tenant)
            appended.set()
        finally:
            connection.close()

    first_thread, second_thread = threading.Thread(target=holder), threading.Thread(target=second)
    first_thread.start()
    second_thread.start()
    assert holding.wait(10)
    assert not appended.wait(1.0), "the second appender must wait for the head's lock"
    release.set()
    first_thread.join(10)
    second_thread.join(10)
    assert appended.is_set()
    rows = dict(AuditEvent.objects.filter(chain=key, seq__gt=start).values_list("actor_label", "seq"))
    assert rows == {"system:holder": start + 1, "system:second": start + 2}
    assert chain_verify(tenant.pk).ok
