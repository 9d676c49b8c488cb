"""Syslog forwarding against a real local listener: RFC 5424 messages, octet-counted, over TCP and
over TLS with a CA bundle — in chain order; a wrong CA or a closed port is a failed, retried delivery."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from keycore import errors
from keycore.models import EventChain
from keycore.services.audit import chain_key
from keycore.services.forwarding import deliver_pending, destination_create, destination_test
from keycore.services.siem_wire import syslog_message
from tests.events.conftest import use_keys
from tests.events.receivers import SyslogListener, make_tls_material
from tests.workers import wait_for

pytestmark = pytest.mark.django_db

# <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP STRUCTURED-DATA SP MSG
RFC5424 = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    rb"(?P<sd>\[keycore@32473(?: [a-z_]+=\"(?:[^\"\\\]]|\\.)*\")+\]) (?P<msg>.+)$",
    re.S,
)


def parse(frame: bytes) -> dict:
    match = RFC5424.match(frame)
    assert match, f"not an RFC 5424 message: {frame[:200]!r}"
    parts = {k: v.decode() for k, v in match.groupdict().items()}
    parts["event"] = json.loads(parts["msg"])
    parts["params"] = dict(re.findall(r'([a-z_]+)="((?:[^"\\\]]|\\.)*)"', parts["sd"]))
    return parts


def event_seqs(frames: list[bytes]) -> list[int]:
    """The seqs of the events received, leaving out the signed chain head that ends each batch."""
    return [m["event"]["seq"] for m in map(parse, frames) if m["msgid"] != "chain_head"]


@pytest.fixture
def listener():
    server = SyslogListener()
    yield server
    server.close()


def head_seq(tenant) -> int:
    return EventChain.objects.get(key=chain_key(tenant.pk)).seq


def test_events_arrive_as_octet_counted_rfc5424_messages_in_chain_order(tenant, admin_actor, listener, recorder):
    destination, secret = destination_create(
        tenant=tenant,
        kind="syslog",
        name="rsyslog",
        settings_={"host": "127.0.0.1", "port": listener.port, "facility": 10, "app_name": "keycore-acme"},
        actor=admin_actor,
        from_beginning=True,
    )
    assert secret is None, "syslog destinations have no signing secret"
    use_keys(tenant)
    outcome = deliver_pending(destination.pk)
    total = head_seq(tenant)
    assert outcome.delivered == total
    wait_for(lambda: len(listener.frames) >= total, timeout=10, what="syslog frames")
    *messages, head = [parse(frame) for frame in listener.frames]
    assert head["msgid"] == "chain_head", "each batch ends with the chain's signed head"
    assert (head["event"]["seq"], head["event"]["hash"]) == (total, messages[-1]["event"]["hash"])
    assert [m["event"]["seq"] for m in messages] == list(range(1, total + 1))
    for m in messages:
        facility, severity = divmod(int(m["pri"]), 8)
        assert facility == 10
        assert m["app"] == "keycore-acme" and m["procid"] == "-"
        assert m["msgid"] == m["event"]["kind"]
        assert m["params"]["id"] == m["event"]["id"] and m["params"]["tenant"] == "acme"
        assert m["params"]["hash"] == m["event"]["hash"]
        assert severity == (6 if m["event"]["kind"] == "key_use" else 5)
    assert {m["msgid"] for m in messages} == {"admin", "key_use"}


def test_a_failed_use_is_a_warning(tenant):
    document = {"id": "tenant:1:9", "kind": "key_use", "seq": 9, "result": "key-revoked", "operation": "decrypt"}
    frame = syslog_message(document, facility=13, app_name="keycore", hostname="kc 1")
    message = parse(frame)
    assert divmod(int(message["pri"]), 8) == (13, 4)
    assert message["host"] == "kc1", "spaces cannot appear in HOSTNAME"


def test_structured_data_values_are_escaped(tenant):
    document = {"id": 'x"]\\', "kind": "admin", "seq": 1, "action": "tenant.updated", "tenant": "a]b"}
    message = parse(syslog_message(document, facility=13, app_name="keycore", hostname="h"))
    assert message["params"]["id"] == 'x\\"\\]\\\\' and message["params"]["tenant"] == "a\\]b"


def test_tls_with_the_servers_ca_bundle(tenant, admin_actor, recorder, tmp_path):
    ca_pem, server_context = make_tls_material(tmp_path)
    listener = SyslogListener(tls=server_context)
    try:
        destination, _ = destination_create(
            tenant=tenant,
            kind="syslog",
            name="siem over tls",
            settings_={
                "host": "127.0.0.1",
                "port": listener.port,
                "tls": True,
                "ca_bundle": ca_pem,
                "server_name": "localhost",
            },
            actor=admin_actor,
            from_beginning=True,
        )
        use_keys(tenant)
        assert deliver_pending(destination.pk).delivered == head_seq(tenant)
        wait_for(lambda: len(listener.frames) >= head_seq(tenant), timeout=10, what="TLS syslog frames")
        assert event_seqs(listener.frames) == list(range(1, head_seq(tenant) + 1))
    finally:
        listener.close()


def test_tls_refuses_a_server_the_ca_bundle_does_not_vouch_for(tenant, admin_actor, recorder, tmp_path):
    _, server_context = make_tls_material(tmp_path)
    other_ca, _ = make_tls_material(tmp_path / "..")
    listener = SyslogListener(tls=server_context)
    try:
        destination, _ = destination_create(
            tenant=tenant,
            kind="syslog",
            name="impostor",
            settings_={"host": "127.0.0.1", "port": listener.port, "tls": True, "ca_bundle": other_ca},
            actor=admin_actor,
            from_beginning=True,
        )
        outcome = deliver_pending(destination.pk)
        destination.refresh_from_db()
        assert outcome.delivered == 0 and outcome.failed_attempts == 1
        assert "TLS" in destination.last_error and destination.cursor_seq == 0
        assert not listener.frames
    finally:
        listener.close()


def test_a_closed_port_is_a_failure_retried_after_backoff(tenant, admin_actor, listener, recorder):
    destination, _ = destination_create(
        tenant=tenant, kind="syslog", name="down", settings_={"host": "127.0.0.1", "port": 9}, actor=admin_actor
    )
    start = destination.cursor_seq
    use_keys(tenant)
    outcome = deliver_pending(destination.pk)
    destination.refresh_from_db()
    assert outcome.failed_attempts == 1 and "cannot reach" in destination.last_error
    assert destination.next_attempt_at > timezone.now()
    # the server comes up on another port: point the destination at it, the backlog follows in order
    from keycore.services.forwarding import destination_update

    destination_update(destination=destination, actor=admin_actor, settings_={"port": listener.port})
    deliver_pending(destination.pk, now=timezone.now() + timedelta(hours=1))
    wait_for(lambda: len(listener.frames) >= head_seq(tenant) - start, timeout=10, what="frames after recovery")
    seqs = event_seqs(listener.frames)
    assert seqs == list(range(start + 1, head_seq(tenant) + 1)), "the backlog, in order, from where it stopped"


def test_testing_a_syslog_destination_sends_one_message(tenant, admin_actor, listener):
    destination, _ = destination_create(
        tenant=tenant,
        kind="syslog",
        name="probe",
        settings_={"host": "127.0.0.1", "port": listener.port},
        actor=admin_actor,
    )
    assert destination_test(destination=destination, actor=admin_actor).ok
    wait_for(lambda: listener.frames, timeout=10, what="the test message")
    assert parse(listener.frames[0])["event"]["kind"] == "test"


@pytest.mark.parametrize(
    ("settings_", "field"),
    [
        ({"host": "", "port": 514}, "host"),
        ({"host": "siem.example.com", "port": 70000}, "port"),
        ({"host": "siem.example.com", "port": 6514, "tls": False, "ca_bundle": "x"}, "ca_bundle"),
        ({"host": "siem.example.com", "port": 6514, "tls": True, "ca_bundle": "not a pem"}, "ca_bundle"),
        ({"host": "siem.example.com", "facility": 99}, "facility"),
        ({"host": "siem.example.com", "app_name": "has space"}, "app_name"),
    ],
)
def test_it_explains_invalid_syslog_settings(tenant, admin_actor, settings_, field):
    with pytest.raises(errors.InvalidInput) as info:
        destination_create(tenant=tenant, kind="syslog", name="x", settings_=settings_, actor=admin_actor)
    assert field in info.value.field_errors
