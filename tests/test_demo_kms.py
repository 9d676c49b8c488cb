"""The demo's AWS KMS (scripts/demo_kms.py, started by `make run`): KeyCore's AWS provider uses it as
it uses AWS, a tenant key wrapped in one `make run` opens in the next, and the tenant portal's AWS
form shows what to paste — only when the demo KMS runs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from keycore.providers.aws import AwsKmsProvider
from keycore.providers.base import WrapContext
from tests.conftest import require
from tests.providers.servers import free_port
from tests.tenant_portal.conftest import url

ROOT = Path(__file__).resolve().parent.parent


def _start(state: Path, port: int) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [sys.executable, "scripts/demo_kms.py", "--port", str(port), "--state", str(state)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("KEYCORE_DEMO_KMS "), line
    return proc, json.loads(line.split(" ", 1)[1])


def _provider(demo: dict) -> AwsKmsProvider:
    settings, secrets = AwsKmsProvider.clean(
        {k: demo[k] for k in ("key_id", "region", "endpoint_url")},
        {k: demo[k] for k in ("access_key_id", "secret_access_key")},
    )
    return AwsKmsProvider(settings, secrets)


def test_a_key_wrapped_in_one_run_opens_in_the_next(tmp_path):
    try:
        import moto  # noqa: F401
    except ImportError:
        require(False, "moto is not installed (the demo and test extras bring it)")
    state, port = tmp_path / "demo-kms.json", free_port()
    context = WrapContext(tenant_uid="ab" * 16, tenant_external_id="acme", config_uid="cd" * 16, key_version=1)
    tenant_key = os.urandom(32)

    first, demo = _start(state, port)
    try:
        wrapped = _provider(demo).wrap(tenant_key, context)
    finally:
        first.terminate()
        assert first.wait(timeout=10) == 0
    assert stat.S_IMODE(state.stat().st_mode) == 0o600

    second, again = _start(state, port)  # a new process: moto starts empty and makes the same key
    try:
        assert again == demo
        assert _provider(again).unwrap(wrapped, context) == tenant_key
    finally:
        second.terminate()
        second.wait(timeout=10)


DEMO = {
    "endpoint_url": "http://127.0.0.1:8765",
    "key_id": "arn:aws:kms:us-east-1:123456789012:key/5b1e7c1e-0000-4000-8000-000000000001",
    "region": "us-east-1",
    "access_key_id": "AKIAKEYCOREDEMO00001",
    "secret_access_key": "keycore-demo-secret-not-an-aws-secret",
}


@pytest.mark.django_db
def test_the_aws_form_offers_the_demo_key_only_when_the_demo_kms_runs(client, owner, tenant, settings):
    client.force_login(owner)
    settings.KEYCORE_DEMO_KMS = None
    assert "demo key" not in client.get(url("key_create", tenant, provider="aws")).content.decode()
    assert "demo AWS KMS" not in client.get(url("key_new", tenant)).content.decode()

    settings.KEYCORE_DEMO_KMS = DEMO
    page = client.get(url("key_create", tenant, provider="aws")).content.decode()
    for value in DEMO.values():
        assert value in page
    assert 'data-fill-form="kms-form"' in page and 'data-fill-field="key_id"' in page
    assert "demo AWS KMS" in client.get(url("key_new", tenant)).content.decode()
    assert "demo key" not in client.get(url("key_create", tenant, provider="kmip")).content.decode()


def test_production_never_reads_a_demo_kms():
    """Only embedded mode (DEBUG or tests) reads KEYCORE_DEMO_KMS; a production process ignores it."""
    code = "from django.conf import settings; print(settings.KEYCORE_DEMO_KMS)"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "KEYCORE_DEMO_KMS": json.dumps(DEMO),
        "SECRET_KEY": "x" * 50,
        "KEYCORE_ROOT_KEY": "dGVzdC1vbmx5LXJvb3Qta2V5LTMyLWJ5dGVzLWxvbmc=",
        "DEBUG": "0",
    }
    out = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "None"
