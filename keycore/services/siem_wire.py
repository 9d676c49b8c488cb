"""How a batch of security events reaches a SIEM: the bytes on the wire, and sending them. No database writes.

Webhook: ``POST`` of ``{"destination", "tenant", "events": [...]}`` (JSON), signed
with HMAC-SHA256 over ``"<timestamp>." + body`` under the destination's secret:
headers ``X-KeyCore-Timestamp`` and ``X-KeyCore-Signature: v1=<hex>``. Redirects are
not followed; any 2xx is success.

Syslog: RFC 5424 messages over TCP, optionally TLS (RFC 5425, with a CA bundle),
framed by octet counting (RFC 6587 §3.4.1); the message is the event's JSON
document, with its id and kind also in structured data.

The destinations, their cursors, retries and dead letters are keycore/services/forwarding.py's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from typing import Any

import urllib3
from django.conf import settings
from django.utils import timezone

from keycore import egress, errors
from keycore.models.events import DestinationKind, EventDestination
from keycore.sealing import root_keyring

log = logging.getLogger(__name__)

SECRET_PURPOSE = "event-destination-secret"  # noqa: S105 - a sealing purpose, not a secret
SYSLOG_SD_ID = "keycore@32473"  # 32473: the example enterprise number of RFC 5612
SYSLOG_FACILITIES = {
    4: "auth",
    10: "authpriv",
    13: "log audit",
    16: "local0",
    17: "local1",
    18: "local2",
    19: "local3",
    20: "local4",
    21: "local5",
    22: "local6",
    23: "local7",
}
DEFAULT_FACILITY = 13
SEVERITY_WARNING, SEVERITY_NOTICE, SEVERITY_INFO = 4, 5, 6
#: seconds a TLS syslog server has after the handshake to refuse the client before events are sent
SYSLOG_TLS_SETTLE = 0.3
MAX_RESPONSE_BYTES = 300


def unseal_secret(destination: EventDestination) -> bytes:
    """The destination's sealed secret (webhook signing secret, or the syslog client key), opened."""
    if not destination.sealed_secret:
        return b""
    return root_keyring().unseal(bytes(destination.sealed_secret), purpose=SECRET_PURPOSE, context=str(destination.uid))


def load_client_certificate(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """Load a certificate and its key into ``context`` from memory: ``ssl`` reads them only from files, so
    they go through an anonymous in-memory file (Linux ``memfd``) — the key never touches a disk."""
    fd = os.memfd_create("keycore-client-certificate", os.MFD_CLOEXEC)
    try:
        os.write(fd, (cert_pem.strip() + "\n" + key_pem.strip() + "\n").encode())
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SendResult:
    ok: bool
    detail: str
    status_code: int | None = None
    duration_ms: float = 0.0


def webhook_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``v1=`` + hex HMAC-SHA256 over ``timestamp + "." + body`` (what receivers recompute)."""
    return "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def send_webhook(
    destination: EventDestination, documents: list[dict[str, Any]], head: dict[str, Any] | None = None
) -> SendResult:
    url = destination.settings["url"]
    started = time.perf_counter()
    body_fields: dict[str, Any] = {
        "destination": str(destination.uid),
        "tenant": destination.tenant.external_id,
        "events": documents,
    }
    if head is not None:
        body_fields["head"] = head
    try:
        body = json.dumps(
            body_fields,
            separators=(",", ":"),
            sort_keys=True,
            default=str,
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "KeyCore-Events/1",
            "X-KeyCore-Timestamp": timestamp,
            "X-KeyCore-Signature": webhook_signature(unseal_secret(destination), timestamp, body),
            "X-KeyCore-Delivery": uuid.uuid4().hex,
            "X-KeyCore-Events": f"{documents[0]['seq']}-{documents[-1]['seq']}" if documents else "",
        }
        # the connection goes to an address the egress policy checked, resolved once (keycore/egress.py)
        http = egress.pool_manager(
            egress.event_destination_policy(), retries=False, timeout=settings.KEYCORE_EVENT_DELIVERY_TIMEOUT
        )
        try:
            # redirects are not followed: a webhook that redirects is a failed delivery, never a request elsewhere
            response = http.request("POST", url, body=body, headers=headers, redirect=False, preload_content=False)
            status, reason = response.status, response.reason or ""
            response.read(MAX_RESPONSE_BYTES)
            response.release_conn()
        finally:
            http.clear()
    except errors.KeyCoreError as exc:
        return SendResult(False, exc.detail[:500], None, _ms(started))
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return SendResult(False, f"cannot reach the webhook: {reason}"[:500], None, _ms(started))
    if 200 <= status < 300:
        return SendResult(True, f"HTTP {status}", status, _ms(started))
    return SendResult(False, f"HTTP {status} {reason}".strip()[:500], status, _ms(started))


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _sd_escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printable(value: str, limit: int) -> str:
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def syslog_message(document: dict[str, Any], *, facility: int, app_name: str, hostname: str) -> bytes:
    """One RFC 5424 message: header, structured data naming the event, and the JSON document as MSG."""
    kind = document.get("kind")
    if kind == "key_use":
        severity = SEVERITY_INFO if document.get("result") == "ok" else SEVERITY_WARNING
    else:
        severity = SEVERITY_NOTICE
    msgid = _printable(str(kind or "event"), 32)  # key_use, admin, test, chain_head
    params = {
        "id": document.get("id"),
        "tenant": document.get("tenant") or "",
        "seq": document.get("seq"),
        "kind": kind,
        "action": document.get("action") or document.get("operation") or "",
        "result": document.get("result", "ok") if kind != "chain_head" else None,
        "hash": document.get("hash"),
    }
    sd = (
        "["
        + SYSLOG_SD_ID
        + "".join(f' {k}="{_sd_escape(v)}"' for k, v in params.items() if v is not None and v != "")
        + "]"
    )
    timestamp = document.get("time") or timezone.now().isoformat()
    header = (
        f"<{facility * 8 + severity}>1 {timestamp} {_printable(hostname, 255)} {_printable(app_name, 48)} - {msgid}"
    )
    body = json.dumps(document, separators=(",", ":"), sort_keys=True, default=str)
    return f"{header} {sd} {body}".encode()


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: the message length in decimal, a space, the message."""
    return str(len(message)).encode() + b" " + message


def _open_syslog_connection(s: dict[str, Any]) -> socket.socket:
    """TCP to the syslog server: to an address of one resolution the egress policy checked (keycore/egress.py)."""
    return egress.connect(
        s["host"], int(s["port"]), egress.event_destination_policy(), timeout=settings.KEYCORE_EVENT_DELIVERY_TIMEOUT
    )


def _syslog_tls_context(destination: EventDestination) -> ssl.SSLContext:
    s = destination.settings
    context = ssl.create_default_context(cadata=s.get("ca_bundle") or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if s.get("client_cert"):
        load_client_certificate(context, s["client_cert"], unseal_secret(destination).decode())
    return context


def _tls_settle(sock: ssl.SSLSocket, timeout: float) -> None:
    """Give the server a moment after the handshake to refuse us before anything is sent.

    A server checks the client's certificate only once the client's handshake is over (TLS 1.3,
    and rsyslog's own check after any handshake); it then closes the connection, often without an
    alert, and if it had already read our events and close_notify, that close looks like receipt.
    So: wait up to ``SYSLOG_TLS_SETTLE`` seconds for the server to speak — a session ticket is fine,
    an end or an alert is a refusal.
    """
    sock.settimeout(SYSLOG_TLS_SETTLE)
    try:
        data = sock.recv(1)
    except TimeoutError:
        data = None  # nothing to say: the server accepted us
    except ssl.SSLEOFError:
        data = b""
    finally:
        sock.settimeout(timeout)
    if data == b"":
        raise _Refused(
            "the syslog server closed the connection after the TLS handshake: it refused this client "
            "(does it require a client certificate?)"
        )
    if data:
        raise _Refused("the syslog server sent data before any was sent to it")


class _Refused(Exception):
    """The syslog server refused the connection in a way that has no error code of its own."""


def _read_to_end(sock: socket.socket) -> None:
    """Half-close our side and read until the server closes its own: then it has read all we sent.

    A reset (the server closed without reading) or the timeout is a failure: the batch is sent again.
    """
    sock.shutdown(socket.SHUT_WR)
    received = 0
    while chunk := sock.recv(4096):
        received += len(chunk)  # a syslog server sends nothing; read what one sends, within reason
        if received > 64 * 1024:
            raise OSError("the syslog server keeps sending data instead of closing the connection")


def send_syslog(
    destination: EventDestination, documents: list[dict[str, Any]], head: dict[str, Any] | None = None
) -> SendResult:
    """Send the batch, then make sure the server received it before calling it delivered.

    Syslog over TCP has no acknowledgement, and ``sendall`` returning says only that the bytes
    are in this machine's buffer. So the connection is closed in order — TLS ``close_notify``,
    then our side of TCP — and read to end-of-file: a server closes its side after reading
    everything before our close. A reset, a TLS alert (a refused client certificate arrives
    after the handshake under TLS 1.3) or no end within the timeout is a failure.
    """
    s = destination.settings
    started = time.perf_counter()
    hostname = s.get("hostname") or socket.gethostname()
    payload = b"".join(
        octet_frame(
            syslog_message(
                doc,
                facility=s.get("facility", DEFAULT_FACILITY),
                app_name=s.get("app_name", "keycore"),
                hostname=hostname,
            )
        )
        for doc in [*documents, *([head] if head is not None else [])]
    )
    timeout = settings.KEYCORE_EVENT_DELIVERY_TIMEOUT
    try:
        raw = _open_syslog_connection(s)
        try:
            if s.get("tls"):
                sock = _syslog_tls_context(destination).wrap_socket(
                    raw, server_hostname=s.get("server_name") or s["host"]
                )
                _tls_settle(sock, timeout)
                sock.sendall(payload)
                try:
                    raw = sock.unwrap()  # our close_notify, and the server's in return
                except ssl.SSLEOFError:
                    pass  # the server closed the connection after our close_notify, without its own: it read to it
                else:
                    _read_to_end(raw)
            else:
                raw.sendall(payload)
                _read_to_end(raw)
        finally:
            raw.close()
    except errors.KeyCoreError as exc:
        return SendResult(False, exc.detail[:500], None, _ms(started))
    except TimeoutError:
        detail = f"the syslog server did not confirm receipt within {timeout:g} s; the events are sent again"
        return SendResult(False, detail, None, _ms(started))
    except _Refused as exc:
        return SendResult(False, str(exc)[:500], None, _ms(started))
    except ssl.SSLError as exc:
        return SendResult(False, f"TLS with the syslog server failed: {exc.reason or exc}"[:500], None, _ms(started))
    except (ConnectionResetError, BrokenPipeError):
        detail = "the syslog server closed the connection without reading the events; they are sent again"
        return SendResult(False, detail, None, _ms(started))
    except OSError as exc:
        return SendResult(False, f"cannot reach the syslog server: {exc.strerror or exc}"[:500], None, _ms(started))
    return SendResult(True, f"{len(documents)} message(s) received by the syslog server", None, _ms(started))


def send(
    destination: EventDestination, documents: list[dict[str, Any]], *, head: dict[str, Any] | None = None
) -> SendResult:
    """Send a batch of event documents, with the chain's signed head (``head``: the receiver keeps the last
    one; a webhook gets it as ``head``, syslog as a last message with MSGID ``chain_head``)."""
    if destination.kind == DestinationKind.WEBHOOK:
        return send_webhook(destination, documents, head)
    return send_syslog(destination, documents, head)
