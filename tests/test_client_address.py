"""Behind reverse proxies, the client's address is the rightmost hop no trusted proxy wrote.

Sign-in rate limits count per client address, and audit events record it. Behind a
proxy every connection comes from the proxy: counting failures against the proxy
lets one attacker lock every user out (a tenant admin who must revoke a key
included), and taking the first X-Forwarded-For hop records whatever the attacker
wrote there.
"""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from django.urls import reverse

from keycore.models import AuditEvent
from keycore.roles import TenantRole
from keycore.services.audit import client_ip
from tests.factories import PASSWORD, make_member

PROXY = "10.0.0.5"
ATTACKER = "203.0.113.9"
ADMIN = "198.51.100.7"


@pytest.fixture
def one_proxy(settings):
    settings.KEYCORE_TRUSTED_PROXY_COUNT = 1  # what KEYCORE_BEHIND_PROXY=1 sets (tests/test_settings.py)
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


def _request(remote: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


@pytest.mark.parametrize(
    ("proxies", "remote", "forwarded", "expected"),
    [
        (0, PROXY, "1.2.3.4", PROXY),  # no trusted proxy: the header is the client's claim, ignored
        (1, PROXY, None, PROXY),  # behind the proxy, but it added nothing: the peer
        (1, PROXY, ATTACKER, ATTACKER),
        (1, PROXY, f"1.2.3.4, {ATTACKER}", ATTACKER),  # a forged first hop is not the client
        (1, PROXY, f"1.2.3.4,5.6.7.8 ,  {ATTACKER}", ATTACKER),
        (2, PROXY, f"1.2.3.4, {ATTACKER}, 10.0.0.9", ATTACKER),  # CDN then load balancer
        (2, PROXY, ATTACKER, ATTACKER),  # fewer hops than proxies: every one was written by a proxy
        (1, PROXY, f"1.2.3.4, {ATTACKER}:51234", ATTACKER),
        (1, PROXY, "1.2.3.4, [2001:db8::7]:443", "2001:db8::7"),
        (1, PROXY, "1.2.3.4, ::ffff:203.0.113.9", ATTACKER),
        (1, PROXY, "1.2.3.4, unknown", PROXY),  # not an address: the peer, never the forged hop
    ],
)
def test_the_client_is_the_rightmost_hop_no_trusted_proxy_wrote(settings, proxies, remote, forwarded, expected):
    settings.KEYCORE_TRUSTED_PROXY_COUNT = proxies
    assert client_ip(_request(remote, forwarded)) == expected


def _sign_in(client, email: str, password: str, forwarded: str):
    return client.post(
        reverse("account_login"),
        {"login": email, "password": password},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=forwarded,
    )


@pytest.mark.django_db
def test_one_attacker_behind_the_proxy_does_not_lock_everyone_out(client, tenant, one_proxy):
    admin = make_member(tenant, "admin@acme.example", TenantRole.ADMIN, mfa=False)
    for number in range(12):  # past the per-address limit (10 a minute), on addresses nobody has
        response = _sign_in(client, f"nobody{number}@acme.example", "guess", ATTACKER)
    assert b"Too many failed login attempts" in response.content  # the attacker is stopped ...
    response = _sign_in(client, admin.email, PASSWORD, ADMIN)
    assert response.status_code == 302, "... and the tenant admin, behind the same proxy, is not"


@pytest.mark.django_db
def test_forging_x_forwarded_for_does_not_escape_the_limit(client, one_proxy):
    for number in range(12):  # a new forged first hop every time; the proxy appends the real address
        response = _sign_in(client, f"nobody{number}@acme.example", "guess", f"192.0.2.{number}, {ATTACKER}")
    assert b"Too many failed login attempts" in response.content


@pytest.mark.django_db
def test_audit_events_record_the_real_client_not_the_forged_hop(client, tenant, one_proxy):
    person = make_member(tenant, "person@acme.example", TenantRole.AUDITOR, mfa=False)
    _sign_in(client, person.email, "not the password", f"192.0.2.1, {ATTACKER}")
    assert AuditEvent.objects.get(action="auth.sign_in_failed").source_ip == ATTACKER
    _sign_in(client, person.email, PASSWORD, f"192.0.2.1, {ADMIN}")
    assert AuditEvent.objects.get(action="auth.signed_in").source_ip == ADMIN
