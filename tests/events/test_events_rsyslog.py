"""Syslog delivery against a real rsyslogd (Debian's package, started here with its own configuration):
a batch counts as delivered only once the server has received it.

KeyCore closes the connection in order — TLS close_notify, then its side of TCP — and reads to
end-of-file; a reset, a TLS alert or no end before the timeout is a failed attempt, so the cursor
stays and the batch is sent again. A server that requires a client certificate gets one. Events stay
small (certificates are recorded by their digest), and a large one arrives whole when the receiver
allows it (rsyslog: ``global(maxMessageSize=…)``, 8k by default).
"""

from __future__ import annotations

import json
import re

import pytest

from keycore.models import AuditEvent, EventChain
from keycore.services.audit import chain_key
from keycore.services.events import event_document
from keycore.services.forwarding import (
    deliver_pending,
    destination_create,
    destination_test,
    destination_update,
)
from keycore.services.keyuse import KeyUseRecorder
from tests.events.conftest import use_keys
from tests.events.receivers import ResettingListener, SyslogListener
from tests.events.rsyslog import Rsyslog, TlsFiles

pytestmark = [pytest.mark.django_db, pytest.mark.services]

RFC5424 = re.compile(r"^<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) (\[keycore@32473[^\]]*(?:\\\][^\]]*)*\]) (\{.*\})$")


def parse(line: str) -> dict:
    match = RFC5424.match(line)
    assert match, f"not an RFC 5424 message from KeyCore: {line[:200]!r}"
    pri, _ts, host, app, _procid, msgid, sd, msg = match.groups()
    return {"pri": int(pri), "host": host, "app": app, "msgid": msgid, "sd": sd, "event": json.loads(msg)}


def events_in(lines: list[str]) -> list[dict]:
    """The messages of events, leaving out the signed chain head that ends each batch."""
    return [m for m in map(parse, lines) if m["msgid"] != "chain_head"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return TlsFiles(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def rsyslog(tmp_path, pki):
    server = Rsyslog(tmp_path / "rsyslog", tls=pki)
    yield server
    server.stop()


def head_seq(tenant) -> int:
    return EventChain.objects.get(key=chain_key(tenant.pk)).seq


def syslog(tenant, actor, port: int, **extra):
    destination, _ = destination_create(
        tenant=tenant,
        kind="syslog",
        name="rsyslog",
        settings_={"host": "127.0.0.1", "port": port, **extra.pop("settings", {})},
        actor=actor,
        from_beginning=True,
        **extra,
    )
    return destination


def test_events_reach_rsyslog_in_order_over_tcp_with_the_configured_hostname(tenant, admin_actor, rsyslog, recorder):
    destination = syslog(tenant, admin_actor, rsyslog.ports["tcp"], settings={"hostname": "keycore-eu-1"})
    use_keys(tenant)
    outcome = deliver_pending(destination.pk)
    total = head_seq(tenant)
    assert outcome.delivered == total and outcome.failed_attempts == 0
    lines = rsyslog.wait_for(total + 1)
    messages = events_in(lines)
    assert [m["event"]["seq"] for m in messages] == list(range(1, total + 1))
    head = parse(lines[-1])
    assert head["msgid"] == "chain_head" and head["event"]["seq"] == total and head["host"] == "keycore-eu-1"
    assert {m["host"] for m in messages} == {"keycore-eu-1"}
    assert {m["msgid"] for m in messages} == {"admin", "key_use"}


def test_the_test_message_is_a_test_without_a_hash(tenant, admin_actor, rsyslog):
    destination = syslog(tenant, admin_actor, rsyslog.ports["tcp"])
    result = destination_test(destination=destination, actor=admin_actor)
    assert result.ok and "received" in result.detail
    (message,) = (parse(line) for line in rsyslog.wait_for(1))
    assert message["msgid"] == "test" and 'kind="test"' in message["sd"]
    assert "hash=" not in message["sd"], 'no hash="None": a test message is not a link of the chain'


def test_a_receiver_that_resets_without_reading_is_a_failure_and_the_cursor_stays(tenant, admin_actor, recorder):
    listener = ResettingListener()
    try:
        destination = syslog(tenant, admin_actor, listener.port)
        use_keys(tenant)
        outcome = deliver_pending(destination.pk)
        destination.refresh_from_db()
        assert outcome.delivered == 0 and outcome.failed_attempts == 1
        assert destination.cursor_seq == 0, "nothing is recorded as delivered"
        assert "without reading" in destination.last_error or "reset" in destination.last_error.lower()
        result = destination_test(destination=destination, actor=admin_actor)
        assert not result.ok and listener.accepted >= 2
    finally:
        listener.close()


def test_a_receiver_that_never_closes_is_a_failure_after_the_timeout(tenant, admin_actor, settings, recorder):
    import socket

    settings.KEYCORE_EVENT_DELIVERY_TIMEOUT = 0.5
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody ever reads or closes
    try:
        destination = syslog(tenant, admin_actor, silent.getsockname()[1])
        outcome = deliver_pending(destination.pk)
        destination.refresh_from_db()
        assert outcome.failed_attempts == 1 and destination.cursor_seq == 0
        assert "did not confirm receipt" in destination.last_error
    finally:
        silent.close()


def test_a_listener_that_reads_everything_and_closes_confirms(tenant, admin_actor, recorder):
    listener = SyslogListener()
    try:
        destination = syslog(tenant, admin_actor, listener.port)
        use_keys(tenant)
        assert deliver_pending(destination.pk).delivered == head_seq(tenant)
    finally:
        listener.close()


def test_rsyslog_requiring_a_client_certificate_refuses_keycore_without_one(
    tenant, admin_actor, rsyslog, pki, recorder
):
    """Under TLS 1.3 the client's handshake completes before the server checks the client's certificate:
    sending succeeds, and only the close tells that nothing was received."""
    destination = syslog(
        tenant,
        admin_actor,
        rsyslog.ports["tls_client_auth"],
        settings={"tls": True, "ca_bundle": pki.ca_pem, "server_name": "localhost"},
    )
    use_keys(tenant)
    outcome = deliver_pending(destination.pk)
    destination.refresh_from_db()
    assert outcome.delivered == 0 and outcome.failed_attempts == 1
    assert destination.cursor_seq == 0 and destination.last_error
    assert not destination_test(destination=destination, actor=admin_actor).ok
    assert rsyslog.lines() == [], "rsyslog received nothing"

    destination_update(
        destination=destination,
        actor=admin_actor,
        settings_={"client_cert": pki.client_cert_pem},
        client_key=pki.client_key_pem,
    )
    destination.refresh_from_db()
    assert destination.has_secret and pki.client_key_pem not in json.dumps(destination.settings)
    delivered = deliver_pending(destination.pk, now=destination.next_attempt_at)
    total = head_seq(tenant)
    assert delivered.delivered == total and delivered.failed_attempts == 0
    seqs = [m["event"]["seq"] for m in events_in(rsyslog.wait_for(total + 1))]
    assert seqs == list(range(1, total + 1)), "every event, once, in order"
    updated = AuditEvent.objects.filter(action="event_destination.updated", target_id=str(destination.uid)).latest(
        "seq"
    )
    assert pki.client_key_pem not in json.dumps(updated.changes)
    assert "BEGIN" not in json.dumps(updated.changes), "the certificate is recorded by its digest"


def test_tls_without_client_authentication_confirms_with_close_notify(tenant, admin_actor, rsyslog, pki, recorder):
    destination = syslog(
        tenant,
        admin_actor,
        rsyslog.ports["tls"],
        settings={"tls": True, "ca_bundle": pki.ca_pem, "server_name": "localhost"},
    )
    use_keys(tenant)
    assert deliver_pending(destination.pk).delivered == head_seq(tenant)
    assert len(events_in(rsyslog.wait_for(head_seq(tenant) + 1))) == head_seq(tenant)


def test_a_client_key_must_match_its_certificate_and_is_never_shown(tenant, admin_actor, pki, tmp_path):
    from keycore import errors

    other = TlsFiles(tmp_path / "other")
    with pytest.raises(errors.InvalidInput) as info:
        syslog(
            tenant,
            admin_actor,
            6514,
            settings={"tls": True, "client_cert": pki.client_cert_pem},
            client_key=other.client_key_pem,
        )
    assert "client_key" in info.value.field_errors
    with pytest.raises(errors.InvalidInput) as info:
        syslog(tenant, admin_actor, 6514, settings={"tls": True, "client_cert": pki.client_cert_pem})
    assert "client_key" in info.value.field_errors
    with pytest.raises(errors.InvalidInput) as info:
        syslog(tenant, admin_actor, 514, settings={"client_cert": pki.client_cert_pem}, client_key=pki.client_key_pem)
    assert "client_cert" in info.value.field_errors


def test_a_ca_bundle_is_recorded_by_its_digest_and_events_stay_small(tenant, admin_actor, tmp_path):
    bundle = "".join(TlsFiles(tmp_path / f"ca{n}").ca_pem for n in range(13))
    destination = syslog(tenant, admin_actor, 6514, settings={"tls": True, "ca_bundle": bundle})
    created = AuditEvent.objects.get(action="event_destination.created", target_id=str(destination.uid))
    recorded = created.changes["settings"][1]["ca_bundle"]
    assert recorded.startswith("sha256:") and "13 PEM blocks" in recorded
    document = json.dumps(event_document(created, "acme"))
    assert len(document) < 2048, "well under the 8 KiB a default rsyslog accepts"


def test_a_large_event_arrives_whole_when_the_receiver_allows_it(tenant, admin_actor, rsyslog, recorder):
    """Detailed key-use rows of operations with custom values: about 16 KiB each, one message each."""
    recording = KeyUseRecorder()
    custom = {"case": "c" * 90, "region": "eu-west-1"}
    for n in range(100):
        recording.record_detail(tenant.pk, "decrypt", "ok", "", "svc", "", 1, 1, None, f"doc-{n:04d}", "r", custom)
    recording.flush()
    destination = syslog(tenant, admin_actor, rsyslog.ports["tcp"])
    assert deliver_pending(destination.pk).delivered == head_seq(tenant)
    lines = rsyslog.wait_for(head_seq(tenant) + 1)
    detailed = [line for line in lines if '"operations"' in line]
    assert max(len(line) for line in detailed) > 8192, "bigger than rsyslog's default message size"
    operations = [op for line in detailed for op in parse(line)["event"]["operations"]]
    assert [op["object_id"] for op in operations] == [f"doc-{n:04d}" for n in range(100)]
    assert all(op["custom"] == custom for op in operations)
