"""Production mode refuses to start without its secrets; the embedded default generates them.

Every entry point of a KeyCore process is tried in a fresh interpreter: the web
application (WSGI and ASGI), the Celery worker, and management commands. The one
command that exists to *make* the root key runs before there is one.
"""

import os
import subprocess
import sys
from pathlib import Path

from keycore.crypto.rootkey import parse_root_key

ROOT = Path(__file__).resolve().parent.parent
A_ROOT_KEY = "A" * 43 + "="


def _env(env_extra: dict, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYCORE_", "SECRET_KEY", "DEBUG", "PYTEST"))}
    env.pop("DATABASE_URL", None)
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "KEYCORE_VAR_DIR": str(tmp_path / "var"), **env_extra})
    return env


def _python(code: str, env_extra: dict, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_env(env_extra, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _manage(args: list[str], env_extra: dict, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=_env(env_extra, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _settings(env_extra: dict, tmp_path) -> subprocess.CompletedProcess:
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.SESSION_COOKIE_SECURE, settings.SECURE_HSTS_SECONDS)"
    )
    return _python(code, env_extra, tmp_path)


def test_the_web_application_refuses_to_start_without_a_secret_key(tmp_path):
    for module in ("config.wsgi", "config.asgi"):
        result = _python(f"import {module}", {"KEYCORE_ROOT_KEY": A_ROOT_KEY}, tmp_path)
        assert result.returncode != 0
        assert "SECRET_KEY" in result.stderr


def test_the_web_application_refuses_to_start_without_a_root_key(tmp_path):
    for module in ("config.wsgi", "config.asgi"):
        result = _python(f"import {module}", {"SECRET_KEY": "s" * 50}, tmp_path)
        assert result.returncode != 0
        assert "KEYCORE_ROOT_KEY" in result.stderr
        assert "keycore_root_key --generate" in result.stderr


def test_the_web_application_refuses_a_malformed_root_key(tmp_path):
    result = _python("import config.wsgi", {"SECRET_KEY": "s" * 50, "KEYCORE_ROOT_KEY": "too-short"}, tmp_path)
    assert result.returncode != 0
    assert "KEYCORE_ROOT_KEY" in result.stderr


def test_management_commands_refuse_to_run_without_a_root_key(tmp_path):
    result = _manage(["migrate", "--check"], {"SECRET_KEY": "s" * 50}, tmp_path)
    assert result.returncode != 0
    assert "KEYCORE_ROOT_KEY" in result.stderr


def test_the_celery_worker_refuses_to_start_without_a_root_key(tmp_path):
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "--without-mingle"]
    env = _env({"SECRET_KEY": "s" * 50, "CELERY_BROKER_URL": "memory://"}, tmp_path)
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the worker started without a root key") from exc
    assert result.returncode != 0
    assert "KEYCORE_ROOT_KEY" in result.stderr + result.stdout


def test_a_root_key_can_be_generated_before_one_exists(tmp_path):
    """The error that asks for a root key names this command: it must work in exactly that state."""
    result = _manage(["keycore_root_key", "--generate"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert len(parse_root_key(key)) == 32
    # a second run gives another key, and the generated one starts the application
    assert _manage(["keycore_root_key", "--generate"], {}, tmp_path).stdout.strip() != key
    started = _python("import config.wsgi", {"SECRET_KEY": "s" * 50, "KEYCORE_ROOT_KEY": key}, tmp_path)
    assert started.returncode == 0, started.stderr


def test_showing_the_current_root_key_still_needs_one(tmp_path):
    result = _manage(["keycore_root_key"], {"SECRET_KEY": "s" * 50}, tmp_path)
    assert result.returncode != 0
    assert "KEYCORE_ROOT_KEY" in result.stderr
    shown = _manage(["keycore_root_key"], {"SECRET_KEY": "s" * 50, "KEYCORE_ROOT_KEY": A_ROOT_KEY}, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "current root key:" in shown.stdout and A_ROOT_KEY not in shown.stdout


def test_production_defaults_are_secure(tmp_path):
    result = _settings({"SECRET_KEY": "s" * 50, "KEYCORE_ROOT_KEY": A_ROOT_KEY}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "31536000"]


def test_the_embedded_default_generates_its_secrets_once(tmp_path):
    first = _settings({"DEBUG": "1"}, tmp_path)
    assert first.returncode == 0, first.stderr
    root_key = (tmp_path / "var" / "root_key").read_text()
    assert oct((tmp_path / "var" / "root_key").stat().st_mode & 0o777) == "0o600"
    assert _settings({"DEBUG": "1"}, tmp_path).returncode == 0
    assert (tmp_path / "var" / "root_key").read_text() == root_key


def test_behind_a_proxy_one_proxy_is_trusted_unless_told_otherwise(tmp_path):
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.KEYCORE_TRUSTED_PROXY_COUNT, settings.ALLAUTH_TRUSTED_PROXY_COUNT)"
    )
    secrets = {"SECRET_KEY": "s" * 50, "KEYCORE_ROOT_KEY": A_ROOT_KEY}
    assert _python(code, secrets, tmp_path).stdout.split() == ["0", "0"]
    assert _python(code, {**secrets, "KEYCORE_BEHIND_PROXY": "1"}, tmp_path).stdout.split() == ["1", "1"]
    two = {**secrets, "KEYCORE_BEHIND_PROXY": "1", "KEYCORE_TRUSTED_PROXY_COUNT": "2"}
    assert _python(code, two, tmp_path).stdout.split() == ["2", "2"]
