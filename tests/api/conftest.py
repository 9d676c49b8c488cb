"""Fixtures of the API tests: API keys with chosen scopes, and a client that checks every answer.

Every response an API test receives through the ``api`` client is kept; when the
test ends, the raw bytes of each are searched for every secret that exists at
that moment (KMS credentials and local KEKs unsealed, their sealed forms, tenant
key wraps, API key hashes and raw keys, invitation tokens from sent emails, the
root key). A serializer that leaks one fails every test that touched it.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field

import pytest

ALL_SCOPES = ["tenants:read", "tenants:write", "keys:write", "jobs:write", "events:read", "crypto"]


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict
    json: object = None

    @property
    def problem_type(self) -> str:
        return self.json.get("type", "").rsplit("/", 1)[-1] if isinstance(self.json, dict) else ""


@dataclass
class ApiClient:
    """JSON over Django's test client, with a bearer key; every answer is kept for the secret scan."""

    client: object
    key: str | None = None
    answers: list[Answer] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        body=None,
        *,
        key: str | None = "default",
        headers=None,
        raw=None,
        content_type="application/json",
    ) -> Answer:
        extra = {}
        key = self.key if key == "default" else key
        if key:
            extra["HTTP_AUTHORIZATION"] = f"Bearer {key}"
        for name, value in (headers or {}).items():
            extra["HTTP_" + name.upper().replace("-", "_")] = value
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if data is None and method in ("POST", "PATCH", "PUT"):
            data = ""  # an empty body, as HTTP clients send it (not the test client's empty multipart form)
        if data is None:
            response = getattr(self.client, method.lower())(path, **extra)
        else:
            response = getattr(self.client, method.lower())(path, data=data, content_type=content_type, **extra)
        content = response.content
        answer = Answer(response.status_code, content, dict(response.headers))
        if content:
            assert response["Content-Type"].split(";")[0] in ("application/json", "application/problem+json"), (
                f"{method} {path} answered {response['Content-Type']}: {content[:200]!r}"
            )
            answer.json = json.loads(content)
        if response.status_code >= 400:
            assert response["Content-Type"] == "application/problem+json", (method, path, response.status_code)
            assert {"type", "title", "status", "detail"} <= set(answer.json), answer.json
            assert answer.json["status"] == response.status_code
            assert b"Traceback" not in content
        self.answers.append(answer)
        return answer

    def get(self, path, **kw) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw) -> Answer:
        return self.request("POST", path, body, **kw)

    def patch(self, path, body=None, **kw) -> Answer:
        return self.request("PATCH", path, body, **kw)


def known_secrets() -> list[bytes]:
    """Every secret in the database and outbox now, in the encodings a leak could take."""
    from django.conf import settings
    from django.core import mail

    from keycore.models import ApiKey, KmsConfig, TenantKey, TenantKeyWrap
    from keycore.sealing import unseal_secrets

    found: list[bytes] = [settings.KEYCORE_ROOT_KEY.encode()]
    from keycore.models import VendorKey

    for config in [*KmsConfig.objects.all(), *VendorKey.objects.all()]:
        if config.sealed_secrets:
            found.append(base64.b64encode(bytes(config.sealed_secrets)))
            found += [value.encode() for value in unseal_secrets(config).values() if value and len(value) >= 8]
    found += [base64.b64encode(bytes(w.wrapped)) for w in TenantKeyWrap.objects.all()]
    found += [base64.b64encode(bytes(k.check_value)) for k in TenantKey.objects.all()]
    found += [k.key_hash.encode() for k in ApiKey.objects.all()]
    found += [raw.encode() for raw in _issued_keys]
    for message in mail.outbox:
        found += [token.encode() for token in re.findall(r"/invitations/([^/\s]+)/", message.body)]
    return found


_issued_keys: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_api_state():
    from keycore.api import authentication, throttling

    authentication.key_cache.clear()
    throttling.reset()
    _issued_keys.clear()
    yield
    authentication.key_cache.clear()
    throttling.reset()


@pytest.fixture
def make_key(db):
    """make_key(scopes, tenants=None, expires_at=None) → the raw key, as the management command prints it."""
    from keycore.services.apikeys import api_key_create
    from keycore.services.audit import Actor

    def make(scopes=ALL_SCOPES, *, tenants=None, expires_at=None, name="test key"):
        _key, raw = api_key_create(
            name=name, scopes=list(scopes), tenants=tenants, expires_at=expires_at, actor=Actor.system("tests")
        )
        _issued_keys.append(raw)
        return raw

    return make


@pytest.fixture
def api(client, make_key):
    """A client holding a key with every scope; at teardown, no secret may appear in any answer it got."""
    api = ApiClient(client, make_key())
    yield api
    secrets = known_secrets()
    for answer in api.answers:
        for secret in secrets:
            assert secret not in answer.body, f"a secret leaked in a response: {answer.body[:300]!r}"
