"""Shared fixtures: the three people of every access test (an owner, a member, an outsider),
vendor staff of each role, a real Celery worker, moto's AWS KMS endpoint, an OpenBao server, and the switch that
turns a missing service into a failure in CI."""

from __future__ import annotations

import os

import pytest

REQUIRE_SERVICES = os.environ.get("KEYCORE_REQUIRE_SERVICES") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip a test whose external piece is missing here, but fail it in CI (KEYCORE_REQUIRE_SERVICES=1)."""
    if condition:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"required in CI but missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Tests roll back the database; the key and tenant caches must not outlive a test."""
    yield
    from django.core.cache import cache

    from keycore.services.keyring import clear_caches
    from keycore.services.keyuse import recorder

    cache.clear()
    clear_caches()
    with recorder._lock:
        recorder._counts.clear()
        recorder._details.clear()


@pytest.fixture
def actor():
    from keycore.services.audit import Actor

    return Actor.system("tests")


@pytest.fixture
def tenant(db, actor):
    from tests.factories import make_tenant

    return make_tenant("acme", "Acme Corporation")


@pytest.fixture
def other_tenant(db, actor):
    from tests.factories import make_tenant

    return make_tenant("globex", "Globex Industries")


@pytest.fixture
def owner(tenant):
    from keycore.roles import TenantRole
    from tests.factories import make_member

    return make_member(tenant, "owner@acme.example", TenantRole.OWNER)


@pytest.fixture
def member(tenant):
    from keycore.roles import TenantRole
    from tests.factories import make_member

    return make_member(tenant, "auditor@acme.example", TenantRole.AUDITOR)


@pytest.fixture
def outsider(other_tenant):
    from keycore.roles import TenantRole
    from tests.factories import make_member

    return make_member(other_tenant, "owner@globex.example", TenantRole.OWNER)


@pytest.fixture
def vendor_admin(db):
    from keycore.roles import VendorRole
    from tests.factories import make_staff

    return make_staff("admin@vendor.example", VendorRole.ADMIN)


@pytest.fixture
def vendor_operator(db):
    from keycore.roles import VendorRole
    from tests.factories import make_staff

    return make_staff("operator@vendor.example", VendorRole.OPERATOR)


@pytest.fixture
def vendor_auditor(db):
    from keycore.roles import VendorRole
    from tests.factories import make_staff

    return make_staff("auditor@vendor.example", VendorRole.AUDITOR)


@pytest.fixture
def celery_worker(transactional_db, tmp_path):
    """A real Celery worker (Redis in CI) on a queue of its own; this process enqueues onto it."""
    from tests.workers import Worker

    worker = Worker(tmp_path)
    worker.configure_app()
    worker.start()
    yield worker
    worker.stop()
    worker.restore_app()


@pytest.fixture(scope="session")
def openbao_server(tmp_path_factory):
    """An OpenBao server (TLS, Raft storage) for the session; tests that stop or seal one start their own."""
    from tests.providers.servers import ServiceUnavailable, start_openbao_server

    try:
        server = start_openbao_server(tmp_path_factory.mktemp("openbao"))
    except ServiceUnavailable as exc:
        require(False, f"OpenBao: {exc}")
    yield server
    server.stop()


@pytest.fixture
def moto():
    """moto's AWS KMS endpoint, served in this process for this test.

    A test may stop() it to play a KMS outage and start() it again: keys are kept
    (moto's state is per process), and every test gets a running server.
    """
    from tests.providers.servers import ServiceUnavailable, start_moto_server

    try:
        server = start_moto_server()
    except ServiceUnavailable as exc:
        require(False, f"moto server: {exc}")
    yield server
    server.stop()
