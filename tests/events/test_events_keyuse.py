"""Key use is counted in memory and written as per-minute rows on each tenant's chain: no database
write per operation, and counts that add up exactly — across threads, with flushes racing the recording."""

from __future__ import annotations

import contextlib
import sys
import threading
from datetime import UTC, datetime

import pytest
from django.db.models import Sum

from keycore import errors
from keycore.models import KeyUseEvent
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.events import chain_verify
from keycore.services.keyuse import KeyUseRecorder


def totals(tenant, **filters) -> dict[tuple[str, str], int]:
    """Sum of counts per (operation, result): rows of one minute may be several (one per flush)."""
    grouped = (
        KeyUseEvent.objects.for_tenant(tenant)
        .filter(**filters)
        .values("operation", "result")
        .annotate(n=Sum("count"))
        .order_by()
    )
    return {(g["operation"], g["result"]): g["n"] for g in grouped}


@pytest.mark.django_db
def test_crypto_calls_write_nothing_until_the_flush(tenant, recorder, django_assert_num_queries):
    meta = CallMeta(requesting_id="billing-svc", label="invoices", source_ip="198.51.100.4")
    crypto_encrypt(tenant="acme", fields={"f": b"warm"}, meta=meta)  # warms the tenant and key caches
    recorder.flush()
    with django_assert_num_queries(0):
        for _ in range(50):
            crypto_encrypt(tenant="acme", fields={"f": b"x"}, meta=meta)
    assert recorder.pending() == 50
    assert recorder.flush() == 50
    assert recorder.pending() == 0
    row = KeyUseEvent.objects.for_tenant(tenant).latest("seq")
    assert (row.operation, row.result, row.count, row.label, row.requesting_id, row.source_ip) == (
        "encrypt",
        "ok",
        50,
        "invoices",
        "billing-svc",
        "198.51.100.4",
    )
    assert row.key_version == 1


@pytest.mark.django_db
def test_failures_are_counted_with_the_reason_as_result(tenant, recorder):
    meta = CallMeta(requesting_id="billing-svc", label="invoices")
    stored = crypto_encrypt(tenant="acme", fields={"f": b"secret"}, meta=meta)
    tampered = {"f": stored.fields["f"][:-1] + bytes([stored.fields["f"][-1] ^ 1])}
    for _ in range(3):
        with pytest.raises(errors.AuthenticationFailed):
            crypto_decrypt(tenant="acme", edek=stored.edek, fields=tampered, meta=meta)
    with pytest.raises(errors.MalformedData):
        crypto_decrypt(tenant="acme", edek=b"garbage", fields={}, meta=meta)
    recorder.flush()
    assert totals(tenant) == {
        ("encrypt", "ok"): 1,
        ("decrypt", "authentication-failed"): 3,
        ("decrypt", "malformed-data"): 1,
    }


@pytest.mark.django_db
def test_a_revoked_key_is_recorded_as_a_refused_use(tenant, recorder, admin_actor):
    from keycore.models import KmsConfig
    from keycore.services.keys import kms_config_revoke

    meta = CallMeta(requesting_id="billing-svc")
    stored = crypto_encrypt(tenant="acme", fields={"f": b"secret"}, meta=meta)
    kms_config_revoke(config=KmsConfig.objects.get(tenant=tenant, is_primary=True), actor=admin_actor)
    from keycore.services.keyring import clear_caches

    clear_caches()
    with pytest.raises(errors.KeyRevoked):
        crypto_decrypt(tenant="acme", edek=stored.edek, fields=stored.fields, meta=meta)
    recorder.flush()
    assert totals(tenant)[("decrypt", "key-revoked")] == 1


@pytest.mark.django_db
def test_batches_are_cut_at_minute_boundaries_and_stamped_with_their_minute(tenant):
    now = [datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()]
    recorder = KeyUseRecorder(clock=lambda: now[0])
    now[0] += 30
    recorder.record(tenant.pk, "encrypt", "ok", "a", "svc", "", 1, 5)
    assert recorder.next_wait(now[0]) == pytest.approx(min(recorder.interval, 30.001), abs=0.01)
    now[0] = datetime(2026, 3, 1, 12, 0, 59, 999000, tzinfo=UTC).timestamp()
    assert recorder.next_wait(now[0]) == pytest.approx(0.002, abs=0.001), "the cutter wakes at the minute boundary"
    recorder.record(tenant.pk, "encrypt", "ok", "a", "svc", "", 1, 2)
    now[0] = datetime(2026, 3, 1, 12, 1, 0, 2000, tzinfo=UTC).timestamp()
    assert recorder.tick() == 7, "the cutter's batch began at 12:00 and is stamped 12:00"
    recorder.record(tenant.pk, "encrypt", "ok", "a", "svc", "", 1, 4)
    now[0] = datetime(2026, 3, 1, 12, 1, 10, tzinfo=UTC).timestamp()
    assert recorder.flush() == 11, "an explicit flush stamps the minute it happens in"
    minutes = dict(
        KeyUseEvent.objects.for_tenant(tenant).values("minute").annotate(n=Sum("count")).values_list("minute", "n")
    )
    assert minutes == {
        datetime(2026, 3, 1, 12, 0, tzinfo=UTC): 7,
        datetime(2026, 3, 1, 12, 1, tzinfo=UTC): 4,
    }


@pytest.mark.django_db(transaction=True)
def test_the_writer_keeps_up_while_the_cutter_never_waits_for_the_database(tenant, monkeypatch):
    import keycore.services.keyuse as keyuse

    recorder = KeyUseRecorder()
    recorder.record(tenant.pk, "encrypt", "ok", "", "svc", "", 1)
    release = threading.Event()
    real = keyuse.keyuse_append

    def slow_database(rows):
        release.wait(5)
        return real(rows)

    monkeypatch.setattr(keyuse, "keyuse_append", slow_database)
    recorder.tick()
    written = []

    def write_in_thread():
        from django.db import connection

        try:
            written.append(recorder.write_pending())
        finally:
            connection.close()

    writer = threading.Thread(target=write_in_thread)
    writer.start()
    for _ in range(3):  # the writer is stuck in the database; cutting goes on
        recorder.record(tenant.pk, "encrypt", "ok", "", "svc", "", 1)
        recorder.tick()
    assert recorder.pending() == 3
    release.set()
    writer.join(10)
    assert written == [1]
    monkeypatch.setattr(keyuse, "keyuse_append", real)
    assert recorder.write_pending() == 3
    assert totals(tenant) == {("encrypt", "ok"): 4}


@pytest.mark.django_db
def test_long_strings_are_truncated_when_written_and_their_counts_merged(tenant):
    recorder = KeyUseRecorder()
    recorder.record(tenant.pk, "encrypt", "ok", "L" * 150 + "one", "svc", "", 1)
    recorder.record(tenant.pk, "encrypt", "ok", "L" * 150 + "two", "svc", "", 1)
    recorder.flush()
    (row,) = KeyUseEvent.objects.for_tenant(tenant)
    assert row.label == "L" * 100 and row.count == 2


@pytest.mark.django_db
def test_a_failed_flush_keeps_its_counts_for_the_next_one(tenant, monkeypatch):
    import keycore.services.keyuse as keyuse

    recorder = KeyUseRecorder()
    recorder.record(tenant.pk, "encrypt", "ok", "", "svc", "", 1, 7)
    real = keyuse.keyuse_append

    def database_down(rows):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(keyuse, "keyuse_append", database_down)
    monkeypatch.setattr(keyuse, "_database_reachable", lambda: False)
    with pytest.raises(RuntimeError):
        recorder.flush()
    recorder.record(tenant.pk, "encrypt", "ok", "", "svc", "", 1, 3)
    assert recorder.pending() == 10
    assert recorder.rejected_uses == 0, "an unreachable database is no reason to drop anything"
    monkeypatch.setattr(keyuse, "keyuse_append", real)
    monkeypatch.undo()
    assert recorder.flush() == 10
    assert totals(tenant) == {("encrypt", "ok"): 10}


@pytest.mark.django_db
def test_counts_of_a_deleted_tenant_do_not_block_the_others(tenant, other_tenant):
    from keycore.models import Tenant

    recorder = KeyUseRecorder()
    recorder.record(tenant.pk, "encrypt", "ok", "", "svc", "", 1, 2)
    recorder.record(other_tenant.pk, "encrypt", "ok", "", "svc", "", 1, 3)
    Tenant.objects.filter(pk=other_tenant.pk).delete()
    assert recorder.flush() == 5
    assert totals(tenant) == {("encrypt", "ok"): 2}


@pytest.mark.django_db
def test_recording_can_be_switched_off(tenant):
    recorder = KeyUseRecorder(enabled=False)
    recorder.record(tenant.pk, "encrypt", "ok", "", "svc", "", 1)
    assert recorder.pending() == 0 and recorder.flush() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_100000_operations_across_threads_add_up_exactly_while_flushes_race(tenant, recorder):
    """8 threads × 12,500 real crypto calls (encrypts, decrypts, tampered decrypts) while another thread
    flushes every few milliseconds: every single operation is in the database, in the right bucket."""
    threads, per_thread = 8, 12_500
    seed = crypto_encrypt(tenant="acme", fields={"f": b"payload"}, meta=CallMeta(requesting_id="seed"))
    tampered = {"f": seed.fields["f"][:-1] + bytes([seed.fields["f"][-1] ^ 1])}
    recorder.flush()
    stop = threading.Event()
    flushes = [0]
    problems: list[BaseException] = []

    def flusher():
        from django.db import connection

        try:
            while not stop.is_set():
                recorder.flush()
                flushes[0] += 1
                stop.wait(0.003)
        except BaseException as exc:  # pragma: no cover - reported below
            problems.append(exc)
        finally:
            connection.close()

    def work(n: int):
        meta = CallMeta(requesting_id=f"svc-{n}", label="load")
        try:
            for i in range(per_thread):
                kind = i % 4
                if kind < 2:
                    crypto_encrypt(tenant="acme", fields={"f": b"x"}, meta=meta)
                elif kind == 2:
                    crypto_decrypt(tenant="acme", edek=seed.edek, fields=seed.fields, meta=meta)
                else:
                    with contextlib.suppress(errors.AuthenticationFailed):
                        crypto_decrypt(tenant="acme", edek=seed.edek, fields=tampered, meta=meta)
        except BaseException as exc:  # pragma: no cover - reported below
            problems.append(exc)

    # switch threads every few microseconds instead of every 5 ms, so that any unguarded
    # read-modify-write in the recorder would lose counts here (it does without its lock)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        flush_thread = threading.Thread(target=flusher)
        flush_thread.start()
        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        stop.set()
        flush_thread.join()
    finally:
        sys.setswitchinterval(interval)
    recorder.flush()
    assert not problems, problems
    assert flushes[0] > 10, "the flushes really raced the recording"
    total = threads * per_thread
    assert totals(tenant, requesting_id__startswith="svc-") == {
        ("encrypt", "ok"): total // 2,
        ("decrypt", "ok"): total // 4,
        ("decrypt", "authentication-failed"): total // 4,
    }
    for n in range(threads):
        assert sum(totals(tenant, requesting_id=f"svc-{n}").values()) == per_thread
    assert chain_verify(tenant.pk).ok
