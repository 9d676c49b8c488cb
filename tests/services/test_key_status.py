"""A tenant's key status: one rule, stored on the tenant and counted for the dashboard in the transaction of every
change — a revoked key never reads "healthy", and the counts stay exact through every transition and bulk load."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from keycore.key_status import DARK, ConfigFacts, KeyStatus, describe, key_status_of
from keycore.models import KmsConfig, Tenant, TenantCount
from keycore.providers.base import HealthResult
from keycore.services import jobs, keys, tenants
from keycore.services.audit import Actor
from keycore.services.keys import ConfigInput
from keycore.services.summary import tenant_counts, tenant_counts_recompute
from tests.factories import make_member, make_tenant

SYSTEM = Actor.system("tests")


def _config(state="active", health="ok", owner="tenant", primary=True, holds=True):
    return ConfigFacts(owner=owner, state=state, health=health, is_primary=primary, holds_keys=holds)


# --- the rule, pure -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant_status", "configs", "expected"),
    [
        ("active", [_config()], KeyStatus.HEALTHY),
        ("active", [_config(health="unknown")], KeyStatus.HEALTHY),
        ("active", [_config(state="revoked")], KeyStatus.REVOKED),
        ("active", [_config(state="revoked", health="ok")], KeyStatus.REVOKED),
        ("active", [_config(state="revoked", owner="vendor")], KeyStatus.DISABLED),
        ("active", [_config(state="disabled")], KeyStatus.DISABLED),
        ("active", [], KeyStatus.DISABLED),
        ("active", [_config(health="failing")], KeyStatus.KMS_UNREACHABLE),
        ("active", [_config(), _config(state="decrypt_only", health="failing", primary=False)], KeyStatus.DEGRADED),
        ("active", [_config(), _config(state="revoked", primary=False)], KeyStatus.DEGRADED),
        # a blocked or failing key that holds none of the tenant's keys darkens nothing
        ("active", [_config(), _config(state="revoked", primary=False, holds=False)], KeyStatus.HEALTHY),
        ("active", [_config(), _config(state="active", health="failing", primary=False, holds=False)], "healthy"),
        ("suspended", [_config()], KeyStatus.SUSPENDED),
        ("suspended", [_config(state="revoked")], KeyStatus.REVOKED),
        ("offboarding", [_config(state="revoked")], KeyStatus.OFFBOARDED),
        ("offboarded", [_config()], KeyStatus.SHREDDED),
    ],
)
def test_the_rule_says_whether_the_data_can_be_read(tenant_status, configs, expected):
    assert key_status_of(tenant_status=tenant_status, configs=configs) == expected


@pytest.mark.parametrize("health", ["ok", "unknown", "failing"])
@pytest.mark.parametrize("tenant_status", ["active", "suspended"])
def test_a_revoked_own_key_is_never_healthy_whatever_its_kms_answers(health, tenant_status):
    status = key_status_of(tenant_status=tenant_status, configs=[_config(state="revoked", health=health)])
    assert status == KeyStatus.REVOKED
    assert describe(status).dark


def test_every_status_has_a_label_and_a_sentence_for_people():
    for status in KeyStatus:
        description = describe(status)
        assert description.label and description.sentence.startswith(description.label.split()[0])
        assert description.dark == (status in DARK)
    assert describe("revoked").sentence.startswith("Revoked by the tenant: its data cannot be")
    with pytest.raises(ValueError, match="is not a valid KeyStatus"):
        describe("fine")


# --- stored on the tenant, by every service -----------------------------------------------------


def _own_key(tenant, name="Acme's own key"):
    """A configuration the tenant owns (a local one relabelled: the rules are about ownership, not the KMS)."""
    config = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=ConfigInput("local", name, {}, {}), actor=SYSTEM
    )
    KmsConfig.objects.filter(pk=config.pk).update(owner="tenant")
    return KmsConfig.objects.get(pk=config.pk)


def _status(tenant) -> str:
    return Tenant.objects.values_list("key_status", flat=True).get(pk=tenant.pk)


def _assert_counts_exact():
    assert tenant_counts_recompute() == [], "the dashboard's counts drifted from the tenants"


@pytest.fixture
def owner_actor(tenant):
    return Actor.for_user(make_member(tenant, "owner@acme.example", "owner"))


def test_a_new_tenant_is_healthy_and_counted(tenant):
    assert _status(tenant) == KeyStatus.HEALTHY
    assert tenant_counts()["key_status"] == {"healthy": 1}
    assert tenant_counts()["status"] == {"active": 1}
    assert tenant_counts()["key_ownership"] == {"vendor": 1}
    _assert_counts_exact()


def test_revoking_the_own_key_shows_revoked_never_healthy_and_reenabling_heals(tenant, owner_actor):
    own = _own_key(tenant)
    job = keys.kms_config_make_primary(config=own, actor=owner_actor)
    jobs.job_run(job.pk)
    tenant.refresh_from_db()
    assert (tenant.key_status, tenant.key_ownership) == ("healthy", "tenant")
    keys.kms_config_check(config=own)  # its KMS answers: health stays ok …
    keys.kms_config_revoke(config=own, actor=owner_actor)
    tenant.refresh_from_db()
    assert tenant.health == "ok"
    assert tenant.key_status == KeyStatus.REVOKED, "… but the data is dark: revoked, not healthy"
    keys.kms_config_check(config=own)
    assert _status(tenant) == KeyStatus.REVOKED, "a later health check does not make a revoked key healthy"
    assert tenant_counts()["key_status"] == {"revoked": 1}
    _assert_counts_exact()
    keys.kms_config_reenable(config=KmsConfig.objects.get(pk=own.pk), actor=owner_actor)
    assert _status(tenant) == KeyStatus.HEALTHY
    assert tenant_counts()["key_status"] == {"healthy": 1}
    _assert_counts_exact()


def test_disabling_the_vendor_key_is_disabled(tenant):
    primary = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    keys.kms_config_disable(config=primary, actor=SYSTEM)
    assert _status(tenant) == KeyStatus.DISABLED
    keys.kms_config_reenable(config=KmsConfig.objects.get(pk=primary.pk), actor=SYSTEM)
    assert _status(tenant) == KeyStatus.HEALTHY
    keys.kms_config_revoke(config=KmsConfig.objects.get(pk=primary.pk), actor=SYSTEM)
    assert _status(tenant) == KeyStatus.DISABLED, "a revoked vendor key is not 'revoked by the tenant'"
    _assert_counts_exact()


def test_health_checks_move_the_status_both_ways(tenant):
    primary = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    keys.kms_config_record_health(config=primary, result=HealthResult(False, "connection refused", 0.0))
    assert _status(tenant) == KeyStatus.KMS_UNREACHABLE
    assert tenant_counts()["key_status"] == {"kms_unreachable": 1}
    keys.kms_config_record_health(config=primary, result=HealthResult(True, "ok", 3.0))
    assert _status(tenant) == KeyStatus.HEALTHY
    _assert_counts_exact()


def test_an_old_key_still_holding_tenant_keys_degrades_until_the_job_moves_them(tenant, owner_actor):
    vendor_key = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    own = _own_key(tenant)
    job = keys.kms_config_make_primary(config=own, actor=owner_actor)
    assert _status(tenant) == KeyStatus.HEALTHY
    keys.kms_config_record_health(config=vendor_key, result=HealthResult(False, "timed out", 0.0))
    assert _status(tenant) == KeyStatus.DEGRADED, "v1 is only under the failing vendor key: its data is dark"
    jobs.job_run(job.pk)
    assert _status(tenant) == KeyStatus.HEALTHY, "the finished job took v1 off the vendor key: nothing depends on it"
    _assert_counts_exact()


def test_demoting_retiring_and_destroying_a_vendor_key_keep_it_healthy(tenant):
    other = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=ConfigInput("local", "Spare", {}, {}), actor=SYSTEM
    )
    keys.kms_config_decrypt_only(config=other, actor=SYSTEM)
    assert _status(tenant) == KeyStatus.HEALTHY
    keys.kms_config_retire(config=KmsConfig.objects.get(pk=other.pk), actor=SYSTEM)
    assert _status(tenant) == KeyStatus.HEALTHY
    _assert_counts_exact()


def test_tenant_status_changes_move_key_status_and_counts(tenant, other_tenant):
    tenants.tenant_set_status(tenant=tenant, transition="suspend", actor=SYSTEM)
    assert _status(tenant) == KeyStatus.SUSPENDED
    assert tenant_counts()["status"] == {"active": 1, "suspended": 1}
    tenants.tenant_set_status(tenant=tenant, transition="reactivate", actor=SYSTEM)
    assert _status(tenant) == KeyStatus.HEALTHY
    tenants.tenant_set_status(tenant=tenant, transition="offboard", actor=SYSTEM)
    assert _status(tenant) == KeyStatus.OFFBOARDED
    assert tenant_counts()["status"] == {"active": 1, "offboarding": 1}
    Tenant.objects.filter(pk=tenant.pk).update(shred_after=timezone.now())  # the grace period is over
    tenants.tenant_shred(tenant=tenant, actor=SYSTEM)
    tenant.refresh_from_db()
    assert (tenant.status, tenant.key_status) == ("offboarded", KeyStatus.SHREDDED)
    assert tenant_counts()["status"] == {"active": 1, "offboarded": 1}
    assert tenant_counts()["key_status"] == {"healthy": 1, "shredded": 1}
    _assert_counts_exact()


def test_counts_stay_exact_through_bulk_onboarding(db):
    for n in range(3):
        make_tenant(f"one-{n}", f"One {n}")
    call_command("seed_tenants", 40, "--batch", "9", "--random-seed", "1", stdout=io.StringIO())
    assert tenant_counts()["status"] == {"active": 43}
    assert tenant_counts()["key_status"] == {"healthy": 43}
    assert TenantCount.objects.filter(dimension="status", value="active").count() == TenantCount.SLOTS
    _assert_counts_exact()
    for tenant in Tenant.objects.filter(external_id__startswith="seed-")[:5]:
        tenants.tenant_set_status(tenant=tenant, transition="suspend", actor=SYSTEM)
    assert tenant_counts()["key_status"] == {"healthy": 38, "suspended": 5}
    _assert_counts_exact()


def test_the_check_command_finds_and_repairs_drift(tenant, other_tenant):
    out = io.StringIO()
    call_command("tenant_counts", stdout=out)
    assert "matches a recount of 2 tenant" in out.getvalue()
    slot = tenant.pk % TenantCount.SLOTS
    TenantCount.objects.filter(dimension="key_status", value="healthy", slot=slot).update(count=7)
    with pytest.raises(CommandError, match="1 count"):
        call_command("tenant_counts", stdout=io.StringIO())
    out = io.StringIO()
    call_command("tenant_counts", "--repair", stdout=out)
    assert "key_status=healthy: counted" in out.getvalue()
    assert tenant_counts()["key_status"] == {"healthy": 2}
    _assert_counts_exact()


@pytest.mark.django_db(transaction=True)
def test_the_migration_computes_existing_tenants_status_and_counts():
    """A database from before key statuses: each tenant gets the rule's answer, and the counts match a recount."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    healthy = make_tenant("healthy", "Healthy Co")
    revoked = make_tenant("revoked", "Revoked Co")
    suspended = make_tenant("suspended", "Suspended Co")
    own = _own_key(revoked)
    jobs.job_run(keys.kms_config_make_primary(config=own, actor=SYSTEM).pk)
    keys.kms_config_revoke(config=KmsConfig.objects.get(pk=own.pk), actor=SYSTEM)
    tenants.tenant_set_status(tenant=suspended, transition="suspend", actor=SYSTEM)

    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    (target,) = [node for node in graph.leaf_nodes() if node[0] == "keycore"]
    (adding,) = [node for node in graph.nodes if node[0] == "keycore" and node[1].endswith("_key_status_and_counts")]
    (before,) = graph.node_map[adding].parents
    try:
        executor.migrate([before.key])
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate([target])
    assert _status(healthy) == KeyStatus.HEALTHY
    assert _status(revoked) == KeyStatus.REVOKED
    assert _status(suspended) == KeyStatus.SUSPENDED
    assert tenant_counts()["key_status"] == {"healthy": 1, "revoked": 1, "suspended": 1}
    assert TenantCount.objects.filter(dimension="key_status", value="shredded").count() == TenantCount.SLOTS
    _assert_counts_exact()


@pytest.mark.django_db(transaction=True)
def test_concurrent_changes_of_many_tenants_keep_the_counts_exact():
    """Threads change different tenants at once (same count rows, opposite directions): no lost update, no deadlock."""
    import threading

    from django.db import connection

    # more tenants than count slots: some share a slot, so their changes meet on the same rows
    many = [make_tenant(f"busy-{n}", f"Busy {n}") for n in range(TenantCount.SLOTS + 4)]
    failures: list[BaseException] = []

    def churn(tenant, rounds: int):
        try:
            primary = KmsConfig.objects.get(tenant=tenant, is_primary=True)
            for i in range(rounds):
                tenants.tenant_set_status(tenant=tenant, transition="suspend", actor=SYSTEM)
                keys.kms_config_record_health(config=primary, result=HealthResult(i % 2 == 0, "probe", 1.0))
                tenants.tenant_set_status(tenant=tenant, transition="reactivate", actor=SYSTEM)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=churn, args=(t, 2)) for t in many]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    assert tenant_counts()["status"] == {"active": len(many)}
    assert sum(tenant_counts()["key_status"].values()) == len(many)
    _assert_counts_exact()
