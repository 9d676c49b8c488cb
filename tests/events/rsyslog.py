"""A real rsyslogd (Debian's ``rsyslog`` and ``rsyslog-gnutls`` packages) run by the tests with a
configuration of their own: a plain TCP input and TLS inputs (one that asks for no client certificate,
one that requires a valid one) on ports the system picks, every received message written to a file,
one line each. ``.ci/run`` installs the packages; without them the tests skip here and fail in CI.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.conftest import require

RSYSLOGD = "/usr/sbin/rsyslogd"


def rsyslog_available() -> bool:
    return Path(RSYSLOGD).exists() and any(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so"))


class Rsyslog:
    """rsyslogd in the foreground with its own configuration and working folder; stopped by :meth:`stop`.

    ``max_message_size`` is rsyslog's ``global(maxMessageSize=…)`` (its default is 8k): what a
    receiver of KeyCore's events must set (docs/events.md).
    """

    def __init__(self, folder: Path, *, tls: TlsFiles | None = None, max_message_size: str = "64k") -> None:
        require(rsyslog_available(), "rsyslogd with its GnuTLS driver (Debian: rsyslog, rsyslog-gnutls)")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.received = folder / "received.log"
        self.received.touch()
        ports = {"tcp": folder / "tcp.port"}
        inputs = [f'input(type="imtcp" port="0" listenPortFileName="{ports["tcp"]}" ruleset="keep")']
        tls_globals = ""
        if tls is not None:
            ports["tls"] = folder / "tls.port"
            ports["tls_client_auth"] = folder / "tls_client_auth.port"
            tls_globals = (
                f'defaultNetstreamDriverCAFile="{tls.ca}" defaultNetstreamDriverCertFile="{tls.cert}" '
                f'defaultNetstreamDriverKeyFile="{tls.key}"'
            )
            inputs.append(
                f'input(type="imtcp" port="0" listenPortFileName="{ports["tls"]}" ruleset="keep" '
                'streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")'
            )
            inputs.append(
                f'input(type="imtcp" port="0" listenPortFileName="{ports["tls_client_auth"]}" ruleset="keep" '
                'streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")'
            )
        config = folder / "rsyslog.conf"
        config.write_text(
            f"""
global(workDirectory="{folder}" maxMessageSize="{max_message_size}" {tls_globals})
module(load="imtcp" maxSessions="100")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="keep") {{
  action(type="omfile" file="{self.received}" template="raw" flushOnTXEnd="on" asyncWriting="off")
}}
{chr(10).join(inputs)}
"""
        )
        self.log = (folder / "rsyslogd.out").open("wb")
        self.process = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(config), "-i", str(folder / "rsyslogd.pid")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.ports: dict[str, int] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(self.ports) < len(ports):
            if self.process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {(folder / 'rsyslogd.out').read_text()[-2000:]}")
            for name, path in ports.items():
                text = path.read_text().strip() if path.exists() else ""
                if text.isdigit():
                    self.ports[name] = int(text)
            time.sleep(0.05)
        if len(self.ports) < len(ports):
            self.stop()
            raise RuntimeError("rsyslogd did not start listening within 20 s")

    def lines(self) -> list[str]:
        return [line for line in self.received.read_text(errors="replace").splitlines() if line]

    def wait_for(self, count: int, timeout: float = 15) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.lines()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        return self.lines()

    def output(self) -> str:
        return (self.folder / "rsyslogd.out").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


class TlsFiles:
    """A CA, the server's certificate and key (localhost / 127.0.0.1), and a client certificate and key."""

    def __init__(self, folder: Path) -> None:
        from tests.events.receivers import make_pki

        folder.mkdir(parents=True, exist_ok=True)
        pki = make_pki(folder)
        self.ca, self.cert, self.key = pki["ca_path"], pki["server_cert_path"], pki["server_key_path"]
        self.ca_pem = pki["ca_pem"]
        self.client_cert_pem, self.client_key_pem = pki["client_cert_pem"], pki["client_key_pem"]
