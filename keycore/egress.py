"""The operator's egress policy for configurations a *tenant* brings.

A tenant administrator types hosts and paths into KeyCore; without a policy,
that is a way to make KeyCore's servers connect to the vendor's internal
network (server-side request forgery) or load an arbitrary shared library.
So before a tenant's configuration is tested or saved:

* every host it names must resolve only to public addresses, or to addresses
  inside ``KEYCORE_TENANT_KMS_ALLOWED_NETWORKS`` (CIDRs the operator opens, e.g.
  a VPN range through which tenants' on-premises KMIP servers are reached);
* whatever else it would make KeyCore do on its own servers (load a PKCS#11
  module) is the provider's to refuse (``check_tenant_settings``), since only
  the provider knows what its settings load.

Vendor-created configurations are the vendor's own infrastructure and are not
restricted. Names are resolved when the configuration is checked; a KMS whose
DNS later changes to a private address is not re-checked on every call (the
network's own egress rules are the second line).
"""

from __future__ import annotations

import ipaddress
import socket

from django.conf import settings

from keycore import errors
from keycore.providers.base import KeyProvider


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in settings.KEYCORE_TENANT_KMS_ALLOWED_NETWORKS]


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise errors.InvalidInput(
            f"{host} does not resolve ({exc.strerror or exc}).", field_errors={"__all__": [f"{host} does not resolve."]}
        ) from exc
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def check_tenant_egress(provider_cls: type[KeyProvider], provider_settings) -> None:
    """Raise InvalidInput when a tenant's configuration reaches somewhere the operator has not allowed."""
    provider_cls.check_tenant_settings(provider_settings)
    allowed = _allowed_networks()
    for target in provider_cls.egress(provider_settings):
        for address in _addresses(target):
            if address.is_global or any(address in network for network in allowed):
                continue
            message = (
                f"KeyCore does not connect to {target} ({address}) for tenant configurations: it is not a public "
                "address. If your KMS is reached through a private network, ask the vendor to allow it "
                "(KEYCORE_TENANT_KMS_ALLOWED_NETWORKS)."
            )
            raise errors.InvalidInput(message, field_errors={"__all__": [message]})
