"""Root-key rotation: every sealed secret re-sealed under the new root key; then the old one can go."""

from __future__ import annotations

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.utils import decrypt

from keycore.crypto.rootkey import generate_root_key_text
from keycore.models import KmsConfig
from keycore.sealing import root_keyring, unseal_secrets
from keycore.services import jobs, keyring
from keycore.services.audit import chain_mac_keys
from keycore.services.crypto import CallMeta, crypto_decrypt
from tests.jobs.seeding import seed_local_tenants

META = CallMeta(requesting_id="tests")


@pytest.fixture
def use_root_keys(settings):
    """Switch this process's root keys (as a restart with new settings would)."""

    def switch(current: str, previous: list[str]) -> None:
        settings.KEYCORE_ROOT_KEY = current
        settings.KEYCORE_ROOT_KEY_PREVIOUS = previous
        root_keyring.cache_clear()
        chain_mac_keys.cache_clear()  # chain heads are signed with a key derived from the root key
        keyring.clear_caches()

    original = (settings.KEYCORE_ROOT_KEY, list(settings.KEYCORE_ROOT_KEY_PREVIOUS))
    yield switch
    switch(*original)


@pytest.fixture
def sealed(db, vendor_admin, settings):
    settings.KEYCORE_JOB_BATCH_SIZE = 4
    documents = seed_local_tenants(9, 2, prefix="root")
    RecoveryCodes.activate(vendor_admin)
    return documents


def test_it_reseals_every_secret_so_the_old_root_key_can_be_removed(
    sealed, vendor_admin, use_root_keys, actor, settings
):
    old = root_keyring()
    new_key, old_key = generate_root_key_text(), settings.KEYCORE_ROOT_KEY
    use_root_keys(new_key, [old_key])
    assert jobs.root_rotation_leftovers() == {"kms_configs": 9, "mfa_secrets": 2, "vendor_keys": 0}
    job = jobs.job_start_root_rotation(actor=actor)
    assert job.params["root_key_id"] == root_keyring().current_id != old.current_id
    job = jobs.job_run(job.pk)
    assert (job.state, job.failed) == ("succeeded", 0)
    assert job.total == job.done == 9 + Authenticator.objects.count()
    assert jobs.root_rotation_leftovers() == {"kms_configs": 0, "mfa_secrets": 0, "vendor_keys": 0}
    use_root_keys(new_key, [])  # the old root key is gone
    for config in KmsConfig.objects.all():
        assert unseal_secrets(config)["kek"]
    totp = Authenticator.objects.get(user=vendor_admin, type="totp")
    assert decrypt(totp.data["secret"]) == vendor_admin.totp_secret
    assert decrypt(Authenticator.objects.get(user=vendor_admin, type="recovery_codes").data["seed"])
    for doc in sealed:
        assert crypto_decrypt(tenant=doc.tenant, edek=doc.edek, fields=doc.fields, meta=META) == doc.plain


def test_without_the_rotation_the_old_root_key_cannot_be_removed(sealed, use_root_keys):
    """The control: the test above proves something only because this fails."""
    from keycore import errors

    use_root_keys(generate_root_key_text(), [])
    with pytest.raises(errors.KmsMisconfigured, match="KEYCORE_ROOT_KEY_PREVIOUS"):
        unseal_secrets(KmsConfig.objects.first())


def test_a_worker_with_another_root_key_pauses_the_job_instead_of_sealing_wrongly(sealed, use_root_keys, actor):
    from django.conf import settings

    old_key = settings.KEYCORE_ROOT_KEY
    use_root_keys(generate_root_key_text(), [old_key])
    job = jobs.job_start_root_rotation(actor=actor)
    use_root_keys(old_key, [])  # a worker still running with the old settings
    with pytest.raises(jobs.ChunkPaused):
        jobs.job_run(job.pk)
    job.refresh_from_db()
    assert job.state == "paused"
    assert job.params["root_key_id"] in job.pause_reason and "KEYCORE_ROOT_KEY" in job.pause_reason
    assert job.done == 0 and job.retry_at is not None
