"""The keyring: what every service needs to reach a tenant's keys, and nothing that changes them.

Keys, crypto, jobs and tenants all depend on this module, never on each other for it:

* the **revocation epoch** — a counter every change that must empty key caches
  bumps in its own transaction; every process polls it at most once per
  ``KEYCORE_REVOCATION_POLL`` seconds (that is how a revocation reaches every
  process within two seconds);
* the process's **caches** — unwrapped tenant keys, resolved tenants, and built
  provider instances — all dropped together when the epoch moves;
* :func:`provider_for` and :func:`wrap_context`, the only way a service talks to a KMS;
* :func:`unwrap_tenant_key` (cached) and :func:`unwrap_raw` / :func:`wrap_tenant_key`
  (for jobs), with the rule that a tenant key wrapped under a *disabled* or
  *revoked* configuration cannot be used at all — a tenant's kill switch must not
  be sidestepped by an older wrap;
* :func:`key_history_record`, the tenant's key history every key change appends to.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from keycore import errors, metrics
from keycore.crypto.cache import TenantKeyCache
from keycore.crypto.envelope import TenantKeyHandle, key_check_value
from keycore.egress import EgressPolicy, tenant_kms_policy
from keycore.models import (
    KeyHistoryEntry,
    KmsConfig,
    RevocationEpoch,
    Tenant,
    TenantKey,
    TenantKeyWrap,
    VendorKey,
)
from keycore.models.keys import UNWRAP_STATES, ConfigOwner, ConfigState, TenantKeyState
from keycore.providers.base import KeyProvider, WrapContext
from keycore.providers.registry import get_provider_class
from keycore.sealing import unseal_secrets
from keycore.services.audit import Actor

log = logging.getLogger(__name__)

# --- revocation epoch ------------------------------------------------------------------------


def read_epoch() -> int:
    value = RevocationEpoch.objects.filter(pk=1).values_list("value", flat=True).first()
    return value or 0


def bump_epoch() -> None:
    """Make every process drop its cached keys and tenant lookups within the poll interval."""
    updated = RevocationEpoch.objects.filter(pk=1).update(value=F("value") + 1, changed_at=timezone.now())
    if not updated:
        RevocationEpoch.objects.get_or_create(pk=1, defaults={"value": 1})
    # this process need not wait for its own poll
    transaction.on_commit(clear_caches)


# --- the process's caches ----------------------------------------------------------------------

_caches_lock = threading.Lock()
_key_cache: TenantKeyCache | None = None
_tenant_cache: TenantKeyCache | None = None
#: built providers by ("config", pk) or ("vendor_key", pk), least recently used first (every tenant served by
#: a vendor key shares its one instance); bounded like the key cache, because a process that touches every
#: tenant would otherwise keep every configuration's provider (a local one holds its KEK in the clear) for as
#: long as it lives
_providers: OrderedDict[tuple[str, int], tuple[Any, KeyProvider]] = OrderedDict()


def _epoch_cache(ttl: float) -> TenantKeyCache:
    return TenantKeyCache(
        ttl=ttl,
        max_entries=settings.KEYCORE_KEY_CACHE_SIZE,
        epoch_source=read_epoch,
        epoch_interval=settings.KEYCORE_REVOCATION_POLL,
    )


def key_cache() -> TenantKeyCache:
    """Unwrapped tenant keys by (tenant pk, version), for at most ``KEYCORE_KEY_CACHE_TTL`` seconds."""
    global _key_cache
    if _key_cache is None:
        with _caches_lock:
            if _key_cache is None:
                _key_cache = _epoch_cache(settings.KEYCORE_KEY_CACHE_TTL)
                metrics.watch_cache("tenant_keys", _key_cache)
    return _key_cache


def tenant_cache() -> TenantKeyCache:
    """Resolved tenants by external id (status, current version), for at most a minute."""
    global _tenant_cache
    if _tenant_cache is None:
        with _caches_lock:
            if _tenant_cache is None:
                _tenant_cache = _epoch_cache(min(60.0, settings.KEYCORE_KEY_CACHE_TTL))
                metrics.watch_cache("tenants", _tenant_cache)
    return _tenant_cache


def refresh_epoch() -> int:
    """Read the revocation epoch now and empty the caches if it moved (not waiting for the next poll)."""
    epoch = read_epoch()
    key_cache().observe_epoch(epoch)
    tenant_cache().observe_epoch(epoch)
    return epoch


def clear_caches() -> None:
    """Forget every unwrapped key, resolved tenant and provider instance of this process."""
    key_cache().clear()
    tenant_cache().clear()
    with _caches_lock:
        old = list(_providers.values())
        _providers.clear()
    for _, provider in old:
        try:
            provider.close()
        except Exception:
            log.debug("closing a provider failed", exc_info=True)


# --- providers ------------------------------------------------------------------------------------


def wrap_context(config: KmsConfig, tenant, version: int = 0) -> WrapContext:
    """What a wrap under ``config`` is bound to: the tenant (by uid), the configuration, the key version."""
    return WrapContext(
        tenant_uid=tenant.uid.hex,
        tenant_external_id=tenant.external_id,
        config_uid=config.uid.hex,
        key_version=version,
    )


def kms_egress_policy(owner: str) -> EgressPolicy | None:
    """Where a configuration of ``owner`` may make KeyCore connect: a tenant's is held to the operator's
    policy on every connection; the vendor's own infrastructure is not restricted."""
    return tenant_kms_policy() if owner == ConfigOwner.TENANT else None


def build_provider(provider: str, owner: str, provider_settings, secrets) -> KeyProvider:
    """A provider instance for a configuration of ``owner`` (saved or not), held to its egress policy."""
    cls = get_provider_class(provider)
    return cls(provider_settings, secrets, timeout=settings.KEYCORE_KMS_TIMEOUT, egress=kms_egress_policy(owner))


def provider_for(config: KmsConfig) -> KeyProvider:
    """The provider instance of a configuration, built once per process and configuration version.

    A configuration that references a shared vendor key uses that key's instance (one
    connection pool, one HSM session for every tenant it serves); the tenant stays bound
    into every wrap by :func:`wrap_context`.
    """
    if config.vendor_key_id:
        return provider_for_vendor_key(config.vendor_key)
    stamp = (config.updated_at, bytes(config.sealed_secrets or b""))
    return _cached_provider(
        ("config", config.pk),
        stamp,
        lambda: build_provider(config.provider, config.owner, config.settings, unseal_secrets(config)),
    )


def provider_for_vendor_key(vendor_key: VendorKey) -> KeyProvider:
    """The provider instance of a shared vendor key, built once per process and key version."""
    stamp = (vendor_key.updated_at, bytes(vendor_key.sealed_secrets or b""))
    return _cached_provider(
        ("vendor_key", vendor_key.pk),
        stamp,
        lambda: build_provider(
            vendor_key.provider, ConfigOwner.VENDOR, vendor_key.settings, unseal_secrets(vendor_key)
        ),
    )


def _cached_provider(key: tuple[str, int], stamp, build) -> KeyProvider:
    """The cached instance under ``key`` if it was built from the same version, else a new one (evicting
    the least recently used past ``KEYCORE_KEY_CACHE_SIZE`` and closing what it evicts)."""
    cached = _providers.get(key)
    if cached is not None and cached[0] == stamp:
        with _caches_lock:
            if key in _providers:
                _providers.move_to_end(key)
        return cached[1]
    provider = build()
    evicted = []
    with _caches_lock:
        _providers[key] = (stamp, provider)
        _providers.move_to_end(key)
        while len(_providers) > settings.KEYCORE_KEY_CACHE_SIZE:
            evicted.append(_providers.popitem(last=False)[1][1])
    for old in evicted:
        try:
            old.close()
        except Exception:
            log.debug("closing a provider failed", exc_info=True)
    return provider


def describe_config(config: KmsConfig | VendorKey) -> str:
    """A non-secret one-liner of where the key lives."""
    try:
        cls = get_provider_class(config.provider)
        described = cls(config.settings, {}, timeout=settings.KEYCORE_KMS_TIMEOUT).describe()
        vendor_key = getattr(config, "vendor_key", None)
        return f"{described}, shared vendor key {vendor_key.name}" if vendor_key is not None else described
    except Exception:
        return config.provider


# --- tenant keys ------------------------------------------------------------------------------------


def current_key_version(tenant) -> int:
    """The newest active tenant-key version, which new data is encrypted under."""
    version = TenantKey.objects.filter(tenant=tenant, state=TenantKeyState.ACTIVE).aggregate(v=Max("version"))["v"]
    if version is None:
        raise errors.KeyUnavailable(f"Tenant {tenant.external_id} has no active tenant key.")
    return version


def unwrap_tenant_key(tenant, version: int) -> TenantKeyHandle:
    """The tenant key of ``version``, from the cache or through a KMS (and then cached).

    ``tenant`` is a Tenant or anything with its ``pk``, ``uid`` and ``external_id``.
    Raises KeyRevoked / KeyDisabled when a configuration it is wrapped under is
    revoked / disabled, KeyDestroyed when the version is gone, and the KMS's own
    typed error when no usable wrap could be unwrapped.
    """
    cache = key_cache()
    handle = cache.get((tenant.pk, version))
    if handle is not None:
        return handle
    # a revocation that lands while we fetch must win: put() drops the entry if the cache was emptied meanwhile
    generation = cache.generation
    key = TenantKey.objects.filter(tenant_id=tenant.pk, version=version).first()
    if key is None:
        raise errors.AuthenticationFailed(
            f"No tenant key v{version} exists for tenant {tenant.external_id}: "
            "the data belongs to another tenant or is corrupt."
        )
    handle = TenantKeyHandle(tenant.uid.bytes, version, unwrap_raw(tenant, key))
    cache.put((tenant.pk, version), handle, ttl=cache_ttl(tenant), generation=generation)
    return handle


def cache_ttl(tenant) -> float:
    """How long a process may keep this tenant's unwrapped keys: the operator's bound, or the tenant's if shorter.

    That bound is how long a key disabled or destroyed inside the tenant's own KMS keeps working here.
    """
    default = settings.KEYCORE_KEY_CACHE_TTL
    own = getattr(tenant, "key_cache_seconds", None)
    return min(default, float(own)) if own else default


def cache_tenant_key(tenant, version: int, raw: bytes) -> None:
    """Keep a key this process just created, so its first use needs no KMS round trip."""
    key_cache().put((tenant.pk, version), TenantKeyHandle(tenant.uid.bytes, version, raw), ttl=cache_ttl(tenant))


def unwrap_raw(tenant, key: TenantKey, wraps: list[TenantKeyWrap] | None = None) -> bytes:
    """Unwrap ``key`` through its usable wraps (primary first), verified against its check value.

    Only jobs that rewrap keys call this directly; everything else goes through
    :func:`unwrap_tenant_key` and its cache. Jobs pass ``wraps`` (all of the key's
    wraps with their ``kms_config``, primary first) when they loaded a batch at once.
    """
    version = key.version
    if key.state == TenantKeyState.DESTROYED:
        raise errors.KeyDestroyed(
            f"Tenant key v{version} of {tenant.external_id} was destroyed; data under it is gone."
        )
    if wraps is None:
        wraps = list(
            TenantKeyWrap.objects.filter(tenant_key=key)
            .select_related("kms_config")
            .order_by("-kms_config__is_primary", "-id")
        )
    for wrap in wraps:
        if wrap.kms_config.state == ConfigState.REVOKED:
            raise errors.KeyRevoked(
                f"The key {wrap.kms_config.name} of tenant {tenant.external_id} is revoked: "
                "data under it cannot be encrypted or decrypted until it is re-enabled."
            )
        if wrap.kms_config.state == ConfigState.DISABLED:
            raise errors.KeyDisabled(f"The key {wrap.kms_config.name} of tenant {tenant.external_id} is disabled.")
    usable = [w for w in wraps if w.kms_config.state in UNWRAP_STATES]
    if not usable:
        raise errors.KeyDestroyed(f"Tenant key v{version} of {tenant.external_id} has no usable wrap left.")
    first_error: errors.KeyCoreError | None = None
    for wrap in usable:
        try:
            raw = provider_for(wrap.kms_config).unwrap(
                bytes(wrap.wrapped), wrap_context(wrap.kms_config, tenant, version)
            )
        except errors.KeyCoreError as exc:
            log.warning(
                "unwrap of tenant key v%s of tenant %s via %s failed: %s",
                version,
                tenant.pk,
                wrap.kms_config.uid,
                exc.code,
            )
            first_error = first_error or exc
            continue
        if not hmac.compare_digest(key_check_value(raw), bytes(key.check_value)):
            first_error = first_error or errors.KmsMisconfigured(
                f"The KMS behind {wrap.kms_config.name} returned a different key than was wrapped."
            )
            continue
        return raw
    assert first_error is not None
    raise first_error


def wrap_tenant_key(*, key: TenantKey, raw: bytes, config: KmsConfig) -> TenantKeyWrap:
    """Wrap a tenant key under ``config`` and verify the new wrap (unwrap and compare) before saving it."""
    context = wrap_context(config, key.tenant, key.version)
    provider = provider_for(config)
    wrapped = provider.wrap(raw, context)
    back = provider.unwrap(wrapped, context)
    if not hmac.compare_digest(back, raw):
        raise errors.KmsMisconfigured(f"Verification of the new wrap under {config.name} failed.")
    wrap, _ = TenantKeyWrap.objects.update_or_create(
        tenant_key=key, kms_config=config, defaults={"wrapped": wrapped, "verified_at": timezone.now()}
    )
    if config.owner == ConfigOwner.VENDOR and not key.vendor_held:
        TenantKey.objects.filter(pk=key.pk).update(vendor_held=True)
        key.vendor_held = True
    return wrap


# --- key history ----------------------------------------------------------------------------------


def key_history_record(tenant: Tenant, config: KmsConfig | None, action: str, actor: Actor, detail: str = "") -> None:
    """Append to the tenant's key history (which configuration was primary when, every state change)."""
    KeyHistoryEntry.objects.create(
        tenant=tenant,
        kms_config=config,
        config_name=config.name if config else "",
        config_owner=config.owner if config else "",
        config_provider=config.provider if config else "",
        action=action,
        detail=detail[:300],
        actor_label=actor.label[:200],
    )
