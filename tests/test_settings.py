"""Production mode refuses to start without its secrets; the embedded default generates them."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(env_extra: dict, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYCORE_", "SECRET_KEY", "DEBUG", "PYTEST"))}
    env.pop("DATABASE_URL", None)
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "KEYCORE_VAR_DIR": str(tmp_path / "var"), **env_extra})
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.SESSION_COOKIE_SECURE, settings.SECURE_HSTS_SECONDS)"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = _run({}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_to_start_without_a_root_key(tmp_path):
    result = _run({"SECRET_KEY": "s" * 50}, tmp_path)
    assert result.returncode != 0
    assert "KEYCORE_ROOT_KEY" in result.stderr


def test_production_defaults_are_secure(tmp_path):
    result = _run({"SECRET_KEY": "s" * 50, "KEYCORE_ROOT_KEY": "A" * 43 + "="}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "31536000"]


def test_the_embedded_default_generates_its_secrets_once(tmp_path):
    first = _run({"DEBUG": "1"}, tmp_path)
    assert first.returncode == 0, first.stderr
    root_key = (tmp_path / "var" / "root_key").read_text()
    assert oct((tmp_path / "var" / "root_key").stat().st_mode & 0o777) == "0o600"
    assert _run({"DEBUG": "1"}, tmp_path).returncode == 0
    assert (tmp_path / "var" / "root_key").read_text() == root_key
