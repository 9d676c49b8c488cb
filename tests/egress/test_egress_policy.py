"""The egress policy itself: which addresses pass, and one resolution per connection (no connection to a
public address is ever made here: the workplace allows loopback traffic only)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from keycore import egress, errors
from tests.egress.conftest import ALLOWED, FORBIDDEN

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("address", "permitted"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),  # loopback in IPv6 clothing
        ("::ffff:8.8.8.8", True),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.0.10", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("fd00::1", False),
        ("fe80::1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("ff0e::1", False),  # global-scope multicast
        ("192.0.2.1", False),  # documentation ranges are not the internet either
    ],
)
def test_only_public_addresses_pass_a_policy_without_allowed_networks(settings, address, permitted):
    settings.KEYCORE_TENANT_KMS_ALLOWED_NETWORKS = []
    assert egress.tenant_kms_policy().permits(ipaddress.ip_address(address)) is permitted


def test_the_operator_opens_private_ranges_per_policy(settings):
    settings.KEYCORE_TENANT_KMS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    settings.KEYCORE_EVENT_DESTINATIONS_ALLOW_PRIVATE = False
    settings.KEYCORE_EVENT_DESTINATIONS_ALLOWED_NETWORKS = ["192.168.7.0/24"]
    kms, siem = egress.tenant_kms_policy(), egress.event_destination_policy()
    assert kms.permits(ipaddress.ip_address("10.1.2.3")) and not kms.permits(ipaddress.ip_address("10.2.0.1"))
    assert not kms.permits(ipaddress.ip_address("192.168.7.9"))
    assert siem.permits(ipaddress.ip_address("192.168.7.9")) and not siem.permits(ipaddress.ip_address("10.1.2.3"))
    settings.KEYCORE_EVENT_DESTINATIONS_ALLOW_PRIVATE = True
    assert egress.event_destination_policy().permits(ipaddress.ip_address("127.0.0.1"))


def test_each_connection_checks_the_addresses_of_its_own_single_resolution(dns, allow_stand_in):
    """The rebinding name: public (the stand-in) to the first question, loopback to the next."""
    dns.answer("kms.rebind.test", [ALLOWED], [FORBIDDEN])
    policy = egress.tenant_kms_policy()
    first = egress.pinned_addresses("kms.rebind.test", 5696, policy)
    assert [p.sockaddr for p in first] == [(ALLOWED, 5696)]
    with pytest.raises(errors.EgressDenied, match="not a public address"):
        egress.pinned_addresses("kms.rebind.test", 5696, policy)
    assert dns.queries["kms.rebind.test"] == 2


def test_a_name_with_any_forbidden_address_is_refused_whole(dns, allow_stand_in):
    dns.answer("mixed.rebind.test", [ALLOWED, FORBIDDEN])
    with pytest.raises(errors.EgressDenied):
        egress.pinned_addresses("mixed.rebind.test", 443, egress.tenant_kms_policy())


def test_the_refusal_names_neither_the_address_nor_the_port(dns, allow_stand_in, trap):
    dns.answer("internal.rebind.test", [FORBIDDEN])
    with pytest.raises(errors.EgressDenied) as refused:
        egress.connect("internal.rebind.test", trap.port, egress.tenant_kms_policy(), timeout=2)
    assert FORBIDDEN not in refused.value.detail and str(trap.port) not in refused.value.detail
    assert trap.connections == 0


def test_vendor_infrastructure_is_pinned_but_not_restricted(dns, trap):
    dns.answer("vendor.rebind.test", [FORBIDDEN])
    sock = egress.connect("vendor.rebind.test", trap.port, None, timeout=2)
    sock.close()
    assert dns.queries["vendor.rebind.test"] == 1


def test_an_unresolvable_name_is_a_resolution_error(dns, allow_stand_in):
    with pytest.raises(socket.gaierror):
        egress.connect("nowhere.rebind.test", 443, egress.tenant_kms_policy(), timeout=2)


def test_a_saved_configuration_is_checked_by_the_same_rule(dns, allow_stand_in):
    from keycore.providers.registry import get_provider_class

    dns.answer("kmip.rebind.test", [FORBIDDEN])
    with pytest.raises(errors.InvalidInput, match="not a public address"):
        egress.check_tenant_egress(get_provider_class("kmip"), {"host": "kmip.rebind.test"})
