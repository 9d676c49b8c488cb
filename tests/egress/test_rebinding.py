"""DNS rebinding cannot reach internal hosts: every connection of every destination and KMS provider goes to
an address of the one resolution that was checked (keycore/egress.py).

A rebinding name answers the check with a public address and the connection with
127.0.0.1. Here the scripted DNS server (tests/egress/dns.py) answers 127.0.0.2 —
the stand-in for a public address, opened by the policy — and then 127.0.0.1,
where a trap listens on the same port. KeyCore must reach the real server on the
allowed address while the name points there, refuse once it points inside, and
never touch the trap: when saving, testing, delivering, health-checking,
unwrapping and running rekey jobs.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from keycore import egress, errors
from keycore.models import KmsConfig
from keycore.services import jobs, keyring, keys
from keycore.services.forwarding import destination_create, destination_test
from keycore.services.keys import ConfigInput
from tests.conftest import require
from tests.egress.conftest import ALLOWED, FORBIDDEN, Listener, listener_pair
from tests.providers.servers import AWS_TEST_CREDENTIALS, KmipServer, ServiceUnavailable, make_kmip_pki

pytestmark = pytest.mark.django_db


def _server_tls(tmp_path: Path, *names: str):
    """A CA and a server certificate for ``names`` (and the allowed address), and a server TLS context."""
    pki = make_kmip_pki(tmp_path / "pki", server_names=(*names, ALLOWED))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_certificate_path, pki.server_key_path)
    return pki, context


# --- syslog ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_syslog_goes_to_the_checked_address_and_never_to_the_rebound_one(
    dns, allow_stand_in, actor, tenant, tmp_path, tls
):
    pki, context = _server_tls(tmp_path, "syslog.rebind.test") if tls else (None, None)
    server, trap = listener_pair(tls=context)
    try:
        dns.answer("syslog.rebind.test", [ALLOWED], [FORBIDDEN])
        settings_ = {"host": "syslog.rebind.test", "port": server.port, "tls": tls}
        if tls:
            settings_["ca_bundle"] = pki.ca_pem  # the certificate names syslog.rebind.test: SNI and check by name
        destination, _ = destination_create(tenant=tenant, kind="syslog", name="SIEM", settings_=settings_, actor=actor)
        first = destination_test(destination=destination, actor=actor)
        assert first.ok, first.detail
        wait = threading.Event()
        for _ in range(50):
            if server.received:
                break
            wait.wait(0.05)
        assert b"event_destination.test" in server.received[0]
        second = destination_test(destination=destination, actor=actor)  # the name now answers 127.0.0.1
        assert not second.ok and "not a public address" in second.detail
        assert trap.connections == 0
        assert dns.queries["syslog.rebind.test"] == 2, "one resolution per connection"
    finally:
        server.close()
        trap.close()


def test_a_refused_syslog_test_does_not_tell_an_open_port_from_a_closed_one(dns, allow_stand_in, actor, tenant, trap):
    dns.answer("scan.rebind.test", [FORBIDDEN])
    closed = Listener(FORBIDDEN)
    closed_port = closed.port
    closed.close()
    results = []
    for port in (trap.port, closed_port):
        destination, _ = destination_create(
            tenant=tenant,
            kind="syslog",
            name=f"p{port}",
            settings_={"host": "scan.rebind.test", "port": port},
            actor=actor,
        )
        results.append(destination_test(destination=destination, actor=actor))
    assert [r.ok for r in results] == [False, False]
    assert results[0].detail == results[1].detail
    assert trap.connections == 0


# --- webhooks -------------------------------------------------------------------------------------------


class _HttpsReceiver:
    def __init__(self, context: ssl.SSLContext) -> None:
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append({"host": self.headers.get("Host"), "body": body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((ALLOWED, 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhooks_go_to_the_checked_address_with_the_name_for_tls_and_host(
    dns, allow_stand_in, actor, tenant, tmp_path, monkeypatch
):
    pki, context = _server_tls(tmp_path, "hooks.rebind.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_path))  # the receiver's CA, as if it were a public one
    receiver = _HttpsReceiver(context)
    trap = Listener(FORBIDDEN, receiver.port)
    try:
        dns.answer("hooks.rebind.test", [ALLOWED], [FORBIDDEN])
        url = f"https://hooks.rebind.test:{receiver.port}/siem"
        destination, _ = destination_create(
            tenant=tenant, kind="webhook", name="SIEM", settings_={"url": url}, actor=actor
        )
        first = destination_test(destination=destination, actor=actor)
        assert first.ok, first.detail
        assert receiver.requests[0]["host"] == f"hooks.rebind.test:{receiver.port}"
        assert json.loads(receiver.requests[0]["body"])["events"][0]["kind"] == "test"
        second = destination_test(destination=destination, actor=actor)
        assert not second.ok and "not a public address" in second.detail
        assert trap.connections == 0
        assert dns.queries["hooks.rebind.test"] == 2
    finally:
        receiver.close()
        trap.close()


# --- a requests-based client (how hvac and other SDKs are held to the policy) ---------------------------


def test_a_pinned_requests_session_follows_the_policy(dns, allow_stand_in, tmp_path, monkeypatch):
    import requests

    pki, context = _server_tls(tmp_path, "vault.rebind.test")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_path))
    receiver = _HttpsReceiver(context)
    trap = Listener(FORBIDDEN, receiver.port)
    try:
        dns.answer("vault.rebind.test", [ALLOWED], [FORBIDDEN])
        session = requests.Session()
        egress.pin_requests_session(session, egress.tenant_kms_policy())
        url = f"https://vault.rebind.test:{receiver.port}/v1/transit"
        response = session.post(url, data=b"{}", verify=str(pki.ca_path))
        assert response.status_code == 204
        assert receiver.requests[0]["host"] == f"vault.rebind.test:{receiver.port}"
        session.close()  # a new connection: resolved again, now to 127.0.0.1
        with pytest.raises(errors.EgressDenied):
            session.post(url, data=b"{}", verify=str(pki.ca_path))
        assert trap.connections == 0
    finally:
        receiver.close()
        trap.close()


# --- KMS providers: saving, health checks, unwrapping, rekey jobs -----------------------------------------


def _rebind_and_prove_every_path_refuses(dns, names: list[str], tenant, actor, config: KmsConfig, trap) -> None:
    """The names now answer 127.0.0.1: health check, unwrap and a rekey job all refuse, and nothing reaches it."""
    key = keys.tenant_key_create(tenant=tenant, actor=actor, primary=config)  # wrapped through the allowed address
    job = keys.kms_config_make_primary(config=config, actor=actor)  # moves the older versions under it
    for name in names:
        dns.answer(name, [FORBIDDEN])
    keyring.clear_caches()  # what a new process or worker starts with: no connection kept open

    health = keys.kms_config_check(config=config)
    assert not health.ok and health.error_code == "egress-denied", health
    with pytest.raises(errors.EgressDenied, match="not a public address"):
        keyring.unwrap_tenant_key(tenant, key.version)
    try:
        job = jobs.job_run(job.pk)
    except jobs.ChunkPaused:
        job.refresh_from_db()
    assert job.state != "succeeded"
    assert "not a public address" in (job.last_error or "") + (job.pause_reason or "")
    assert trap.connections == 0


@pytest.fixture
def tls_moto(tmp_path, monkeypatch) -> Iterator[tuple[str, int, object]]:
    """moto over TLS on the allowed address; its certificate names kms.rebind.test and sts.rebind.test."""
    import boto3
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    pki, context = _server_tls(tmp_path, "kms.rebind.test", "sts.rebind.test")
    try:
        server = make_server(
            ALLOWED, 0, DomainDispatcherApplication(create_backend_app), threaded=True, ssl_context=context
        )
    except OSError as exc:
        require(False, f"moto over TLS on {ALLOWED}: {exc}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_CA_BUNDLE", str(pki.ca_path))
    admin = boto3.client(
        "kms",
        region_name="us-east-1",
        endpoint_url=f"https://{ALLOWED}:{server.server_port}",
        aws_access_key_id=AWS_TEST_CREDENTIALS["access_key_id"],
        aws_secret_access_key=AWS_TEST_CREDENTIALS["secret_access_key"],
        verify=str(pki.ca_path),
    )
    yield admin.create_key()["KeyMetadata"]["Arn"], server.server_port, server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("role", [False, True], ids=["keys", "role"])
def test_aws_kms_and_sts_custom_endpoints_cannot_be_rebound(
    dns, allow_stand_in, actor, tenant, tls_moto, monkeypatch, role
):
    arn, port, _ = tls_moto
    # a proxy from the environment would resolve the name itself, after the check: it is not used
    monkeypatch.setenv("HTTPS_PROXY", f"http://{FORBIDDEN}:{port}")
    trap = Listener(FORBIDDEN, port)
    try:
        names = ["kms.rebind.test", "sts.rebind.test"] if role else ["kms.rebind.test"]
        for name in names:
            dns.answer(name, [ALLOWED])
        settings_ = {"key_id": arn, "region": "us-east-1", "endpoint_url": f"https://kms.rebind.test:{port}"}
        if role:
            settings_["role_arn"] = "arn:aws:iam::123456789012:role/keycore-tenant"
            settings_["sts_endpoint_url"] = f"https://sts.rebind.test:{port}"
        config = keys.kms_config_create(
            tenant=tenant,
            owner="tenant",
            data=ConfigInput("aws", "Own AWS", settings_, dict(AWS_TEST_CREDENTIALS)),
            actor=actor,
        )
        _rebind_and_prove_every_path_refuses(dns, names, tenant, actor, config, trap)
    finally:
        trap.close()


def test_kmip_cannot_be_rebound(dns, allow_stand_in, actor, tenant, tmp_path):
    pki = make_kmip_pki(tmp_path / "kmip" / "pki", server_names=("kmip.rebind.test",))
    server = KmipServer(tmp_path / "kmip", pki, host=ALLOWED)
    try:
        server.start()
    except ServiceUnavailable as exc:
        require(False, f"PyKMIP server on {ALLOWED}: {exc}")
    trap = Listener(FORBIDDEN, server.port)
    try:
        uid = server.create_key()  # PyKMIP's own client, by address
        dns.answer("kmip.rebind.test", [ALLOWED])
        settings_, secrets = server.provider_settings(uid, host="kmip.rebind.test")
        config = keys.kms_config_create(
            tenant=tenant, owner="tenant", data=ConfigInput("kmip", "Own KMIP", settings_, secrets), actor=actor
        )
        _rebind_and_prove_every_path_refuses(dns, ["kmip.rebind.test"], tenant, actor, config, trap)
    finally:
        trap.close()
        server.stop()
