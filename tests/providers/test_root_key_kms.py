"""The root key wrapped by a KMS (auto-unseal), against each real server: moto, OpenBao, SoftHSM2, PyKMIP.

Each KMS goes through the operator's whole path: ``keycore_root_key create`` wraps a
new root key; a fresh process starts with only the wrapped text and seals and
unseals a credential; ``migrate`` moves every sealed secret from the environment's
root key to the KMS-wrapped one and back, data readable throughout; and once the KMS
refuses (key disabled, token revoked, key destroyed or revoked) a process does not
start and says why, and /readyz says the root key is not unsealed.

The attacker's view: a database backup with the wrapped text and no KMS access opens
nothing; an edited header, another install's binding or a tenant key's wrap under the
same KMS key is refused by the KMS; the root key never appears in output, errors or logs.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from keycore import errors
from keycore.crypto.rootkey import generate_root_key_text, key_id
from keycore.models import KmsConfig
from keycore.providers.base import WrapContext
from keycore.sealing import root_keyring, seal_secrets, unseal_secrets
from keycore.services import keyring
from keycore.services.audit import chain_mac_keys
from keycore.services.crypto import CallMeta, crypto_decrypt
from keycore.unseal import WrappedRootKey, configured_kms, load_root_key, unwrap_root_key
from tests.jobs.seeding import seed_local_tenants
from tests.providers.servers import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
META = CallMeta(requesting_id="tests")
KMS_NAMES = ("aws", "openbao", "pkcs11", "kmip")


@dataclass
class RootKms:
    """A fresh key in one real KMS, the options that reach it, and how to take KeyCore's access away."""

    name: str
    options: dict[str, str]
    revoke: Callable[[], None]

    def env(self, directory: Path) -> dict[str, str]:
        """The environment an operator would set: one variable a field, PEM blocks and PINs through ``_FILE``."""
        out = {"KEYCORE_ROOT_KEY_KMS": self.name}
        for name, value in self.options.items():
            variable = f"KEYCORE_ROOT_KEY_KMS_{name.upper()}"
            if "\n" in value or name in {"pin", "token", "secret_access_key", "client_key"}:
                path = directory / name
                path.write_text(value)
                path.chmod(0o600)
                out[f"{variable}_FILE"] = str(path)
            else:
                out[variable] = value
        return out


def _options(settings: dict, secrets: dict) -> dict[str, str]:
    return {name: str(value) for name, value in {**settings, **secrets}.items()}


def aws_kms(server) -> RootKms:
    """moto enforces neither key states nor key policies on Decrypt, but it does refuse a key it cannot find:
    KeyCore is given an alias, and losing access is the alias removed."""
    alias = f"alias/keycore-root-{uuid.uuid4().hex[:8]}"
    server.create_key(alias=alias)
    options = _options(*server.provider_settings(alias))
    return RootKms("aws", options, lambda: server.client().delete_alias(AliasName=alias))


@pytest.fixture(params=KMS_NAMES)
def root_kms(request) -> RootKms:
    name = request.param
    if name == "aws":
        return aws_kms(request.getfixturevalue("moto_server"))
    if name == "openbao":
        server = request.getfixturevalue("openbao_server")
        key = server.create_key()
        token = server.grant(key)
        return RootKms(
            name,
            _options(*server.provider_settings(key, token)),
            lambda: server.admin().auth.token.revoke(token),
        )
    if name == "pkcs11":
        token = request.getfixturevalue("softhsm_token")
        label = f"root-{uuid.uuid4().hex[:12]}"
        token.create_aes_key(label)
        return RootKms(name, _options(*token.provider_settings(label)), lambda: token.destroy_key(label))
    server = request.getfixturevalue("kmip_server")
    uid = server.create_key()
    return RootKms(name, _options(*server.provider_settings(uid)), lambda: server.revoke(uid))


@pytest.fixture
def use_root_keys(settings):
    """Switch this process's root-key settings, as a restart with new settings would."""

    def switch(*, current: str = "", wrapped: str = "", previous: list[str] = (), kms: RootKms | None = None):
        settings.KEYCORE_ROOT_KEY = current
        settings.KEYCORE_ROOT_KEY_WRAPPED = wrapped
        settings.KEYCORE_ROOT_KEY_PREVIOUS = list(previous)
        if kms is not None:
            settings.KEYCORE_ROOT_KEY_KMS = kms.name
            settings.KEYCORE_ROOT_KEY_KMS_OPTIONS = dict(kms.options)
        root_keyring.cache_clear()
        chain_mac_keys.cache_clear()
        keyring.clear_caches()

    settings.KEYCORE_ROOT_KEY_UNWRAP_ATTEMPTS = 2
    settings.KEYCORE_ROOT_KEY_INSTALL_ID = ""
    settings.KEYCORE_ROOT_KEY_UNWRAP_BACKOFF = 0.05
    original = {"current": settings.KEYCORE_ROOT_KEY, "previous": list(settings.KEYCORE_ROOT_KEY_PREVIOUS)}
    yield switch
    settings.KEYCORE_ROOT_KEY_KMS = ""
    settings.KEYCORE_ROOT_KEY_KMS_OPTIONS = {}
    switch(**original)


def _create(kms: RootKms, settings, *args: str) -> tuple[str, str]:
    settings.KEYCORE_ROOT_KEY_KMS = kms.name
    settings.KEYCORE_ROOT_KEY_KMS_OPTIONS = dict(kms.options)
    out, err = io.StringIO(), io.StringIO()
    call_command("keycore_root_key", "create", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def _key_texts(key: bytes) -> list[str]:
    """Every way the root key could leak as text."""
    return [
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode(),
        key.hex(),
        base64.b64encode(key).decode().rstrip("="),
    ]


def _places_holding(key: bytes, folders: list[Path]) -> list[str]:
    """Where ``key`` is stored, in any encoding: every database row, every Redis value, every file in ``folders``."""
    from django.apps import apps
    from django.conf import settings

    needles = [key, *(text.encode() for text in _key_texts(key))]
    found = []
    for model in apps.get_models():
        for row in model._base_manager.values_list():
            for value in row:
                raw = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
                if any(needle in raw for needle in needles):
                    found.append(f"database: {model._meta.db_table}")
    for url in {settings.CELERY_BROKER_URL, settings.REDIS_URL or ""}:
        if url.startswith("redis"):
            import redis

            client = redis.Redis.from_url(url)
            for name in client.scan_iter(count=1000):
                raw = name + (client.dump(name) or b"")
                if any(needle in raw for needle in needles):
                    found.append(f"redis: {name!r}")
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and any(needle in path.read_bytes() for needle in needles):
                found.append(f"file: {path}")
    return found


# --- create, and what the wrapped text is bound to ------------------------------------------------


def test_create_prints_only_a_wrapped_root_key_that_its_kms_opens(root_kms, settings, use_root_keys, caplog):
    caplog.set_level(logging.DEBUG)
    text, guidance = _create(root_kms, settings)
    wrapped = WrappedRootKey.parse(text)
    assert wrapped.provider == root_kms.name and len(wrapped.install_id) == 32
    assert "KEYCORE_ROOT_KEY_WRAPPED" in guidance and "migrate" in guidance
    key = load_root_key(text)
    assert key_id(key) == wrapped.root_key_id
    for leaked in _key_texts(key):
        assert leaked not in text + guidance + caplog.text


def test_the_kms_refuses_a_header_edited_to_another_install_or_root_key(root_kms, settings, use_root_keys):
    wrapped = WrappedRootKey.parse(_create(root_kms, settings)[0])
    kms = configured_kms()
    other_install = WrappedRootKey(wrapped.provider, uuid.uuid4().hex, wrapped.root_key_id, wrapped.blob)
    other_key_id = WrappedRootKey(wrapped.provider, wrapped.install_id, "0" * 16, wrapped.blob)
    for forged in (other_install, other_key_id):
        with pytest.raises(errors.AuthenticationFailed, match="refused to unwrap root key"):
            unwrap_root_key(forged, kms=kms, attempts=1, backoff=0)


def test_a_tenant_key_wrapped_under_the_same_kms_key_is_not_accepted_as_a_root_key(root_kms, settings, use_root_keys):
    """A tenant's wrap (a vendor key shared by tenants, say) must not be replayable as the root key."""
    wrapped = WrappedRootKey.parse(_create(root_kms, settings)[0])
    kms = configured_kms()
    provider = kms.build()
    tenant_wrap = provider.wrap(os.urandom(32), WrapContext(uuid.uuid4().hex, "acme", "cfg", 1))
    provider.close()
    spliced = WrappedRootKey(wrapped.provider, wrapped.install_id, wrapped.root_key_id, tenant_wrap)
    with pytest.raises(errors.AuthenticationFailed):
        unwrap_root_key(spliced, kms=kms, attempts=1, backoff=0)


def test_another_installs_wrapped_root_key_is_refused_once_the_install_is_pinned(settings, use_root_keys, moto_server):
    """The wrapped text is not secret, so it may sit where more people can write: staging's, made under the
    same KMS key, must not become production's root key."""
    kms = aws_kms(moto_server)
    production = WrappedRootKey.parse(_create(kms, settings)[0])
    staging = WrappedRootKey.parse(_create(kms, settings)[0])
    assert staging.install_id != production.install_id
    settings.KEYCORE_ROOT_KEY_INSTALL_ID = production.install_id
    assert key_id(load_root_key(production.text())) == production.root_key_id
    with pytest.raises(errors.KmsMisconfigured, match="belongs to another install"):
        load_root_key(staging.text())
    # and create binds new root keys to the pinned install
    assert WrappedRootKey.parse(_create(kms, settings)[0]).install_id == production.install_id


def test_the_install_id_is_kept_when_a_wrapped_root_key_is_replaced(settings, use_root_keys, moto_server):
    kms = aws_kms(moto_server)
    first = WrappedRootKey.parse(_create(kms, settings)[0])
    use_root_keys(wrapped=first.text(), kms=kms)
    second = WrappedRootKey.parse(_create(kms, settings)[0])
    assert second.install_id == first.install_id and second.root_key_id != first.root_key_id


def test_the_local_provider_cannot_hold_the_root_key_that_seals_it(settings):
    settings.KEYCORE_ROOT_KEY_KMS = "local"
    with pytest.raises(errors.KmsMisconfigured, match="sealed by the root key itself"):
        configured_kms()


def test_an_unknown_kms_field_is_named_with_the_fields_it_takes(settings):
    settings.KEYCORE_ROOT_KEY_KMS = "aws"
    settings.KEYCORE_ROOT_KEY_KMS_OPTIONS = {"key_id": "alias/root", "kye_id": "typo"}
    with pytest.raises(errors.KmsMisconfigured, match=r"KEYCORE_ROOT_KEY_KMS_KYE_ID is not a field.*_KEY_ID"):
        configured_kms()


def test_a_key_wrapped_by_one_kms_is_not_sent_to_another(settings, use_root_keys, moto_server):
    kms = aws_kms(moto_server)
    wrapped = WrappedRootKey.parse(_create(kms, settings)[0])
    settings.KEYCORE_ROOT_KEY_KMS = "kmip"
    with pytest.raises(errors.KmsMisconfigured, match="wrapped by the aws KMS, but KEYCORE_ROOT_KEY_KMS is kmip"):
        load_root_key(wrapped.text())


# --- a process starts with it, or refuses and says why ----------------------------------------------


def _process_env(extra: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYCORE_", "SECRET_KEY", "DEBUG", "PYTEST"))}
    env.pop("DATABASE_URL", None)
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "KEYCORE_VAR_DIR": str(tmp_path / "var")})
    env.update({"SECRET_KEY": "s" * 50, **extra})
    return env


START_AND_SEAL = (
    "import config.wsgi\n"
    "from keycore.sealing import root_keyring\n"
    "keyring = root_keyring()\n"
    "sealed = keyring.seal(b'a KMS credential', purpose='kms-config-secrets', context='cfg-1')\n"
    "assert keyring.unseal(sealed, purpose='kms-config-secrets', context='cfg-1') == b'a KMS credential'\n"
    "print(keyring.current_id)\n"
)


def _start(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", START_AND_SEAL],
        cwd=ROOT,
        env=_process_env(env, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_process_starts_with_only_the_wrapped_key_and_refuses_once_the_kms_does(
    root_kms, settings, use_root_keys, tmp_path
):
    text, _ = _create(root_kms, settings)
    wrapped = WrappedRootKey.parse(text)
    key = load_root_key(text)
    env = {**root_kms.env(tmp_path), "KEYCORE_ROOT_KEY_WRAPPED": text}

    started = _start(env, tmp_path)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == wrapped.root_key_id

    # a database backup and the wrapped text, without KeyCore's access to the KMS: nothing opens
    root_kms.revoke()
    refused = _start(env, tmp_path)
    assert refused.returncode != 0
    assert "could not be unwrapped (KEYCORE_ROOT_KEY_WRAPPED)" in refused.stderr
    assert wrapped.root_key_id in refused.stderr
    for leaked in _key_texts(key):
        assert leaked not in refused.stdout + refused.stderr


def test_a_process_whose_kms_is_down_retries_a_bounded_number_of_times_then_refuses(
    settings, use_root_keys, moto_server, tmp_path
):
    kms = aws_kms(moto_server)
    text, _ = _create(kms, settings)
    down = RootKms("aws", {**kms.options, "endpoint_url": f"http://127.0.0.1:{free_port()}"}, lambda: None)
    env = {
        **down.env(tmp_path),
        "KEYCORE_ROOT_KEY_WRAPPED": text,
        "KEYCORE_ROOT_KEY_UNWRAP_ATTEMPTS": "3",
        "KEYCORE_ROOT_KEY_UNWRAP_BACKOFF": "0.2",
    }
    started = time.monotonic()
    refused = _start(env, tmp_path)
    assert refused.returncode != 0
    assert "after 3 attempts" in refused.stderr and "KEYCORE_ROOT_KEY_WRAPPED" in refused.stderr
    assert time.monotonic() - started < 90


def test_a_management_command_refuses_to_run_when_the_root_key_cannot_be_unwrapped(
    settings, use_root_keys, moto_server, tmp_path
):
    kms = aws_kms(moto_server)
    text, _ = _create(kms, settings)
    kms.revoke()
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--check"],
        cwd=ROOT,
        env=_process_env({**kms.env(tmp_path), "KEYCORE_ROOT_KEY_WRAPPED": text}, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "keycore.E005" in result.stderr and "has no key" in result.stderr


def test_a_new_install_creates_its_first_root_key_in_the_kms_before_any_root_key_exists(moto_server, tmp_path):
    kms = aws_kms(moto_server)
    env = _process_env(kms.env(tmp_path), tmp_path)
    env.pop("SECRET_KEY")
    created = subprocess.run(
        [sys.executable, "manage.py", "keycore_root_key", "create"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    wrapped = WrappedRootKey.parse(created.stdout.strip())
    started = _start({**kms.env(tmp_path), "KEYCORE_ROOT_KEY_WRAPPED": created.stdout.strip()}, tmp_path)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == wrapped.root_key_id


def test_create_without_a_kms_says_what_to_set(settings):
    settings.KEYCORE_ROOT_KEY_KMS = ""
    with pytest.raises(CommandError, match=r"Set KEYCORE_ROOT_KEY_KMS.*--generate"):
        call_command("keycore_root_key", "create", stdout=io.StringIO())


def test_both_a_plain_and_a_wrapped_root_key_is_refused(settings, use_root_keys, moto_server, tmp_path):
    kms = aws_kms(moto_server)
    text, _ = _create(kms, settings)
    env = {**kms.env(tmp_path), "KEYCORE_ROOT_KEY_WRAPPED": text, "KEYCORE_ROOT_KEY": generate_root_key_text()}
    refused = _start(env, tmp_path)
    assert refused.returncode != 0 and "both set" in refused.stderr


# --- migrate: from the environment's root key to the KMS-wrapped one, and back ----------------------


def _migrate() -> str:
    out = io.StringIO()
    call_command("keycore_root_key", "migrate", "--in-process", stdout=out)
    return out.getvalue()


def _status() -> str:
    out = io.StringIO()
    call_command("keycore_root_key", "status", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_migrating_to_a_kms_wrapped_root_key_and_back_keeps_every_secret_readable(
    root_kms, settings, use_root_keys, caplog
):
    caplog.set_level(logging.DEBUG)
    settings.KEYCORE_JOB_BATCH_SIZE = 2
    documents = seed_local_tenants(3, 1, prefix=f"rk-{root_kms.name}")
    env_key = settings.KEYCORE_ROOT_KEY

    # to the KMS: the new key wrapped, made current, the environment's key kept as previous until the job ran
    text, _ = _create(root_kms, settings)
    wrapped = WrappedRootKey.parse(text)
    use_root_keys(wrapped=text, previous=[env_key], kms=root_kms)
    before = _status()
    assert f"current root key: {wrapped.root_key_id}, sealed by KMS {root_kms.name}" in before
    assert f"install {wrapped.install_id}" in before and "still sealed under a previous root key: 3 KMS" in before
    assert "every secret is sealed under the current root key" in _migrate()
    use_root_keys(wrapped=text, previous=[], kms=root_kms)  # the environment's root key is gone
    for config in KmsConfig.objects.all():
        assert not root_keyring().needs_reseal(bytes(config.sealed_secrets))
        assert unseal_secrets(config)["kek"]
    for doc in documents:
        assert crypto_decrypt(tenant=doc.tenant, edek=doc.edek, fields=doc.fields, meta=META) == doc.plain
    # a credential sealed now is under the KMS-wrapped root key
    config = KmsConfig.objects.first()
    seal_secrets(config, {"kek": "new credential"})
    assert unseal_secrets(config) == {"kek": "new credential"}

    # and back to a root key in the environment: the wrapped one is previous, opened by its KMS, until the job ran
    new_env_key = generate_root_key_text()
    use_root_keys(current=new_env_key, previous=[text], kms=root_kms)
    assert "sealed by KMS" in _status()
    _migrate()
    settings.KEYCORE_ROOT_KEY_KMS, settings.KEYCORE_ROOT_KEY_KMS_OPTIONS = "", {}
    use_root_keys(current=new_env_key, previous=[])
    for config in KmsConfig.objects.all():
        assert unseal_secrets(config)["kek"]
    for doc in documents:
        assert crypto_decrypt(tenant=doc.tenant, edek=doc.edek, fields=doc.fields, meta=META) == doc.plain
    for leaked in _key_texts(load_root_key(new_env_key)):
        assert leaked not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_celery_workers_started_with_only_the_wrapped_root_key_run_the_migration(
    settings, use_root_keys, moto_server, tmp_path
):
    from tests.workers import Worker

    documents = seed_local_tenants(3, 1, prefix="rk-worker")
    env_key = settings.KEYCORE_ROOT_KEY
    kms = aws_kms(moto_server)
    text, _ = _create(kms, settings)
    use_root_keys(wrapped=text, previous=[env_key], kms=kms)
    worker = Worker(
        tmp_path,
        concurrency=1,
        extra_env={
            "KEYCORE_ROOT_KEY": "",
            "KEYCORE_ROOT_KEY_WRAPPED": text,
            "KEYCORE_ROOT_KEY_PREVIOUS": env_key,
            **kms.env(tmp_path),
        },
    )
    worker.configure_app()
    worker.start()
    out = io.StringIO()
    try:
        call_command("keycore_root_key", "migrate", "--wait", "--timeout", "180", stdout=out)
    finally:
        worker.stop()
        worker.restore_app()
    assert "succeeded, 3 of 3 done, 0 failed" in out.getvalue()
    # the web side (this process) and a worker held the root key: neither wrote it down anywhere
    root_key = load_root_key(text)
    assert _places_holding(root_key, [tmp_path, Path(settings.VAR_DIR)]) == []
    (tmp_path / "control").write_text(base64.b64encode(root_key).decode())  # the search finds what is there
    assert _places_holding(root_key, [tmp_path]) == [f"file: {tmp_path / 'control'}"]
    use_root_keys(wrapped=text, previous=[], kms=kms)
    for config in KmsConfig.objects.all():
        assert unseal_secrets(config)["kek"]
    for doc in documents:
        assert crypto_decrypt(tenant=doc.tenant, edek=doc.edek, fields=doc.fields, meta=META) == doc.plain


@pytest.mark.django_db
def test_without_the_migration_the_environments_root_key_cannot_be_dropped(settings, use_root_keys, moto_server):
    """The control for the test above: it proves something only because this fails."""
    seed_local_tenants(1, 1, prefix="rk-control", documents=False)
    kms = aws_kms(moto_server)
    text, _ = _create(kms, settings)
    use_root_keys(wrapped=text, previous=[], kms=kms)
    with pytest.raises(errors.KmsMisconfigured, match="KEYCORE_ROOT_KEY_PREVIOUS"):
        unseal_secrets(KmsConfig.objects.first())


# --- what status and /readyz show -------------------------------------------------------------------------


@pytest.mark.django_db
def test_status_names_the_kms_and_its_key_and_never_the_root_key(settings, use_root_keys, moto_server):
    kms = aws_kms(moto_server)
    text, _ = _create(kms, settings)
    use_root_keys(wrapped=text, kms=kms)
    shown = _status()
    assert f"sealed by KMS aws: AWS KMS {kms.options['key_id']}" in shown and "unwrapped: yes" in shown
    for leaked in [*_key_texts(load_root_key(text)), text.rsplit(":", 1)[1]]:
        assert leaked not in shown
    kms.revoke()
    use_root_keys(wrapped=text, kms=kms)
    with pytest.raises(CommandError, match="could not be unwrapped"):
        _status()


@pytest.mark.django_db
def test_readiness_reports_what_seals_the_root_key_and_a_root_key_that_cannot_be_unwrapped(
    client, settings, use_root_keys, moto_server
):
    kms = aws_kms(moto_server)
    text, _ = _create(kms, settings)
    use_root_keys(wrapped=text, kms=kms)
    ready = client.get(reverse("readyz"))
    assert ready.json()["root_key"] == {
        "seal": "aws",
        "unsealed": True,
        "root_key_id": WrappedRootKey.parse(text).root_key_id,
    }
    assert ready.json()["checks"]["root_key"] == "ok"

    kms.revoke()
    use_root_keys(wrapped=text, kms=kms)  # a process that has not unwrapped it yet
    refused = client.get(reverse("readyz"))
    assert refused.status_code == 503
    assert refused.json()["checks"]["root_key"] == "error: kms-key-not-found"
    assert refused.json()["root_key"]["unsealed"] is False
    assert kms.options["key_id"] not in refused.content.decode()
