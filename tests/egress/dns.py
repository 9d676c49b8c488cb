"""A real DNS server for the egress tests: scripted answers per name, over UDP, from dnslib.

The server answers ``A`` queries for names under :data:`ZONE` from a script: each
name has a list of answers (each a list of addresses), one per query, the last
one repeated — "a public address first, loopback after" is ``answer(name,
["127.0.0.2"], ["127.0.0.1"])``. Every query is logged, so a test can count
how often KeyCore resolved a name. Names outside the zone are NXDOMAIN.

How KeyCore reaches it: every name KeyCore connects to on a tenant's behalf is
resolved by exactly one function, :func:`keycore.egress.resolve`; the tests
replace that function with :meth:`ScriptedDns.resolve`, a DNS client asking this
server. That is sound because the zone exists *only* in this server: a client
that resolved a tenant's name any other way (a library connecting by name, a
second resolution) would ask the system resolver, get "name not known", and the
test would fail — the fixture cannot hide a connection that is not pinned.
"""

from __future__ import annotations

import socket
import threading
from collections import defaultdict

from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

ZONE = "rebind.test"


class _Resolver(BaseResolver):
    def __init__(self, owner: ScriptedDns) -> None:
        self.owner = owner

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        answers = self.owner._next(name, QTYPE[request.q.qtype])
        if answers is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for address in answers:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=0))
        return reply


class ScriptedDns:
    """The server, its script and its query log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[list[str]]] = {}
        self.queries: dict[str, int] = defaultdict(int)
        self.server = DNSServer(_Resolver(self), port=0, address="127.0.0.1", logger=DNSLogger("-request,-reply"))
        self.port = self.server.server.server_address[1]

    def start(self) -> ScriptedDns:
        self.server.start_thread()
        return self

    def stop(self) -> None:
        self.server.stop()

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self.queries.clear()

    def answer(self, name: str, *answers: list[str]) -> None:
        """Answer the next queries for ``name`` with these address lists, in order; the last one repeats."""
        with self._lock:
            self._scripts[name.lower()] = [list(a) for a in answers]

    def _next(self, name: str, qtype: str) -> list[str] | None:
        with self._lock:
            script = self._scripts.get(name)
            if script is None:
                return None
            if qtype != "A":
                return []  # the name exists, with IPv4 addresses only
            self.queries[name] += 1
            return script.pop(0) if len(script) > 1 else script[0]

    def resolve(self, host: str, port: int | None) -> list[tuple[int, tuple]]:
        """What :func:`keycore.egress.resolve` returns, asked of this server over UDP."""
        reply = DNSRecord.parse(DNSRecord.question(host, "A").send("127.0.0.1", self.port, timeout=5))
        if reply.header.rcode != RCODE.NOERROR or not reply.rr:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, (str(rr.rdata), port or 0)) for rr in reply.rr if rr.rtype == QTYPE.A]
