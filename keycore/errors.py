"""Typed errors of KeyCore.

Every error that can reach a caller (portal, REST API, job, client) is a
subclass of :class:`KeyCoreError`. Each class carries:

* ``code`` – a stable, URL-safe slug; the REST API turns it into the problem
  ``type`` (``https://keycore.dev/problems/<code>``), so clients can branch on it;
* ``title`` – a short human summary of the kind of problem;
* ``http_status`` – the status the REST API answers with;
* ``retryable`` – whether trying the same thing again later can succeed
  (KMS unreachable: yes; access denied: no). Jobs and the client use it to
  decide between backoff and giving up.

The message (``detail``) says what happened to *this* request and, where an
administrator can act, what to fix. Messages never contain key material or
credentials.
"""

from __future__ import annotations

from typing import Any


class KeyCoreError(Exception):
    code = "keycore-error"
    title = "KeyCore error"
    http_status = 500
    retryable = False

    def __init__(
        self, detail: str | None = None, *, field_errors: dict[str, list[str]] | None = None, **context: Any
    ) -> None:
        self.detail = detail or self.title
        #: field name → messages, for forms and the API's problem details ("__all__" for the whole form)
        self.field_errors = field_errors or {}
        self.context = context
        super().__init__(self.detail)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "title": self.title, "detail": self.detail, **self.context}


# --- input and state -------------------------------------------------------


class InvalidInput(KeyCoreError):
    """The request itself is wrong; ``field_errors`` maps field name → messages."""

    code = "invalid-input"
    title = "Invalid input"
    http_status = 400


class NotFound(KeyCoreError):
    code = "not-found"
    title = "Not found"
    http_status = 404


class TenantNotFound(NotFound):
    code = "tenant-not-found"
    title = "Unknown tenant"


class PermissionDenied(KeyCoreError):
    code = "forbidden"
    title = "Not allowed"
    http_status = 403


class TenantSovereignty(PermissionDenied):
    """The vendor tried what only the tenant may do (its own key, settings or members); the attempt is audited."""

    code = "tenant-sovereignty"
    title = "Only the tenant may do this"


class Conflict(KeyCoreError):
    """The action does not fit the current state (e.g. making a revoked key primary)."""

    code = "conflict"
    title = "Conflicts with the current state"
    http_status = 409


class TenantInactive(Conflict):
    code = "tenant-inactive"
    title = "Tenant is not active"


# --- data ------------------------------------------------------------------


class CryptoError(KeyCoreError):
    code = "crypto-error"
    title = "Cryptographic operation failed"
    http_status = 422


class MalformedData(CryptoError):
    """Bytes that are not a KeyCore EDEK or field ciphertext (garbage, truncated, unknown version)."""

    code = "malformed-data"
    title = "Malformed ciphertext"
    http_status = 400


class AuthenticationFailed(CryptoError):
    """Well-formed, but fails authentication: tampered, or belongs to another tenant or document."""

    code = "authentication-failed"
    title = "Ciphertext failed authentication"
    http_status = 422


# --- keys --------------------------------------------------------------------


class KeyUnavailable(KeyCoreError):
    code = "key-unavailable"
    title = "Key unavailable"
    http_status = 409


class KeyRevoked(KeyUnavailable):
    """The tenant (or its KMS) revoked the key: nothing under it can be read until re-enabled."""

    code = "key-revoked"
    title = "Key revoked"


class KeyDisabled(KeyUnavailable):
    code = "key-disabled"
    title = "Key disabled"


class KeyDestroyed(KeyUnavailable):
    code = "key-destroyed"
    title = "Key destroyed"
    http_status = 410


class LeaseExhausted(KeyCoreError):
    """A lease key wrapped as many data keys as one key may under random nonces: its holder takes a new one.
    Never reaches a caller of KeyCore: KeyCore rotates its own leases, the SDK fetches a new one."""

    code = "lease-exhausted"
    title = "Lease exhausted"
    http_status = 409


class RevocationStatusUnknown(KeyCoreError):
    """This process cannot currently see revocations (its check of the revocation epoch is overdue).

    Cached keys are not used meanwhile; nothing is wrong with the tenant's key, and a retry helps.
    """

    code = "revocation-status-unknown"
    title = "Revocation status unknown"
    http_status = 503
    retryable = True


# --- KMS providers -----------------------------------------------------------


class ProviderError(KeyCoreError):
    """Something went wrong talking to a KMS. Subclasses say whether a retry can help."""

    code = "kms-error"
    title = "KMS error"
    http_status = 502


class KmsUnreachable(ProviderError):
    code = "kms-unreachable"
    title = "KMS unreachable"
    http_status = 503
    retryable = True


class KmsTimeout(ProviderError):
    code = "kms-timeout"
    title = "KMS timed out"
    http_status = 503
    retryable = True


class KmsThrottled(ProviderError):
    code = "kms-throttled"
    title = "KMS throttled the request"
    http_status = 503
    retryable = True


class KmsAccessDenied(ProviderError):
    code = "kms-access-denied"
    title = "KMS denied access"


class KmsKeyNotFound(ProviderError):
    code = "kms-key-not-found"
    title = "Key not found in the KMS"


class KmsKeyDisabled(ProviderError):
    """The key exists in the KMS but is disabled, revoked or pending deletion there."""

    code = "kms-key-disabled"
    title = "Key disabled or revoked in the KMS"
    http_status = 409


class KmsMisconfigured(ProviderError):
    code = "kms-misconfigured"
    title = "KMS configuration is wrong"


class EgressDenied(ProviderError):
    """The host resolves to an address the operator's egress policy does not allow (keycore/egress.py).

    Refused before any connection is made; retrying cannot help until the host or the policy changes.
    """

    code = "egress-denied"
    title = "Destination not allowed"


# --- KeyCore's own services ----------------------------------------------------


class ServiceUnavailable(KeyCoreError):
    """KeyCore itself cannot serve the request right now (its database or broker is down); retrying helps."""

    code = "service-unavailable"
    title = "Service unavailable"
    http_status = 503
    retryable = True


class DatabaseUnavailable(ServiceUnavailable):
    code = "database-unavailable"
    title = "Database unavailable"


class BrokerUnavailable(ServiceUnavailable):
    code = "broker-unavailable"
    title = "Task broker unavailable"
