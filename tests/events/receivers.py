"""Real receivers for forwarded events: an HTTP server and a syslog listener (TCP or TLS) in threads."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def events(self) -> list[dict]:
        return json.loads(self.body)["events"]


@dataclass
class WebhookReceiver:
    """Answers each POST with ``status`` (change it to make the receiver fail or recover)."""

    status: int = 200
    redirect_to: str = ""
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status = receiver.status
                receiver.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                if receiver.redirect_to:
                    self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/siem/keycore"

    def accepted_events(self) -> list[dict]:
        return [event for r in self.requests if 200 <= r.status < 300 for event in r.events]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SyslogListener:
    """Accepts TCP (or TLS) connections and splits what arrives into octet-counted frames."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.frames: list[bytes] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                conn.settimeout(5)
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                self.frames.extend(split_octet_frames(data))
            except (OSError, ssl.SSLError, ValueError) as exc:
                self.errors.append(str(exc))
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self.thread.join(timeout=5)


class ResettingListener:
    """Accepts each connection and resets it at once, reading nothing (a crashed or misconfigured receiver)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.accepted = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self.thread.join(timeout=5)


def split_octet_frames(data: bytes) -> list[bytes]:
    """RFC 6587 §3.4.1: MSG-LEN SP SYSLOG-MSG, repeated."""
    frames = []
    while data:
        length, space, rest = data.partition(b" ")
        if not space or not length.isdigit():
            raise ValueError(f"not octet-counted framing: {data[:40]!r}")
        n = int(length)
        if len(rest) < n:
            raise ValueError("a frame is cut short")
        frames.append(rest[:n])
        data = rest[n:]
    return frames


def make_pki(folder: Path) -> dict:
    """A CA; a server certificate for localhost/127.0.0.1 and a client certificate, both signed by it.

    Returns the PEMs and the paths of the CA and the server's certificate and key (for rsyslog).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "KeyCore test syslog CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(common_name: str, usage, names=None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    server_cert, server_key = issue(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_cert, client_key = issue("keycore-events", ExtendedKeyUsageOID.CLIENT_AUTH)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    paths = {
        "ca_path": folder / "ca.pem",
        "server_cert_path": folder / "server.pem",
        "server_key_path": folder / "server.key",
    }
    paths["ca_path"].write_bytes(ca_pem)
    paths["server_cert_path"].write_bytes(server_cert)
    paths["server_key_path"].write_bytes(server_key)
    return {
        **paths,
        "ca_pem": ca_pem.decode(),
        "client_cert_pem": client_cert.decode(),
        "client_key_pem": client_key.decode(),
    }


def make_tls_material(folder: Path) -> tuple[str, ssl.SSLContext]:
    """A CA and a server certificate for localhost/127.0.0.1 signed by it: (CA PEM, server context)."""
    folder.mkdir(parents=True, exist_ok=True)
    pki = make_pki(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server_cert_path"], pki["server_key_path"])
    return pki["ca_pem"], context
