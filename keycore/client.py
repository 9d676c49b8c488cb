"""A small, typed Python client for KeyCore's REST API: the crypto calls and the vendor bridge.

Importable without Django (it needs only urllib3)::

    from keycore.client import KeyCoreClient

    kc = KeyCoreClient("https://keys.example.com", api_key, requesting_id="billing-service")
    doc = kc.encrypt("acme", {"iban": b"DE89 3704 0044 0532 0130 00"}, label="invoices")
    assert kc.decrypt("acme", doc.edek, doc.fields)["iban"].startswith(b"DE89")

Bytes in, bytes out: base64 is handled here. Connections are pooled and kept
alive (one client per process, shared by threads). Requests that can be repeated
safely are retried with exponential backoff on 503 (a KMS unavailable, or KeyCore's
own database or broker restarting), 429 (rate limited) and lost connections,
honouring ``Retry-After``; creating calls carry an
``Idempotency-Key`` that stays the same across their retries, so a retry never
creates twice. Errors are exceptions that mirror the API's problem types
(:class:`TenantNotFound`, :class:`KeyRevoked`, :class:`KmsUnavailable`, …), all
subclasses of :class:`KeyCoreAPIError`. Batch calls return each item's result or
its exception in place.
"""

from __future__ import annotations

import base64
import email.utils
import json
import random
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import urllib3

__all__ = [
    "AuthenticationFailed",
    "Conflict",
    "CryptoError",
    "Document",
    "EncryptedDocument",
    "IdempotencyKeyReused",
    "InvalidInput",
    "KeyCoreAPIError",
    "KeyCoreClient",
    "KeyDestroyed",
    "KeyDisabled",
    "KeyRevoked",
    "KeyUnavailable",
    "KmsError",
    "KmsUnavailable",
    "LeaseUnavailable",
    "MalformedData",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "ServerError",
    "ServiceUnavailable",
    "TamperedData",
    "TenantInactive",
    "TenantNotFound",
    "TransportError",
]

PROBLEM_BASE = "https://keycore.dev/problems/"
API_PREFIX = "/api/v1"


# --- errors -----------------------------------------------------------------------------------


class KeyCoreAPIError(Exception):
    """A problem the API answered with (RFC 9457), or a transport failure (``status`` 0).

    ``type`` is the problem's stable URI and ``code`` its last segment
    (``tenant-not-found``); ``errors`` maps field names to messages.
    """

    def __init__(
        self,
        detail: str,
        *,
        status: int = 0,
        type: str = "",
        title: str = "",
        errors: Mapping[str, list[str]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.type = type
        self.title = title
        self.errors = dict(errors or {})
        self.retry_after = retry_after

    @property
    def code(self) -> str:
        return self.type.rsplit("/", 1)[-1] if self.type else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.detail!r})"


class TransportError(KeyCoreAPIError):
    """KeyCore could not be reached (connection refused, reset, timed out) even after retries."""


class InvalidInput(KeyCoreAPIError):
    """The request is wrong (400): see ``errors``."""


class AuthenticationFailed(KeyCoreAPIError):
    """The API key is missing, invalid, revoked or expired (401)."""


class PermissionDenied(KeyCoreAPIError):
    """The key lacks the scope, or the action is not allowed (403)."""


class NotFound(KeyCoreAPIError):
    """Nothing there (404)."""


class TenantNotFound(NotFound):
    """No such tenant, or one this key may not use (404)."""


class Conflict(KeyCoreAPIError):
    """The action does not fit the current state (409)."""


class TenantInactive(Conflict):
    """The tenant is suspended or offboarded: its data cannot be used."""


class KeyUnavailable(Conflict):
    """The tenant has no usable key for this."""


class KeyRevoked(KeyUnavailable):
    """The tenant revoked its key: nothing under it can be read until it is re-enabled."""


class KeyDisabled(KeyUnavailable):
    """The tenant's key is disabled."""


class KeyDestroyed(KeyUnavailable):
    """The tenant key version was destroyed (410): data under it is gone."""


class CryptoError(KeyCoreAPIError):
    """The data could not be processed."""


class MalformedData(CryptoError):
    """Bytes that are not a KeyCore EDEK or field ciphertext (400)."""


class TamperedData(CryptoError):
    """Well-formed data that fails authentication: altered, or another tenant's or document's (422)."""


class IdempotencyKeyReused(KeyCoreAPIError):
    """The Idempotency-Key was first used for a different request (422)."""


class RateLimited(KeyCoreAPIError):
    """Too many requests for this API key (429); ``retry_after`` says when to try again."""


class KmsError(KeyCoreAPIError):
    """The tenant's KMS refused: access denied, key missing or disabled there, misconfigured (502)."""


class KmsUnavailable(KmsError):
    """The tenant's KMS is unreachable, timed out or throttled (503): retrying later can help."""


class ServerError(KeyCoreAPIError):
    """KeyCore failed unexpectedly (5xx); it has logged why."""


class ServiceUnavailable(KeyCoreAPIError):
    """KeyCore itself is briefly unavailable (503): its database or broker is restarting, or it cannot confirm
    revocations yet. Repeatable calls are retried (honouring ``Retry-After``) before this is raised."""


class LeaseUnavailable(ServiceUnavailable):
    """The SDK's lease of a tenant's key expired and KeyCore could not be reached to renew it: the SDK
    refuses (fails closed) rather than use a key whose revocation it could not have heard of."""


_BY_CODE: dict[str, type[KeyCoreAPIError]] = {
    "invalid-input": InvalidInput,
    "malformed-request": InvalidInput,
    "unsupported-media-type": InvalidInput,
    "request-too-large": InvalidInput,
    "not-authenticated": AuthenticationFailed,
    "authentication-failed-api-key": AuthenticationFailed,
    "forbidden": PermissionDenied,
    "not-found": NotFound,
    "tenant-not-found": TenantNotFound,
    "conflict": Conflict,
    "tenant-inactive": TenantInactive,
    "idempotency-key-in-progress": Conflict,
    "idempotency-key-reused": IdempotencyKeyReused,
    "key-unavailable": KeyUnavailable,
    "key-revoked": KeyRevoked,
    "key-disabled": KeyDisabled,
    "key-destroyed": KeyDestroyed,
    "crypto-error": CryptoError,
    "malformed-data": MalformedData,
    "authentication-failed": TamperedData,
    "throttled": RateLimited,
    "kms-error": KmsError,
    "kms-access-denied": KmsError,
    "kms-key-not-found": KmsError,
    "kms-key-disabled": KmsError,
    "kms-misconfigured": KmsError,
    "kms-unreachable": KmsUnavailable,
    "kms-timeout": KmsUnavailable,
    "kms-throttled": KmsUnavailable,
    "egress-denied": KmsError,
    "service-unavailable": ServiceUnavailable,
    "database-unavailable": ServiceUnavailable,
    "broker-unavailable": ServiceUnavailable,
    "revocation-status-unknown": ServiceUnavailable,
}
_BY_STATUS: dict[int, type[KeyCoreAPIError]] = {
    400: InvalidInput,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    410: KeyDestroyed,
    422: CryptoError,
    429: RateLimited,
    502: KmsError,
    503: ServiceUnavailable,
}


def error_from_problem(problem: Mapping[str, Any], *, status: int = 0, retry_after: float | None = None):
    """The exception for a problem object (a whole response's, or one batch item's)."""
    status = int(problem.get("status") or status or 0)
    type_ = str(problem.get("type") or "")
    code = type_[len(PROBLEM_BASE) :] if type_.startswith(PROBLEM_BASE) else type_.rsplit("/", 1)[-1]
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else KeyCoreAPIError)
    return cls(
        str(problem.get("detail") or problem.get("title") or f"HTTP {status}"),
        status=status,
        type=type_,
        title=str(problem.get("title") or ""),
        errors=problem.get("errors") if isinstance(problem.get("errors"), dict) else None,
        retry_after=retry_after,
    )


# --- values --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncryptedDocument:
    """What to store: the EDEK and the encrypted fields."""

    edek: bytes
    fields: dict[str, bytes]


@dataclass(frozen=True)
class Document:
    """One item of a batch call: the tenant, the fields (plaintexts, or ciphertexts with ``edek``) and metadata.

    Metadata left as None falls back to the batch's (and the client's ``requesting_id``).
    """

    tenant: str
    fields: Mapping[str, bytes]
    edek: bytes | None = None
    label: str | None = None
    object_id: str | None = None
    request_id: str | None = None
    source_ip: str | None = None
    requesting_id: str | None = None
    custom: Mapping[str, Any] | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _encode_fields(fields: Mapping[str, bytes]) -> dict[str, str]:
    return {name: _b64(value) for name, value in fields.items()}


def _decode_fields(fields: Mapping[str, str]) -> dict[str, bytes]:
    return {name: _unb64(value) for name, value in fields.items()}


def _meta(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


@dataclass
class _Call:
    method: str
    path: str
    body: Any = None
    params: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    #: whether sending it twice is harmless (reads, crypto, idempotent creates)
    repeatable: bool = True
    headers: dict[str, str] = field(default_factory=dict)


# --- the client ------------------------------------------------------------------------------------


class KeyCoreClient:
    """One per process (thread-safe); ``close()`` it, or use it as a context manager.

    ``retries`` is how many times a failed, repeatable request is tried again
    (503, 429, lost connection); waits grow from ``backoff`` seconds, doubling,
    with jitter, up to ``max_backoff``, or follow ``Retry-After`` (up to
    ``max_retry_after``). ``requesting_id`` is sent with every crypto call that
    does not name its own.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_retry_after: float = 30.0,
        requesting_id: str | None = None,
        pool_size: int = 10,
        user_agent: str = "keycore-python-client/1",
    ) -> None:
        base = base_url.rstrip("/")
        if base.endswith(API_PREFIX):
            base = base[: -len(API_PREFIX)]
        self.base_url = base
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.requesting_id = requesting_id
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": user_agent,
        }
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, block=False, retries=False)

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> KeyCoreClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never the key
        return f"KeyCoreClient({self.base_url!r})"

    # -- transport --------------------------------------------------------------------------

    def _send(self, call: _Call) -> Any:
        url = self.base_url + API_PREFIX + call.path
        if call.params:
            url += "?" + urlencode({k: v for k, v in call.params.items() if v is not None}, doseq=True)
        headers = dict(self._headers, **call.headers)
        body = None
        if call.body is not None or call.method == "POST":
            body = json.dumps(call.body if call.body is not None else {}, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if call.idempotency_key:
            headers["Idempotency-Key"] = call.idempotency_key
        attempt = 0
        while True:
            try:
                response = self._pool.request(
                    call.method, url, body=body, headers=headers, timeout=self.timeout, retries=False
                )
            except urllib3.exceptions.HTTPError as exc:
                never_sent = isinstance(
                    exc, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
                )
                if attempt < self.retries and (call.repeatable or never_sent):
                    attempt += 1
                    time.sleep(self._delay(attempt, None))
                    continue
                raise TransportError(f"KeyCore at {self.base_url} could not be reached: {exc}") from exc
            if response.status < 400:
                return json.loads(response.data) if response.data else None
            error = self._error(response)
            retry = response.status in (429, 503) or error.code == "idempotency-key-in-progress"
            if retry and call.repeatable and attempt < self.retries:
                attempt += 1
                time.sleep(self._delay(attempt, error.retry_after))
                continue
            raise error

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return delay / 2 + random.uniform(0, delay / 2)

    @staticmethod
    def _error(response) -> KeyCoreAPIError:
        retry_after = _retry_after(response.headers.get("Retry-After"))
        try:
            problem = json.loads(response.data)
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            text = response.data[:200].decode("utf-8", "replace")
            problem = {"status": response.status, "detail": f"HTTP {response.status}: {text}"}
        return error_from_problem(problem, status=response.status, retry_after=retry_after)

    def _get(self, path: str, **params: Any) -> Any:
        return self._send(_Call("GET", path, params=params))

    def _create(self, path: str, body: Any = None, idempotency_key: str | None = None) -> Any:
        return self._send(_Call("POST", path, body, idempotency_key=idempotency_key or str(uuid.uuid4())))

    def _action(self, path: str, body: Any = None) -> Any:
        return self._send(_Call("POST", path, body, repeatable=False))

    def _pages(self, path: str, **params: Any) -> Iterator[dict]:
        """Every item of a cursor-paginated list, fetching pages as the caller iterates."""
        while True:
            page = self._get(path, **params)
            yield from page["results"]
            if not page.get("next"):
                return
            params = {**params, **dict(parse_qsl(urlsplit(page["next"]).query))}

    # -- crypto --------------------------------------------------------------------------------

    def encrypt(
        self,
        tenant: str,
        fields: Mapping[str, bytes],
        *,
        label: str | None = None,
        requesting_id: str | None = None,
        source_ip: str | None = None,
        object_id: str | None = None,
        request_id: str | None = None,
        custom: Mapping[str, Any] | None = None,
    ) -> EncryptedDocument:
        """Encrypt a document (field name → bytes) for ``tenant``; store the EDEK with the fields."""
        body = {
            "tenant": tenant,
            "fields": _encode_fields(fields),
            **_meta(
                requesting_id=requesting_id or self.requesting_id,
                label=label,
                source_ip=source_ip,
                object_id=object_id,
                request_id=request_id,
                custom=custom,
            ),
        }
        out = self._send(_Call("POST", "/crypto/encrypt", body))
        return EncryptedDocument(_unb64(out["edek"]), _decode_fields(out["fields"]))

    def decrypt(
        self,
        tenant: str,
        edek: bytes,
        fields: Mapping[str, bytes],
        *,
        label: str | None = None,
        requesting_id: str | None = None,
        source_ip: str | None = None,
        object_id: str | None = None,
        request_id: str | None = None,
        custom: Mapping[str, Any] | None = None,
    ) -> dict[str, bytes]:
        """Decrypt the given fields of a document of ``tenant``."""
        body = {
            "tenant": tenant,
            "edek": _b64(edek),
            "fields": _encode_fields(fields),
            **_meta(
                requesting_id=requesting_id or self.requesting_id,
                label=label,
                source_ip=source_ip,
                object_id=object_id,
                request_id=request_id,
                custom=custom,
            ),
        }
        return _decode_fields(self._send(_Call("POST", "/crypto/decrypt", body))["fields"])

    def rekey(
        self,
        tenant: str,
        edeks: Sequence[bytes],
        *,
        new_tenant: str | None = None,
        label: str | None = None,
        requesting_id: str | None = None,
        source_ip: str | None = None,
    ) -> list[bytes | KeyCoreAPIError]:
        """Rewrap EDEKs to the current key of ``tenant`` (or of ``new_tenant``); each result in place."""
        body = {
            "tenant": tenant,
            "edeks": [_b64(e) for e in edeks],
            **_meta(
                new_tenant=new_tenant,
                requesting_id=requesting_id or self.requesting_id,
                label=label,
                source_ip=source_ip,
            ),
        }
        out = self._send(_Call("POST", "/crypto/rekey", body))
        results: list[bytes | KeyCoreAPIError] = [_unb64(e) if e is not None else None for e in out["edeks"]]
        for problem in out["errors"]:
            results[problem["index"]] = error_from_problem(problem)
        return results

    def batch_encrypt(
        self,
        documents: Iterable[Document | tuple[str, Mapping[str, bytes]]],
        *,
        label: str | None = None,
        requesting_id: str | None = None,
        source_ip: str | None = None,
    ) -> list[EncryptedDocument | KeyCoreAPIError]:
        """Encrypt up to 1,000 documents (``Document`` or ``(tenant, fields)``); each result or error in place."""
        items = [self._item(d, with_edek=False) for d in documents]
        out = self._batch("/crypto/batch-encrypt", items, label, requesting_id, source_ip)
        return [
            error_from_problem(r["error"])
            if "error" in r
            else EncryptedDocument(_unb64(r["edek"]), _decode_fields(r["fields"]))
            for r in out
        ]

    def batch_decrypt(
        self,
        documents: Iterable[Document | tuple[str, bytes, Mapping[str, bytes]]],
        *,
        label: str | None = None,
        requesting_id: str | None = None,
        source_ip: str | None = None,
    ) -> list[dict[str, bytes] | KeyCoreAPIError]:
        """Decrypt up to 1,000 documents (``Document`` with ``edek``, or ``(tenant, edek, fields)``)."""
        items = [self._item(d, with_edek=True) for d in documents]
        out = self._batch("/crypto/batch-decrypt", items, label, requesting_id, source_ip)
        return [error_from_problem(r["error"]) if "error" in r else _decode_fields(r["fields"]) for r in out]

    def _item(self, document, *, with_edek: bool) -> dict[str, Any]:
        if isinstance(document, tuple):
            document = Document(document[0], document[2], edek=document[1]) if with_edek else Document(*document)
        item: dict[str, Any] = {"tenant": document.tenant, "fields": _encode_fields(document.fields)}
        if with_edek:
            if document.edek is None:
                raise ValueError(f"A document of {document.tenant} to decrypt needs its EDEK.")
            item["edek"] = _b64(document.edek)
        item.update(
            _meta(
                label=document.label,
                object_id=document.object_id,
                request_id=document.request_id,
                source_ip=document.source_ip,
                requesting_id=document.requesting_id,
                custom=document.custom,
            )
        )
        return item

    def _batch(self, path, items, label, requesting_id, source_ip) -> list[dict]:
        body = {
            "items": items,
            **_meta(requesting_id=requesting_id or self.requesting_id, label=label, source_ip=source_ip),
        }
        return self._send(_Call("POST", path, body))["results"]

    # -- the SDK's API (leases, epoch, usage) and deterministic encryption ---------------------------

    def lease(self, tenant: str, *, process: str) -> dict:
        """A new lease of ``tenant``'s current key version (``lease_key`` is a secret: keep it in memory)."""
        return self._send(_Call("POST", "/crypto/leases", {"tenant": tenant, "process": process}))

    def lease_derive(self, tenant: str, key_version: int, lease_id: bytes, *, process: str) -> dict:
        """The key of the lease an EDEK names (another SDK process's, or a KeyCore process's own)."""
        body = {"tenant": tenant, "process": process, "key_version": key_version, "lease_id": _b64(lease_id)}
        return self._send(_Call("POST", "/crypto/leases/derive", body))

    def epoch(self) -> int:
        """The revocation epoch: it moves whenever a key must stop working."""
        return int(self._send(_Call("GET", "/crypto/epoch"))["epoch"])

    def report_usage(self, reports: Sequence[Mapping[str, Any]]) -> dict:
        """Report uses made of leased keys (tenant, operation, count, key_version, label, requesting_id, result);
        returns ``{"recorded": n, "skipped": [indexes of reports of unknown or inactive tenants]}``."""
        return self._send(_Call("POST", "/crypto/usage", {"reports": [dict(r) for r in reports]}))

    def encrypt_deterministic(
        self, tenant: str, field: str, value: bytes, *, requesting_id: str | None = None, label: str | None = None
    ) -> bytes:
        """The deterministic ciphertext of ``value`` for ``field``: equal values, equal bytes."""
        body = {
            "tenant": tenant,
            "field": field,
            "value": _b64(value),
            **_meta(requesting_id=requesting_id or self.requesting_id, label=label),
        }
        return _unb64(self._send(_Call("POST", "/crypto/deterministic/encrypt", body))["ciphertext"])

    def decrypt_deterministic(
        self, tenant: str, field: str, ciphertext: bytes, *, requesting_id: str | None = None, label: str | None = None
    ) -> bytes:
        body = {
            "tenant": tenant,
            "field": field,
            "ciphertext": _b64(ciphertext),
            **_meta(requesting_id=requesting_id or self.requesting_id, label=label),
        }
        return _unb64(self._send(_Call("POST", "/crypto/deterministic/decrypt", body))["value"])

    def search_terms(
        self, tenant: str, field: str, value: bytes, *, requesting_id: str | None = None, label: str | None = None
    ) -> list[bytes]:
        """The ciphertexts of ``value`` under every key version still in use, newest first (for ``IN (...)``)."""
        body = {
            "tenant": tenant,
            "field": field,
            "value": _b64(value),
            **_meta(requesting_id=requesting_id or self.requesting_id, label=label),
        }
        return [_unb64(t) for t in self._send(_Call("POST", "/crypto/search-terms", body))["terms"]]

    # -- tenants ------------------------------------------------------------------------------------

    def tenants(self, **filters: Any) -> Iterator[dict]:
        """Every tenant matching ``filters`` (q, match, status, key_ownership, provider, health)."""
        return self._pages("/tenants/", **filters)

    def tenant(self, external_id: str) -> dict:
        return self._get(f"/tenants/{_seg(external_id)}/")

    def create_tenant(
        self,
        external_id: str,
        name: str,
        *,
        admins: Iterable[str | Mapping[str, str]] = (),
        idempotency_key: str | None = None,
    ) -> dict:
        """Create a tenant (with a working key) and invite its admins (emails, or {"email", "role"})."""
        body = {
            "external_id": external_id,
            "name": name,
            "admins": [{"email": a} if isinstance(a, str) else dict(a) for a in admins],
        }
        return self._create("/tenants/", body, idempotency_key)

    def bulk_create_tenants(self, tenants: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None) -> dict:
        """Create up to 1,000 tenants; returns per-item results ({"created", "failed", "results"})."""
        return self._create("/tenants/bulk/", {"tenants": [dict(t) for t in tenants]}, idempotency_key)

    def update_tenant(self, external_id: str, **changes: Any) -> dict:
        """Change name, require_mfa, key_rotation_days, event_retention_days."""
        return self._send(_Call("PATCH", f"/tenants/{_seg(external_id)}/", changes))

    def suspend_tenant(self, external_id: str, *, reason: str = "") -> dict:
        return self._action(f"/tenants/{_seg(external_id)}/suspend/", {"reason": reason})

    def reactivate_tenant(self, external_id: str, *, reason: str = "") -> dict:
        return self._action(f"/tenants/{_seg(external_id)}/reactivate/", {"reason": reason})

    def offboard_tenant(self, external_id: str, *, reason: str = "") -> dict:
        return self._action(f"/tenants/{_seg(external_id)}/offboard/", {"reason": reason})

    # -- invitations -----------------------------------------------------------------------------------

    def invite(self, external_id: str, email: str, role: str = "owner", *, idempotency_key: str | None = None) -> dict:
        return self._create(
            f"/tenants/{_seg(external_id)}/invitations/", {"email": email, "role": role}, idempotency_key
        )

    def invitations(self, external_id: str) -> Iterator[dict]:
        return self._pages(f"/tenants/{_seg(external_id)}/invitations/")

    def revoke_invitation(self, external_id: str, uid: str) -> dict:
        return self._action(f"/tenants/{_seg(external_id)}/invitations/{_seg(uid)}/revoke/")

    def resend_invitation(self, external_id: str, uid: str) -> dict:
        return self._action(f"/tenants/{_seg(external_id)}/invitations/{_seg(uid)}/resend/")

    # -- KMS configurations and history --------------------------------------------------------------

    def kms_configs(self, external_id: str) -> list[dict]:
        """The tenant's configurations, oldest first (``is_primary`` marks the one that wraps new keys)."""
        return list(self._pages(f"/tenants/{_seg(external_id)}/kms-configs/"))

    def kms_config(self, external_id: str, uid: str) -> dict:
        return self._get(f"/tenants/{_seg(external_id)}/kms-configs/{_seg(uid)}/")

    def create_kms_config(
        self,
        external_id: str,
        provider: str,
        *,
        name: str = "",
        settings: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        rate_limit: int = 0,
        make_primary: bool = False,
        idempotency_key: str | None = None,
    ) -> dict:
        """Add a vendor-provided configuration; KeyCore tests it through the KMS before saving it."""
        body = {
            "provider": provider,
            "name": name,
            "settings": dict(settings or {}),
            "secrets": dict(secrets or {}),
            "rate_limit": rate_limit,
            "make_primary": make_primary,
        }
        return self._create(f"/tenants/{_seg(external_id)}/kms-configs/", body, idempotency_key)

    def make_primary(self, external_id: str, uid: str, *, idempotency_key: str | None = None) -> dict:
        """Make a vendor-provided configuration primary; returns the rekey job it started."""
        return self._create(
            f"/tenants/{_seg(external_id)}/kms-configs/{_seg(uid)}/make-primary/", None, idempotency_key
        )

    def decrypt_only(self, external_id: str, uid: str) -> dict:
        return self._action(f"/tenants/{_seg(external_id)}/kms-configs/{_seg(uid)}/decrypt-only/")

    def retire_kms_config(self, external_id: str, uid: str) -> dict:
        return self._action(f"/tenants/{_seg(external_id)}/kms-configs/{_seg(uid)}/retire/")

    def key_history(self, external_id: str) -> Iterator[dict]:
        return self._pages(f"/tenants/{_seg(external_id)}/key-history/")

    # -- rekey jobs ---------------------------------------------------------------------------------------

    def rekey_jobs(self, **filters: Any) -> Iterator[dict]:
        """Every rekey job matching ``filters`` (state, kind, tenant)."""
        return self._pages("/rekey-jobs/", **filters)

    def rekey_job(self, uid: str) -> dict:
        return self._get(f"/rekey-jobs/{_seg(uid)}/")

    def start_rekey_job(self, external_id: str, *, idempotency_key: str | None = None) -> dict:
        """Rewrap the tenant's keys under its primary configuration; returns the job."""
        return self._create(f"/tenants/{_seg(external_id)}/rekey-jobs/", None, idempotency_key)

    def cancel_rekey_job(self, uid: str) -> dict:
        return self._action(f"/rekey-jobs/{_seg(uid)}/cancel/")

    def retry_rekey_job(self, uid: str) -> dict:
        return self._action(f"/rekey-jobs/{_seg(uid)}/retry/")

    # -- events -------------------------------------------------------------------------------------------

    def events(self, external_id: str, **filters: Any) -> Iterator[dict]:
        """The tenant's key-use events, newest first (operation, result, label, requesting_id, since, until)."""
        return self._pages(f"/tenants/{_seg(external_id)}/events/", **filters)

    def audit(self, **filters: Any) -> Iterator[dict]:
        """The audit trail, newest first (tenant, actor, action, since, until)."""
        return self._pages("/audit/", **filters)


def _seg(value: Any) -> str:
    return quote(str(value), safe="")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
