"""Set-based test data for rekey jobs: thousands of tenants with local keys in seconds, not minutes.

Rows are written the way the services write them (a sealed local KEK per
configuration, tenant keys with check values, verified wraps), but in bulk. A
sample document per tenant is encrypted with the raw key while it is at hand,
so tests can prove afterwards that it still decrypts through the real service.
"""

from __future__ import annotations

import hmac
import random
from dataclasses import dataclass

from django.utils import timezone

from keycore.crypto.envelope import TenantKeyHandle, encrypt_document, key_check_value, new_tenant_key
from keycore.models import EventChain, KmsConfig, Tenant, TenantKey, TenantKeyWrap
from keycore.providers.base import WrapContext
from keycore.providers.local import LocalProvider
from keycore.sealing import seal_secrets, unseal_secrets


@dataclass
class Document:
    tenant: str
    edek: bytes
    fields: dict[str, bytes]
    plain: dict[str, bytes]


def seed_local_tenants(
    count: int, keys_per_tenant: int, *, prefix: str = "t", documents: bool = True
) -> list[Document]:
    """``count`` tenants, each with a primary local configuration and ``keys_per_tenant`` key versions.

    Returns one sample document per tenant (unless ``documents`` is false), encrypted
    under a random version of its keys.
    """
    now = timezone.now()
    tenants = Tenant.objects.bulk_create(
        [Tenant(external_id=f"{prefix}-{i:06d}", name=f"{prefix} {i}", status_changed_at=now) for i in range(count)]
    )
    EventChain.objects.bulk_create([EventChain(key=f"tenant:{t.pk}") for t in tenants], batch_size=5000)
    configs, secrets = [], []
    for tenant in tenants:
        config = KmsConfig(tenant=tenant, owner="vendor", provider="local", name="Vendor-provided key", is_primary=True)
        kek = LocalProvider.generate_secrets()
        seal_secrets(config, kek)
        configs.append(config)
        secrets.append(kek)
    KmsConfig.objects.bulk_create(configs)
    keys, raws = [], []
    for tenant in tenants:
        for version in range(1, keys_per_tenant + 1):
            raw = new_tenant_key()
            keys.append(TenantKey(tenant=tenant, version=version, check_value=key_check_value(raw), created_at=now))
            raws.append(raw)
    TenantKey.objects.bulk_create(keys, batch_size=2000)
    wraps, samples = [], []
    rng = random.Random(count * 7919 + keys_per_tenant)
    for index, (tenant, config, kek) in enumerate(zip(tenants, configs, secrets, strict=True)):
        provider = LocalProvider({}, kek)
        own = range(index * keys_per_tenant, (index + 1) * keys_per_tenant)
        for position in own:
            key = keys[position]
            context = WrapContext(tenant.uid.hex, tenant.external_id, config.uid.hex, key.version)
            wraps.append(
                TenantKeyWrap(
                    tenant_key=key, kms_config=config, wrapped=provider.wrap(raws[position], context), verified_at=now
                )
            )
        if not documents:
            continue
        position = rng.choice(list(own))
        plain = {"name": f"customer of {tenant.external_id}".encode(), "note": rng.randbytes(64)}
        handle = TenantKeyHandle(tenant.uid.bytes, keys[position].version, raws[position])
        edek, fields = encrypt_document(handle, plain)
        samples.append(Document(tenant.external_id, edek, fields, plain))
    TenantKeyWrap.objects.bulk_create(wraps, batch_size=2000)
    return samples


def wrap_problems() -> list[str]:
    """Every wrap under a local configuration unwraps with that configuration's KEKs to its key's check value.

    Returns what is wrong ("" for nothing): the invariant a rekey job must hold at every moment.
    """
    problems = []
    configs = {c.pk: c for c in KmsConfig.objects.filter(provider="local").select_related("tenant")}
    providers = {pk: LocalProvider({}, unseal_secrets(c)) for pk, c in configs.items() if c.sealed_secrets}
    rows = TenantKeyWrap.objects.filter(kms_config__provider="local").values_list(
        "kms_config_id", "wrapped", "tenant_key__version", "tenant_key__check_value", "tenant_key_id"
    )
    for config_id, wrapped, version, check, key_id in rows.iterator(chunk_size=5000):
        config = configs[config_id]
        context = WrapContext(config.tenant.uid.hex, config.tenant.external_id, config.uid.hex, version)
        try:
            raw = providers[config_id].unwrap(bytes(wrapped), context)
        except Exception as exc:  # collected and reported
            problems.append(f"tenant key {key_id} under {config.uid}: {exc}")
            continue
        if not hmac.compare_digest(key_check_value(raw), bytes(check)):
            problems.append(f"tenant key {key_id} under {config.uid}: check value differs")
    return problems


def kek_fingerprints() -> dict[int, str]:
    """The current KEK fingerprint of every local configuration."""
    return {
        c.pk: LocalProvider({}, unseal_secrets(c)).current_key_id
        for c in KmsConfig.objects.filter(provider="local", sealed_secrets__isnull=False)
    }
