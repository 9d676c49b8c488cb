"""Where KeyCore may connect on a tenant's behalf, and connecting only there.

A tenant types hosts into KeyCore: its KMS (a KMIP host, AWS custom endpoints,
any network provider) and its SIEM (a webhook URL, a syslog host). Without a
policy that is a way to make KeyCore's servers connect into the vendor's
internal network (server-side request forgery) or load an arbitrary library.

The rule, for every connection (saving and testing a configuration, health
checks, rekey jobs, every delivery):

1. resolve the name once (:func:`resolve`, the only place KeyCore resolves a
   name it is about to connect to);
2. check every address it resolved to against the policy; a name with *any*
   address the policy refuses is refused whole (:func:`pinned_addresses`);
3. connect to those addresses (:func:`connect`), never to the name again. The
   name is kept for TLS (SNI and the certificate's name check) and for the HTTP
   ``Host`` header.

Checking one resolution and then letting a client connect by name (a second
resolution) is DNS rebinding: the attacker's name answers a public address to
the check and 127.0.0.1 to the connection. A refused connection is refused
before any packet is sent, so the answer is the same whether a port is open or
not: the results are no port scanner.

Policies (:class:`EgressPolicy`):

* a **tenant's KMS configuration**: public addresses, plus the CIDRs of
  ``KEYCORE_TENANT_KMS_ALLOWED_NETWORKS`` (e.g. a VPN range through which
  tenants' on-premises KMIP servers are reached); what a configuration would load
  on KeyCore's servers (a PKCS#11 module) is the provider's to refuse
  (``check_tenant_settings``), since only the provider knows what its settings load.
  Vendor-created configurations are the vendor's own infrastructure: no policy.
* an **event destination** (webhook, syslog): public addresses, plus
  ``KEYCORE_EVENT_DESTINATIONS_ALLOWED_NETWORKS``; anything at all with
  ``KEYCORE_EVENT_DESTINATIONS_ALLOW_PRIVATE`` (the embedded default).

Hooks, one per kind of client, all built on :func:`connect`:

* a plain socket: :func:`connect` (syslog; KMIP through PyKMIP's connection);
* urllib3: :func:`pool_manager`, or :func:`pinned_pool_classes` for a pool
  manager someone else builds (webhooks);
* botocore: :func:`pin_botocore_client` (AWS KMS and STS);
* requests (hvac for OpenBao/Vault, any requests-based SDK):
  :func:`pin_requests_session` — see docs/providers.md.

Connections that follow a policy do not go through HTTP proxies from the
environment: a proxy would resolve the name itself, after the check.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import urllib3
from django.conf import settings
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from keycore import errors

if TYPE_CHECKING:
    from keycore.providers.base import KeyProvider

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- policies -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EgressPolicy:
    """Which addresses a connection made for ``purpose`` may reach: public ones, and ``allowed_networks``."""

    #: what the connection is for, in messages: "a tenant's KMS configuration"
    purpose: str
    #: the setting an operator changes to open a private range, in messages
    setting: str
    allowed_networks: tuple[Network, ...] = ()
    #: no restriction at all (the embedded default for event destinations)
    allow_all: bool = False

    def permits(self, address: Address) -> bool:
        if self.allow_all:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if address.is_multicast:
            return False
        return address.is_global or any(address in network for network in self.allowed_networks)


@cache
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def tenant_kms_policy() -> EgressPolicy:
    """Where a tenant's own KMS configuration may make KeyCore connect."""
    return EgressPolicy(
        "a tenant's KMS configuration",
        "KEYCORE_TENANT_KMS_ALLOWED_NETWORKS",
        _networks(tuple(settings.KEYCORE_TENANT_KMS_ALLOWED_NETWORKS)),
    )


def event_destination_policy() -> EgressPolicy:
    """Where a tenant's SIEM destination (webhook, syslog) may make KeyCore connect."""
    return EgressPolicy(
        "an event destination",
        "KEYCORE_EVENT_DESTINATIONS_ALLOWED_NETWORKS",
        _networks(tuple(settings.KEYCORE_EVENT_DESTINATIONS_ALLOWED_NETWORKS)),
        allow_all=settings.KEYCORE_EVENT_DESTINATIONS_ALLOW_PRIVATE,
    )


# --- resolve once, check, connect to that address -----------------------------------------------------


@dataclass(frozen=True)
class PinnedAddress:
    """One address a name resolved to, checked, and the socket address to connect to."""

    family: int
    sockaddr: tuple

    @property
    def address(self) -> Address:
        return ipaddress.ip_address(self.sockaddr[0].split("%")[0])


def resolve(host: str, port: int | None) -> list[tuple[int, tuple]]:
    """(family, socket address) for every address of ``host``: the one place KeyCore resolves a name it connects to.

    Raises ``socket.gaierror`` when the name does not resolve.
    """
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    seen: list[tuple[int, tuple]] = []
    for family, _, _, _, sockaddr in infos:
        if (family, sockaddr) not in seen:
            seen.append((family, sockaddr))
    return seen


def pinned_addresses(host: str, port: int | None, policy: EgressPolicy | None) -> list[PinnedAddress]:
    """Resolve ``host`` once and check every address; raise ``EgressDenied`` if the policy refuses any.

    ``policy`` None (the vendor's own infrastructure) checks nothing but still pins:
    the connection goes to the addresses of this one resolution.
    """
    found = [PinnedAddress(family, sockaddr) for family, sockaddr in resolve(host, port)]
    if policy is not None:
        for pinned in found:
            if not policy.permits(pinned.address):
                log.warning(
                    "egress refused: %s resolves to %s, outside the policy for %s", host, pinned.address, policy.purpose
                )
                raise errors.EgressDenied(refusal(host, policy))
    return found


def refusal(host: str, policy: EgressPolicy) -> str:
    """Why a connection is refused; names no resolved address and no port (nothing to learn from it)."""
    return (
        f"KeyCore does not connect to {host} for {policy.purpose}: it is not a public address. If it is reached "
        f"through a private network, ask the vendor to allow that network ({policy.setting})."
    )


def connect(
    host: str,
    port: int,
    policy: EgressPolicy | None,
    *,
    timeout: Any = None,
    source_address: tuple[str, int] | None = None,
    socket_options: Iterable[tuple] | None = None,
) -> socket.socket:
    """A TCP connection to ``host``:``port`` through the policy: to an address of one checked resolution.

    Tries the addresses in the resolver's order, like ``socket.create_connection``;
    ``timeout`` is seconds (or None for blocking; anything else leaves the default).
    """
    last: OSError | None = None
    for pinned in pinned_addresses(host, port, policy):
        sock = socket.socket(pinned.family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            if timeout is None or isinstance(timeout, int | float):
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(pinned.sockaddr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        return sock
    raise last or OSError(f"{host} has no address")


# --- per-client hooks ---------------------------------------------------------------------------------


class _PinnedConnection:
    """Mixin for urllib3 connection classes: the socket comes from :func:`connect` under ``egress_policy``."""

    egress_policy: EgressPolicy | None = None

    def _new_conn(self) -> socket.socket:
        try:
            return connect(
                self._dns_host,
                self.port,
                self.egress_policy,
                timeout=self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc


def pinned_pool_classes(
    policy: EgressPolicy | None, bases: Mapping[str, type[HTTPConnectionPool]] | None = None
) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes (by scheme) whose connections go through :func:`connect` under ``policy``.

    ``bases`` are the pool classes to extend (botocore has its own); urllib3's by default.
    """
    bases = bases or {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}
    classes = {}
    for scheme, pool in bases.items():
        connection = type(
            f"Pinned{pool.ConnectionCls.__name__}", (_PinnedConnection, pool.ConnectionCls), {"egress_policy": policy}
        )
        classes[scheme] = type(f"Pinned{pool.__name__}", (pool,), {"ConnectionCls": connection})
    return classes


def pool_manager(policy: EgressPolicy | None, **kwargs: Any) -> urllib3.PoolManager:
    """A urllib3 PoolManager whose every connection follows ``policy`` (kwargs as for PoolManager)."""
    manager = urllib3.PoolManager(**kwargs)
    manager.pool_classes_by_scheme = pinned_pool_classes(policy)
    return manager


def pin_botocore_client(client: Any, policy: EgressPolicy | None) -> None:
    """Make every connection of a boto3/botocore client follow ``policy``.

    botocore builds its urllib3 pool manager inside the client's endpoint and has no
    option to pass one in; this swaps the pool classes it uses. The client must have
    been created with ``Config(proxies={})`` (no proxies from the environment).
    Refuses (rather than connecting unchecked) if botocore's internals are not as expected.
    """
    from botocore.httpsession import URLLib3Session

    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    if not isinstance(session, URLLib3Session) or not hasattr(session, "_manager"):
        raise errors.KmsMisconfigured("This botocore version cannot be held to the egress policy; refusing to connect.")
    if session._proxy_config.settings.get("proxies") or getattr(session._proxy_config, "_proxies", None):
        raise errors.KmsMisconfigured("Connections under the egress policy do not go through HTTP proxies.")
    classes = pinned_pool_classes(policy, session._pool_classes_by_scheme)
    session._pool_classes_by_scheme = classes
    session._manager.pool_classes_by_scheme = classes


def pin_requests_session(session: Any, policy: EgressPolicy | None) -> None:
    """Make every connection of a ``requests.Session`` follow ``policy`` (for hvac and other requests-based SDKs).

    Mounts an adapter whose pool manager uses :func:`pinned_pool_classes`, and stops
    the session from taking proxies (or credentials) from the environment.
    """
    from requests.adapters import HTTPAdapter  # requests comes with the SDKs that need this hook

    class PinnedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pinned_pool_classes(policy)

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            raise errors.EgressDenied("Connections under the egress policy do not go through HTTP proxies.")

    session.trust_env = False
    session.proxies = {}
    adapter = PinnedAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)


# --- checking a configuration before it is saved ---------------------------------------------------------


def check_tenant_egress(provider_cls: type[KeyProvider], provider_settings: Mapping[str, Any]) -> None:
    """Raise InvalidInput when a tenant's configuration names somewhere the policy does not allow.

    An early, field-level answer when a configuration is saved or tested; the
    connections themselves are checked again, each time, by :func:`connect`.
    """
    provider_cls.check_tenant_settings(provider_settings)  # what it would load here (a PKCS#11 module)
    policy = tenant_kms_policy()
    for target in provider_cls.egress(provider_settings):
        try:
            pinned_addresses(target, None, policy)
        except errors.EgressDenied as exc:
            raise errors.InvalidInput(exc.detail, field_errors={"__all__": [exc.detail]}) from None
        except OSError as exc:
            message = f"{target} does not resolve."
            raise errors.InvalidInput(
                f"{target} does not resolve ({getattr(exc, 'strerror', None) or exc}).",
                field_errors={"__all__": [message]},
            ) from None


def check_literal_host(host: str, policy: EgressPolicy) -> None:
    """Refuse, without resolving anything, a host that is a refused address or a loopback name.

    For settings saved now and connected to later (event destinations), where a name
    may legitimately not resolve yet; the connection checks again.
    """
    if policy.allow_all:
        return
    lowered = host.lower().rstrip(".")
    if lowered in ("localhost", "localhost.localdomain") or lowered.endswith(".localhost"):
        raise errors.EgressDenied(refusal(host, policy))
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    if not policy.permits(address):
        raise errors.EgressDenied(refusal(host, policy))
