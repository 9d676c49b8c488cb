"""Every audited action writes exactly one event, with the right actor, tenant and target, in the same
transaction as its change — a table over the services, so an action that writes no event (or two) fails here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from keycore.models import (
    AuditEvent,
    DeadLetter,
    KmsConfig,
    Membership,
    RekeyJob,
    Tenant,
    User,
    VendorStaff,
)
from keycore.models.keys import ConfigOwner
from keycore.services import apikeys, event_export, forwarding, jobs, keyring, keys, tenants, vendor_keys
from keycore.services.audit import Actor
from keycore.services.keys import ConfigInput

pytestmark = pytest.mark.django_db

IP, AGENT = "203.0.113.7", "Mozilla/5.0 (audit table)"


@dataclass
class World:
    """What a case acts on: acme, its owner (the acting user), a vendor admin, and helpers."""

    tenant: Tenant
    owner: User
    staff: User
    actor: Actor
    notes: dict[str, Any]

    def vendor_config(self, name: str = "Second vendor key") -> KmsConfig:
        return keys.kms_config_create(
            tenant=self.tenant,
            owner=ConfigOwner.VENDOR,
            data=ConfigInput(provider="local", name=name, settings={}, secrets={}),
            actor=Actor.system("setup"),
        )

    def primary(self) -> KmsConfig:
        return KmsConfig.objects.get(tenant=self.tenant, is_primary=True)


@dataclass
class Case:
    """``run`` performs the action and returns its target; ``target`` says how the event names it."""

    action: str
    run: Callable[[World], Any]
    on_tenant: bool = True  # on acme's chain (else the vendor's)
    also: tuple[str, ...] = ()  # other actions the same call writes (each once): they are separate changes
    target_type: str | None = None
    setup: Callable[[World], None] | None = None


def _target_id(target) -> str:
    return str(getattr(target, "uid", None) or target.pk)


def _invite(w: World, email: str = "new@acme.example"):
    invitation, token = tenants.invitation_create(
        tenant=w.tenant, email=email, role="admin", actor=Actor.system("setup"), send=False
    )
    w.notes["invitation"], w.notes["token"] = invitation, token
    return invitation


def _new_user(email: str) -> User:
    from tests.factories import UserFactory

    return UserFactory(email=email)


def _accept(w: World):
    _invite(w, "joiner@acme.example")
    user = _new_user("joiner@acme.example")
    tenants.invitation_accept(token=w.notes["token"], user=user, actor=w.actor)
    return Membership.objects.get(tenant=w.tenant, user=user)


def _accept_staff(w: World):
    _, token = tenants.invitation_create(email="new-staff@vendor.example", role="operator", actor=Actor.system("s"))
    user = _new_user("new-staff@vendor.example")
    tenants.invitation_accept(token=token, user=user, actor=w.actor)
    return VendorStaff.objects.get(user=user)


def _member(w: World) -> Membership:
    from tests.factories import make_member

    make_member(w.tenant, "colleague@acme.example", "admin", mfa=False)
    return Membership.objects.get(user__email="colleague@acme.example")


def _removed_member(w: World):
    membership = _member(w)
    tenants.membership_remove(membership=membership, actor=w.actor)
    return membership


def _staff(email: str = "op2@vendor.example") -> VendorStaff:
    from tests.factories import make_staff

    return VendorStaff.objects.get(user=make_staff(email, "operator", mfa=False))


def _started_job(w: World) -> RekeyJob:
    return keys.kms_config_make_primary(config=w.vendor_config(), actor=Actor.system("setup"))


def _cancelled_job(w: World) -> RekeyJob:
    job = _started_job(w)
    return jobs.job_cancel(job=job, actor=Actor.system("setup"))


def _vendor_key(w: World):
    return vendor_keys.vendor_key_create(
        name="EU key", provider="local", settings_={}, secrets={}, actor=Actor.system("setup")
    )


def _api_key(w: World):
    key, _ = apikeys.api_key_create(name="onboarding", scopes=["tenants:read"], actor=Actor.system("setup"))
    return key


def _rotated(w: World):
    new, _ = apikeys.api_key_rotate(key=_api_key(w), actor=w.actor)
    return new


def _destination(w: World, **extra):
    destination, _ = forwarding.destination_create(
        tenant=w.tenant,
        kind="syslog",
        name="SIEM",
        settings_={"host": "127.0.0.1", "port": 9},
        actor=Actor.system("setup"),
        **extra,
    )
    return destination


def _webhook(w: World):
    destination, _ = forwarding.destination_create(
        tenant=w.tenant, kind="webhook", name="hook", settings_={"url": "http://127.0.0.1:9/"}, actor=Actor.system("s")
    )
    return destination


def _replayed(w: World):
    destination = _destination(w)
    DeadLetter.objects.create(
        destination=destination, tenant=w.tenant, seq=1, event={"id": "x", "seq": 1}, attempts=8, last_error="HTTP 500"
    )
    forwarding.dead_letters_replay(destination=destination, actor=w.actor)
    return destination


def _deleted_destination(w: World):
    destination = _destination(w)
    forwarding.destination_delete(destination=destination, actor=w.actor)
    return destination


def _second_key_version(w: World) -> None:
    from keycore.models import TenantKey

    w.notes["v1"] = TenantKey.objects.get(tenant=w.tenant, version=1)
    keys.tenant_key_create(tenant=w.tenant, actor=Actor.system("setup"))


def _offboarded(w: World) -> Tenant:
    tenants.tenant_set_status(tenant=w.tenant, transition="offboard", actor=Actor.system("setup"))
    return w.tenant


def _shredder(w: World, *, grace_over: bool = False, asked_by: User | None = None) -> None:
    """Crypto-shredding is for vendor administrators: the acting user becomes one too, acme is offboarding."""
    VendorStaff.objects.get_or_create(user=w.owner, defaults={"role": "admin"})
    _offboarded(w)
    if grace_over:
        Tenant.objects.filter(pk=w.tenant.pk).update(shred_after=timezone.now() - timedelta(seconds=1))
    if asked_by is not None:
        tenants.tenant_shred_early_request(tenant=w.tenant, actor=Actor.for_user(asked_by))


CASES: dict[str, Case] = {
    # tenants
    "tenant_create": Case(
        "tenant.created",
        lambda w: tenants.tenant_create(
            external_id="initech",
            name="Initech",
            actor=w.actor,
            admins=[tenants.AdminInvite("boss@initech.example")],
            send=False,
        ),
        on_tenant=False,
        also=("kms_config.created", "tenant_key.created", "invitation.created"),
    ),
    "tenant_create_many": Case(
        "tenant.created",
        lambda w: tenants.tenant_create_many(
            items=[tenants.NewTenant("initech", "Initech", (tenants.AdminInvite("boss@initech.example"),))],
            actor=w.actor,
            send=False,
        )[0],
        on_tenant=False,
        also=("kms_config.created", "tenant_key.created", "invitation.created"),
    ),
    "tenant_update": Case(
        "tenant.updated", lambda w: tenants.tenant_update(tenant=w.tenant, actor=w.actor, name="Acme")
    ),
    "tenant_suspend": Case(
        "tenant.suspend", lambda w: tenants.tenant_set_status(tenant=w.tenant, transition="suspend", actor=w.actor)
    ),
    "tenant_reactivate": Case(
        "tenant.reactivate",
        lambda w: tenants.tenant_set_status(tenant=w.tenant, transition="reactivate", actor=w.actor),
        setup=lambda w: tenants.tenant_set_status(tenant=w.tenant, transition="suspend", actor=Actor.system("s")),
    ),
    "tenant_offboard": Case(
        "tenant.offboard", lambda w: tenants.tenant_set_status(tenant=w.tenant, transition="offboard", actor=w.actor)
    ),
    "tenant_shred": Case(
        "tenant.shredded",
        lambda w: (tenants.tenant_shred(tenant=w.tenant, actor=w.actor), w.tenant)[1],
        also=("kms_config.destroyed",),
        setup=lambda w: _shredder(w, grace_over=True),
    ),
    "tenant_shred_early_request": Case(
        "tenant.shred_early_requested",
        lambda w: tenants.tenant_shred_early_request(tenant=w.tenant, actor=w.actor, reason="contract ended"),
        setup=_shredder,
    ),
    "tenant_shred_early_approve": Case(
        "tenant.shred_early_approved",
        lambda w: tenants.tenant_shred_early_approve(tenant=w.tenant, actor=w.actor),
        setup=lambda w: _shredder(w, asked_by=w.staff),
    ),
    # invitations and members
    "invitation_create": Case(
        "invitation.created",
        lambda w: tenants.invitation_create(
            tenant=w.tenant, email="new@acme.example", role="admin", actor=w.actor, send=False
        )[0],
    ),
    "invitation_resend": Case(
        "invitation.resent",
        lambda w: tenants.invitation_resend(invitation=_invite(w), actor=w.actor)[0],
    ),
    "invitation_revoke": Case(
        "invitation.revoked", lambda w: tenants.invitation_revoke(invitation=_invite(w), actor=w.actor)
    ),
    "invitation_accept": Case("member.joined", _accept),
    "staff_invitation_create": Case(
        "invitation.created",
        lambda w: tenants.invitation_create(email="x@vendor.example", role="auditor", actor=w.actor, send=False)[0],
        on_tenant=False,
    ),
    "staff_invitation_accept": Case("staff.joined", _accept_staff, on_tenant=False),
    "membership_set_role": Case(
        "member.role_changed",
        lambda w: tenants.membership_set_role(membership=_member(w), role="auditor", actor=w.actor),
    ),
    "membership_remove": Case("member.removed", _removed_member),
    "staff_create": Case(
        "staff.created",
        lambda w: tenants.staff_create(email="new@vendor.example", role="auditor", actor=w.actor),
        on_tenant=False,
    ),
    "staff_set_role": Case(
        "staff.role_changed",
        lambda w: tenants.staff_set_role(staff=_staff(), role="auditor", actor=w.actor),
        on_tenant=False,
    ),
    "staff_deactivate": Case(
        "staff.deactivated", lambda w: tenants.staff_deactivate(staff=_staff(), actor=w.actor), on_tenant=False
    ),
    # KMS configurations and tenant keys
    "kms_config_create": Case(
        "kms_config.created",
        lambda w: keys.kms_config_create(
            tenant=w.tenant,
            owner=ConfigOwner.VENDOR,
            data=ConfigInput(provider="local", name="Another", settings={}, secrets={}),
            actor=w.actor,
        ),
    ),
    "kms_config_make_primary": Case(
        "kms_config.made_primary",
        lambda w: (lambda c: (keys.kms_config_make_primary(config=c, actor=w.actor), c)[1])(w.vendor_config()),
        also=("rekey_job.started",),
    ),
    "kms_config_decrypt_only": Case(
        "kms_config.decrypt_only", lambda w: keys.kms_config_decrypt_only(config=w.vendor_config(), actor=w.actor)
    ),
    "kms_config_disable": Case(
        "kms_config.disabled", lambda w: keys.kms_config_disable(config=w.primary(), actor=w.actor)
    ),
    "kms_config_revoke": Case(
        "kms_config.revoked", lambda w: keys.kms_config_revoke(config=w.primary(), actor=w.actor)
    ),
    "kms_config_reenable": Case(
        "kms_config.reenabled",
        lambda w: keys.kms_config_reenable(config=w.primary(), actor=w.actor),
        setup=lambda w: keys.kms_config_revoke(config=w.primary(), actor=Actor.system("s")),
    ),
    "kms_config_retire": Case(
        "kms_config.retired", lambda w: keys.kms_config_retire(config=w.vendor_config(), actor=w.actor)
    ),
    "kms_config_destroy": Case(
        "kms_config.destroyed", lambda w: keys.kms_config_destroy(config=w.vendor_config(), actor=w.actor)
    ),
    "kms_config_replace_secrets": Case(
        "kms_config.secrets_replaced",
        lambda w: keys.kms_config_replace_secrets(config=w.primary(), secrets={}, actor=w.actor),
    ),
    "tenant_key_create": Case("tenant_key.created", lambda w: keys.tenant_key_create(tenant=w.tenant, actor=w.actor)),
    # jobs
    "job_cancel": Case("rekey_job.cancelled", lambda w: jobs.job_cancel(job=_started_job(w), actor=w.actor)),
    "job_retry": Case("rekey_job.retried", lambda w: jobs.job_retry(job=_cancelled_job(w), actor=w.actor)),
    "job_start_rewrap": Case(
        "rekey_job.started",
        lambda w: jobs.job_start_rewrap(tenant=w.tenant, source=None, target=w.primary(), actor=w.actor),
    ),
    "job_start_kek_rotation": Case(
        "rekey_job.started", lambda w: jobs.job_start_kek_rotation(config=w.primary(), actor=w.actor)
    ),
    "job_start_kek_rotation_everywhere": Case(
        "rekey_job.started", lambda w: jobs.job_start_kek_rotation(actor=w.actor), on_tenant=False
    ),
    "job_start_root_rotation": Case(
        "rekey_job.started", lambda w: jobs.job_start_root_rotation(actor=w.actor), on_tenant=False
    ),
    "job_start_key_retirement": Case(
        "tenant_key.retiring",
        lambda w: (jobs.job_start_key_retirement(key=w.notes["v1"], actor=w.actor), w.notes["v1"])[1],
        setup=_second_key_version,
    ),
    "job_confirm_key_retirement": Case(
        "rekey_job.confirmed",
        lambda w: jobs.job_confirm_key_retirement(
            job=jobs.job_start_key_retirement(key=w.notes["v1"], actor=Actor.system("setup")),
            actor=w.actor,
            rekeyed=True,
        ),
        setup=_second_key_version,
    ),
    "job_start_vendor_key_move": Case(
        "rekey_job.started",
        lambda w: jobs.job_start_vendor_key_move(vendor_key=_vendor_key(w), tenants=[w.tenant], actor=w.actor)[0],
        on_tenant=False,
    ),
    # vendor keys
    "vendor_key_create": Case(
        "vendor_key.created",
        lambda w: vendor_keys.vendor_key_create(name="EU", provider="local", settings_={}, secrets={}, actor=w.actor),
        on_tenant=False,
    ),
    "vendor_key_make_default": Case(
        "vendor_key.made_default",
        lambda w: vendor_keys.vendor_key_make_default(vendor_key=_vendor_key(w), actor=w.actor),
        on_tenant=False,
    ),
    "vendor_key_replace_secrets": Case(
        "vendor_key.secrets_replaced",
        lambda w: vendor_keys.vendor_key_replace_secrets(vendor_key=_vendor_key(w), secrets={}, actor=w.actor),
        on_tenant=False,
    ),
    "vendor_key_retire": Case(
        "vendor_key.retired",
        lambda w: vendor_keys.vendor_key_retire(vendor_key=_vendor_key(w), actor=w.actor),
        on_tenant=False,
    ),
    # API keys
    "api_key_create": Case(
        "api_key.created",
        lambda w: apikeys.api_key_create(name="ci", scopes=["events:read"], actor=w.actor)[0],
        on_tenant=False,
    ),
    "api_key_revoke": Case(
        "api_key.revoked", lambda w: apikeys.api_key_revoke(key=_api_key(w), actor=w.actor), on_tenant=False
    ),
    "api_key_rotate": Case("api_key.rotated", _rotated, on_tenant=False),
    # security events: SIEM destinations, replays, exports
    "destination_create": Case(
        "event_destination.created",
        lambda w: forwarding.destination_create(
            tenant=w.tenant, kind="webhook", name="SIEM", settings_={"url": "http://127.0.0.1:9/x"}, actor=w.actor
        )[0],
    ),
    "destination_update": Case(
        "event_destination.updated",
        lambda w: forwarding.destination_update(destination=_destination(w), actor=w.actor, name="Renamed"),
    ),
    "destination_rotate_secret": Case(
        "event_destination.secret_rotated",
        lambda w: (lambda d: (forwarding.destination_rotate_secret(destination=d, actor=w.actor), d)[1])(_webhook(w)),
    ),
    "destination_disable": Case(
        "event_destination.disabled",
        lambda w: forwarding.destination_set_enabled(destination=_destination(w), enabled=False, actor=w.actor),
    ),
    "destination_delete": Case("event_destination.deleted", _deleted_destination),
    "destination_test": Case(
        "event_destination.tested",
        lambda w: (lambda d: (forwarding.destination_test(destination=d, actor=w.actor), d)[1])(_destination(w)),
    ),
    "dead_letters_replay": Case("event_destination.replay_requested", _replayed),
    "events_export": Case(
        "events.exported",
        lambda w: event_export.events_export_record(
            tenant=w.tenant, actor=w.actor, fmt="csv", f=event_export.ExportFilter()
        ),
        target_type="event_chain",
    ),
}


@pytest.fixture
def world(tenant, owner, vendor_admin):
    actor = Actor.for_user(owner, source_ip=IP, user_agent=AGENT)
    return World(tenant=tenant, owner=owner, staff=vendor_admin, actor=actor, notes={})


@pytest.mark.parametrize("name", list(CASES))
def test_every_audited_action_writes_exactly_one_event_with_the_right_actor_and_target(world, name):
    case = CASES[name]
    if case.setup:
        case.setup(world)
    before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    target = case.run(world)
    written = list(AuditEvent.objects.filter(id__gt=before).exclude(actor_label="system:setup").order_by("id"))
    by_action = Counter(e.action for e in written if e.actor_label == world.owner.email)
    assert by_action == Counter({case.action: 1, **dict.fromkeys(case.also, 1)}), (
        f"{name} wrote {sorted(by_action.elements())}"
    )
    (event,) = [e for e in written if e.action == case.action]
    assert event.actor_user_id == world.owner.pk and event.actor_api_key_id is None
    assert event.actor_label == world.owner.email
    assert (event.source_ip, event.user_agent) == (IP, AGENT)
    expected_tenant = world.tenant.pk if case.on_tenant else None
    if name in ("tenant_create", "tenant_create_many"):
        expected_tenant = target.pk  # a new tenant's first event starts its own chain
    assert event.tenant_id == expected_tenant
    assert event.chain == (f"tenant:{expected_tenant}" if expected_tenant else "vendor")
    if case.target_type == "event_chain":
        assert (event.target_type, event.target_id) == ("event_chain", f"tenant:{world.tenant.pk}")
    else:
        assert event.target_type == target._meta.model_name
        assert event.target_id == _target_id(target)
    assert event.target_repr


def test_the_table_covers_every_public_service_that_changes_something():
    """A new write service must join the table (or be listed here with the reason it writes no event)."""
    import inspect

    not_admin_actions = {
        # reads, checks and internal steps: no admin change of their own
        "tenants": {"validate_external_id", "validate_name", "invitation_url", "invitation_lookup", "shred_state"},
        "keys": {
            "kms_config_test_connection",
            "kms_config_check",
            "kms_config_record_health",
            "tenants_due_for_rotation",
            "tenant_key_rotate_if_due",  # the schedule's system actor; tenant_key_create writes the event
        },
        "keyring": {
            # reaching keys changes nothing; key_history_record is a step of audited services
            "read_epoch",
            "refresh_epoch",  # reads the epoch now and empties this process's caches if it moved
            "bump_epoch",
            "key_cache",
            "tenant_cache",
            "clear_caches",
            "wrap_context",
            "provider_for",
            "build_provider",
            "kms_egress_policy",
            "describe_config",
            "current_key_version",
            "unwrap_tenant_key",
            "cache_tenant_key",
            "cache_ttl",
            "unwrap_raw",
            "wrap_tenant_key",
            "key_history_record",
            "provider_for_vendor_key",
        },
        # the key's format and hash, and the last-used stamp (a use of a key is not a change to it)
        "apikeys": {"generate_key", "hash_key", "parse_prefix", "api_key_mark_used", "api_key_lookup"},
        "jobs": {
            # what workers and schedules do (system actors), and settings
            "batch_size",
            "chunk_size",
            "lease_seconds",
            "remote_batch_size",
            "visibility_timeout",
            "retry_delay",
            "worker_name",
            "started_by",
            "enqueue",
            "runner_for",
            "batch",
            "maybe_finish",
            "bulk_swap_sealed",
            "rotatable_providers",
            "root_rotation_leftovers",
            "retirement_readiness",
            "retirement_jobs_active",
            "retire_ready_versions",  # the hourly schedule's system actor; job_start_key_retirement audits
            "job_plan",
            "job_mark_enqueued",
            "job_run",
            "job_run_chunk",
            "job_resume_stalled",
            "jobs_never_planned",
            "job_actor",  # who a vendor-key move acts as, per tenant: its events are vendor_key.assigned
        },
        "vendor_keys": {
            "vendor_key_test_connection",
            "vendor_key_resolve",
            "vendor_key_default",
            "vendor_key_check",  # a health transition is recorded by the system, as for configurations
            "vendor_key_record_health",
            "vendor_key_config_for",  # a step of tenant_create and of the move job, which audit
        },
        "forwarding": {
            "clean_webhook_settings",
            "clean_syslog_settings",
            "clean_settings",
            "webhook_signature",
            "send_webhook",
            "syslog_message",
            "octet_frame",
            "send_syslog",
            "send",
            "backoff_seconds",
            "deliver_pending",
            "destinations_due",
            "dead_letters_deliver",
        },
    }
    covered = {
        "tenants": {
            "tenant_create",
            "tenant_create_many",
            "tenant_update",
            "tenant_set_status",
            "tenant_shred",
            "tenant_shred_early_request",
            "tenant_shred_early_approve",
            "invitation_create",
            "invitation_resend",
            "invitation_revoke",
            "invitation_accept",
            "invitation_approve",
            "membership_set_role",
            "membership_remove",
            "staff_create",
            "staff_set_role",
            "staff_deactivate",
        },
        "keys": {
            "kms_config_create",
            "kms_config_make_primary",
            "kms_config_decrypt_only",
            "kms_config_disable",
            "kms_config_revoke",
            "kms_config_reenable",
            "kms_config_retire",
            "kms_config_destroy",
            "kms_config_replace_secrets",
            "tenant_key_create",
        },
        "apikeys": {"api_key_create", "api_key_revoke", "api_key_rotate"},
        "jobs": {
            "job_cancel",
            "job_retry",
            "job_start_rewrap",
            "job_start_kek_rotation",
            "job_start_root_rotation",
            "job_start_key_retirement",
            "job_confirm_key_retirement",
            "job_start_vendor_key_move",
        },
        "vendor_keys": {
            "vendor_key_create",
            "vendor_key_make_default",
            "vendor_key_replace_secrets",
            "vendor_key_retire",
        },
        "forwarding": {
            "destination_create",
            "destination_update",
            "destination_rotate_secret",
            "destination_set_enabled",
            "destination_delete",
            "destination_test",
            "dead_letters_replay",
        },
    }
    covered["keyring"] = set()
    job_modules = [jobs.engine, jobs.rewrap, jobs.kek_rotation, jobs.root_rotation, jobs.key_retirement]
    modules = {
        "tenants": [tenants],
        "keys": [keys],
        "keyring": [keyring],
        "apikeys": [apikeys],
        "jobs": job_modules,
        "forwarding": [forwarding],
    }
    for label, group in modules.items():
        public = {
            name
            for module in group
            for name, fn in vars(module).items()
            if inspect.isfunction(fn) and fn.__module__ == module.__name__ and not name.startswith("_")
        }
        assert public, f"services.{label}: no public function found; is the module list right?"
        unknown = public - covered[label] - not_admin_actions[label]
        assert not unknown, f"services.{label}: {sorted(unknown)} change state? add them to the audit table"


def test_an_api_key_is_recorded_as_the_actor(world):
    key, _ = apikeys.api_key_create(name="pipeline", scopes=["tenants:write"], actor=Actor.system("setup"))
    actor = Actor(label=f"api-key:{key.name}", api_key=key, source_ip="2001:db8::7", user_agent="keycore-client/1")
    tenants.tenant_update(tenant=world.tenant, actor=actor, name="Acme via API")
    event = AuditEvent.objects.filter(action="tenant.updated").latest("id")
    assert event.actor_api_key_id == key.pk and event.actor_user_id is None
    assert event.actor_label == "api-key:pipeline" and event.source_ip == "2001:db8::7"
    assert event.changes == {"name": ["Acme Corporation", "Acme via API"]}


def test_a_change_that_rolls_back_leaves_no_event(world):
    from django.db import transaction

    def change_then_fail():
        with transaction.atomic():
            tenants.tenant_update(tenant=world.tenant, actor=world.actor, name="Never happened")
            raise RuntimeError("the caller's transaction fails after the change")

    count = AuditEvent.objects.count()
    with pytest.raises(RuntimeError):
        change_then_fail()
    assert AuditEvent.objects.count() == count
    world.tenant.refresh_from_db()
    assert world.tenant.name == "Acme Corporation"


def test_before_and_after_are_recorded_and_secrets_never(world):
    forwarding.destination_create(
        tenant=world.tenant,
        kind="webhook",
        name="SIEM",
        settings_={"url": "http://127.0.0.1:9/x"},
        actor=world.actor,
        secret="the-tenants-own-signing-secret",
    )
    keys.kms_config_replace_secrets(config=world.primary(), secrets={}, actor=world.actor)
    tenants.tenant_update(tenant=world.tenant, actor=world.actor, event_retention_days=90)
    updated = AuditEvent.objects.filter(action="tenant.updated").latest("id")
    assert updated.changes == {"event_retention_days": [365, 90]}
    from keycore.sealing import unseal_secrets

    kek = unseal_secrets(world.primary())["kek"]
    for event in AuditEvent.objects.all():
        text = str(event.changes)
        assert "the-tenants-own-signing-secret" not in text and kek not in text


def test_a_health_change_of_a_kms_is_recorded_once_by_the_system(world):
    from keycore.providers.base import HealthResult

    config = world.primary()
    initial = config.health
    assert initial != "failing"
    before = AuditEvent.objects.filter(action="kms_config.health_changed").count()
    keys.kms_config_record_health(config=config, result=HealthResult(False, "KMS unreachable", 0.0, "kms-unreachable"))
    keys.kms_config_record_health(config=config, result=HealthResult(False, "KMS unreachable", 0.0, "kms-unreachable"))
    keys.kms_config_record_health(config=config, result=HealthResult(True, "ok", 1.0))
    changes = list(AuditEvent.objects.filter(action="kms_config.health_changed").order_by("id"))[before:]
    assert [e.changes["health"] for e in changes] == [[initial, "failing"], ["failing", "ok"]]
    assert all(e.actor_label == "system:health-check" and e.tenant_id == world.tenant.pk for e in changes)
