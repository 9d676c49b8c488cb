"""Fixtures of the egress tests: the scripted DNS server, listeners on an allowed and a forbidden address.

The workplace allows traffic to loopback only, so an *allowed* address stands in
for a public one: 127.0.0.2, opened by the operator's allowed-networks setting,
while 127.0.0.1 stays forbidden like any internal address. (Which addresses count
as public is tested without connecting, in test_egress_policy.py.)
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from keycore import egress
from tests.egress.dns import ScriptedDns

ALLOWED = "127.0.0.2"  # plays the public address the check sees first
FORBIDDEN = "127.0.0.1"  # the internal address a rebinding name answers next


@pytest.fixture(scope="session")
def dns_server() -> Iterator[ScriptedDns]:
    server = ScriptedDns().start()
    yield server
    server.stop()


@pytest.fixture
def dns(dns_server: ScriptedDns, monkeypatch: pytest.MonkeyPatch) -> ScriptedDns:
    """Names under rebind.test resolve through the scripted server; others as usual (see tests/egress/dns.py)."""
    dns_server.reset()
    real = egress.resolve

    def resolve(host: str, port: int | None):
        if host.rstrip(".").lower().endswith(".rebind.test"):
            return dns_server.resolve(host, port)
        return real(host, port)

    monkeypatch.setattr(egress, "resolve", resolve)
    return dns_server


@pytest.fixture
def allow_stand_in(settings) -> None:
    """The operator's policy, with the stand-in for a public address opened (and only it)."""
    settings.KEYCORE_TENANT_KMS_ALLOWED_NETWORKS = [f"{ALLOWED}/32"]
    settings.KEYCORE_EVENT_DESTINATIONS_ALLOW_PRIVATE = False
    settings.KEYCORE_EVENT_DESTINATIONS_ALLOWED_NETWORKS = [f"{ALLOWED}/32"]


class Listener:
    """Accepts TCP (or TLS) on ``host``:``port`` in a thread and keeps what each connection sent."""

    def __init__(self, host: str, port: int = 0, *, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_server((host, port))
        self.sock.settimeout(0.1)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.tls = tls
        self.connections = 0
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        data = b""
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            while chunk := conn.recv(65536):
                data += chunk
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()
            self.received.append(data)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)


def listener_pair(tls: ssl.SSLContext | None = None) -> tuple[Listener, Listener]:
    """A listener on the allowed address and a trap on the forbidden one, on the same port."""
    for _ in range(20):
        allowed = Listener(ALLOWED, tls=tls)
        try:
            return allowed, Listener(FORBIDDEN, allowed.port)
        except OSError:  # that port is taken on 127.0.0.1: try another
            allowed.close()
    raise RuntimeError("no port free on both addresses")


@pytest.fixture
def trap() -> Iterator[Listener]:
    """A listener on the forbidden address that no test may ever reach."""
    listener = Listener(FORBIDDEN)
    yield listener
    listener.close()
