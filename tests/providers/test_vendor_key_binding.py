"""One vendor key shared by many tenants, in each real KMS (moto's AWS KMS, PyKMIP, SoftHSM2, OpenBao): each
tenant's wraps stay bound to the tenant, so a wrap of one tenant replayed as another's fails in the KMS (or its
authenticator) even though the KMS key is the same. Also: tenants moved onto the vendor key by the rekey job."""

from __future__ import annotations

import pytest

from keycore import errors
from keycore.models import KmsConfig, TenantKeyWrap
from keycore.models.jobs import JobState
from keycore.providers.base import WrapContext
from keycore.services import jobs, keyring, vendor_keys
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.tenants import tenant_create

META = CallMeta(requesting_id="tests")
ACTOR = Actor(label="operator:tests")


def _aws(request):
    server = request.getfixturevalue("moto_server")
    return server.provider_settings(server.create_key())


def _kmip(request):
    server = request.getfixturevalue("kmip_server")
    return server.provider_settings(server.create_key())


def _pkcs11(request):
    token = request.getfixturevalue("softhsm_token")
    label = f"vendor-{request.node.name[-20:]}".replace("[", "-").replace("]", "")
    token.create_aes_key(label)
    return token.provider_settings(label)


def _openbao(request):
    server = request.getfixturevalue("openbao_server")
    key = server.create_key()
    return server.provider_settings(key, server.grant(key))


KMS = {"aws": _aws, "kmip": _kmip, "pkcs11": _pkcs11, "openbao": _openbao}


@pytest.fixture(params=sorted(KMS))
def shared_key(request, db):
    """A vendor key in this KMS, named as a vendor would, and the default for new tenants."""
    settings, secrets = KMS[request.param](request)
    return vendor_keys.vendor_key_create(
        name=f"EU {request.param} key",
        provider=request.param,
        settings_=settings,
        secrets=secrets,
        actor=ACTOR,
        make_default=True,
    )


def test_one_tenants_wrap_cannot_be_replayed_as_anothers_under_the_same_kms_key(shared_key):
    alice = tenant_create(external_id="alice", name="Alice", actor=ACTOR, send=False)
    bob = tenant_create(external_id="bob", name="Bob", actor=ACTOR, send=False)
    alice_wrap = TenantKeyWrap.objects.select_related("kms_config").get(tenant_key__tenant=alice)
    bob_wrap = TenantKeyWrap.objects.select_related("kms_config").get(tenant_key__tenant=bob)
    assert alice_wrap.kms_config.vendor_key_id == bob_wrap.kms_config.vendor_key_id == shared_key.pk
    provider = keyring.provider_for(bob_wrap.kms_config)
    # each opens as itself
    assert len(provider.unwrap(bytes(alice_wrap.wrapped), keyring.wrap_context(alice_wrap.kms_config, alice, 1))) == 32
    # Alice's wrap presented as Bob's (same version, same KMS key): refused, and not as a retryable outage
    as_bob = keyring.wrap_context(bob_wrap.kms_config, bob, 1)
    with pytest.raises(errors.KeyCoreError) as refused:
        provider.unwrap(bytes(alice_wrap.wrapped), as_bob)
    assert not refused.value.retryable
    # nor as another version of Alice's own
    with pytest.raises(errors.KeyCoreError):
        provider.unwrap(bytes(alice_wrap.wrapped), keyring.wrap_context(alice_wrap.kms_config, alice, 2))
    # a forged context with Alice's uid but a probe's identity is still Alice: the binding is the tenant uid
    forged = WrapContext(alice.uid.hex, "someone-else", "x", 1)
    assert provider.unwrap(bytes(alice_wrap.wrapped), forged) == provider.unwrap(
        bytes(alice_wrap.wrapped), keyring.wrap_context(alice_wrap.kms_config, alice, 1)
    )


def test_tenants_move_onto_the_kms_vendor_key_and_keep_their_data(shared_key):
    vendor_keys.vendor_key_make_default(vendor_key=None, actor=ACTOR)
    tenants = [tenant_create(external_id=f"t{i}", name=f"T{i}", actor=ACTOR, send=False) for i in range(2)]
    documents = [crypto_encrypt(tenant=t.external_id, fields={"f": b"doc"}, meta=META) for t in tenants]
    job, refused = jobs.job_start_vendor_key_move(vendor_key=shared_key, tenants=tenants, actor=ACTOR)
    assert refused == []
    job = jobs.job_run(job.pk)
    assert job.state == JobState.SUCCEEDED and job.done == 2, job.last_error
    keyring.clear_caches()
    for tenant, doc in zip(tenants, documents, strict=True):
        assert KmsConfig.objects.get(tenant=tenant, is_primary=True).vendor_key == shared_key
        assert crypto_decrypt(tenant=tenant.external_id, edek=doc.edek, fields=doc.fields, meta=META) == {"f": b"doc"}
    result = vendor_keys.vendor_key_check(vendor_key=shared_key)
    assert result.ok, result.detail
    assert set(KmsConfig.objects.filter(vendor_key=shared_key).values_list("health", flat=True)) == {"ok"}
