"""Examples for the OpenAPI document: one request and one response per endpoint, realistic and secret-free."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

_T = "2025-03-04T09:30:00Z"
_CONFIG_UID = "3f1c9a52-8e7b-4d0f-9a51-2c6e1b7d4a90"
_AWS_UID = "9b2e4f61-0c3d-4a7e-b5f8-1d2c3e4f5a6b"
_JOB_UID = "d41f6b0e-27c9-4f3a-8e15-6a7b8c9d0e1f"
_INVITE_UID = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"


def _page(value):
    """A list endpoint's example is one item: drf-spectacular wraps it in the page (or the list) itself."""
    return value


TENANT_VALUE = {
    "external_id": "acme",
    "name": "Acme Corporation",
    "status": "active",
    "key_ownership": "vendor",
    "primary_provider": "local",
    "health": "ok",
    "key_status": "healthy",
    "key_status_detail": "Healthy: its key works and every KMS it needs answered its last health check.",
    "require_mfa": False,
    "key_rotation_days": None,
    "event_retention_days": 365,
    "created_at": _T,
    "updated_at": _T,
    "status_changed_at": _T,
    "shred_after": None,
}
TENANT = OpenApiExample("A tenant", value=TENANT_VALUE, response_only=True)
TENANT_PAGE = OpenApiExample("A page of tenants", value=_page(TENANT_VALUE), response_only=True)
TENANT_CREATE = OpenApiExample(
    "Create a tenant and invite its owner",
    value={"external_id": "acme", "name": "Acme Corporation", "admins": [{"email": "it@acme.example"}]},
    request_only=True,
)
TENANT_UPDATE = OpenApiExample(
    "Rename, and rotate its key yearly", value={"name": "Acme Corp.", "key_rotation_days": 365}, request_only=True
)
STATUS_CHANGE = OpenApiExample("With a reason", value={"reason": "Contract ended"}, request_only=True)
BULK_REQUEST = OpenApiExample(
    "Two tenants, one invalid",
    value={"tenants": [{"external_id": "initech", "name": "Initech"}, {"external_id": "bad id!", "name": ""}]},
    request_only=True,
)
BULK_RESULT = OpenApiExample(
    "Per-item results",
    value={
        "created": 1,
        "failed": 1,
        "results": [
            {
                "index": 0,
                "external_id": "initech",
                "status": 201,
                "tenant": {**TENANT_VALUE, "external_id": "initech", "name": "Initech"},
            },
            {
                "index": 1,
                "external_id": "bad id!",
                "status": 400,
                "error": {
                    "type": "https://keycore.dev/problems/invalid-input",
                    "title": "Invalid input",
                    "status": 400,
                    "detail": "The request has errors; see 'errors'.",
                    "errors": {"external_id": ["This value does not match the required pattern."]},
                },
            },
        ],
    },
    response_only=True,
)

INVITATION_VALUE = {
    "uid": _INVITE_UID,
    "email": "it@acme.example",
    "role": "owner",
    "state": "pending",
    "created_by_label": "api-key:onboarding",
    "created_at": _T,
    "expires_at": "2025-03-11T09:30:00Z",
    "last_sent_at": _T,
    "send_count": 1,
    "accepted_at": None,
    "revoked_at": None,
}
INVITATION = OpenApiExample("An invitation", value=INVITATION_VALUE, response_only=True)
INVITATION_PAGE = OpenApiExample("A page of invitations", value=_page(INVITATION_VALUE), response_only=True)
INVITATION_CREATE = OpenApiExample(
    "Invite an administrator", value={"email": "secops@acme.example", "role": "admin"}, request_only=True
)

CONFIG_VALUE = {
    "uid": _CONFIG_UID,
    "name": "Vendor-provided key",
    "owner": "vendor",
    "provider": "local",
    "state": "active",
    "is_primary": True,
    "settings": {},
    "secret_fields_set": ["kek"],
    "allowed_actions": [],
    "refused_actions": {
        "make_primary": "Vendor-provided key is already the primary key.",
        "decrypt_only": "The primary key cannot be decrypt-only; make another key primary first.",
        "retire": "The primary key cannot be retired; make another key primary first.",
    },
    "rate_limit": 0,
    "health": "ok",
    "health_detail": "Wrap and unwrap succeeded (KeyCore local key 1a2b3c4d5e6f7a8b).",
    "health_checked_at": _T,
    "last_success_at": _T,
    "last_failure_at": None,
    "created_at": _T,
    "updated_at": _T,
    "state_changed_at": None,
}
CONFIG = OpenApiExample("A configuration (secrets are never returned)", value=CONFIG_VALUE, response_only=True)
CONFIG_PAGE = OpenApiExample(
    "The tenant's own key (listed, never changed by the vendor)",
    value={
        **CONFIG_VALUE,
        "uid": _AWS_UID,
        "name": "Acme's AWS key",
        "owner": "tenant",
        "provider": "aws",
        "settings": {"key_id": "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
        "secret_fields_set": [],
        "allowed_actions": [],
        "refused_actions": {
            "make_primary": "Acme's AWS key is the tenant's own key: only the tenant's administrators can make it "
            "primary.",
            "decrypt_only": "Acme's AWS key is the tenant's own key: only the tenant's administrators can demote it.",
            "retire": "Only vendor-provided keys can be retired; the tenant disables or revokes its own.",
        },
    },
    response_only=True,
)
CONFIG_CREATE_AWS = OpenApiExample(
    "A vendor-managed AWS KMS key",
    value={
        "provider": "aws",
        "name": "Vendor AWS key (eu-west-1)",
        "settings": {"key_id": "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
        "secrets": {"access_key_id": "AKIA…", "secret_access_key": "…"},
        "make_primary": True,
    },
    request_only=True,
)
CONFIG_CREATE_LOCAL = OpenApiExample(
    "A new local key (KeyCore generates it)",
    value={"provider": "local", "name": "Vendor-provided key 2"},
    request_only=True,
)

HISTORY_PAGE = OpenApiExample(
    "A page of key history",
    value=_page(
        {
            "at": _T,
            "action": "made_primary",
            "kms_config": _CONFIG_UID,
            "config_name": "Vendor-provided key",
            "config_owner": "vendor",
            "config_provider": "local",
            "detail": "first configuration of the tenant",
            "actor": "api-key:onboarding",
        }
    ),
    response_only=True,
)

KEY_VERSIONS_PAGE = OpenApiExample(
    "A tenant on its own key, with one older version still counting data",
    value=_page(
        {
            "version": 2,
            "state": "active",
            "created_at": _T,
            "retiring_at": None,
            "destroyed_at": None,
            "documents": 1840,
            "last_decrypt_at": _T,
            "vendor_held": False,
            "wrapped_under": [{"config": _AWS_UID, "name": "Acme's AWS key", "owner": "tenant"}],
        }
    ),
    response_only=True,
)

JOB_VALUE = {
    "uid": _JOB_UID,
    "kind": "rewrap",
    "tenant": "acme",
    "state": "running",
    "total": 3,
    "done": 1,
    "failed": 0,
    "progress_percent": 33,
    "source_config": _AWS_UID,
    "target_config": _CONFIG_UID,
    "started_by": "api-key:onboarding",
    "created_at": _T,
    "started_at": _T,
    "finished_at": None,
    "updated_at": _T,
    "last_error": "",
    "pause_reason": "",
}
JOB = OpenApiExample("A rekey job", value=JOB_VALUE, response_only=True)
JOB_STARTED = OpenApiExample(
    "The job that was started",
    value={**JOB_VALUE, "state": "pending", "done": 0, "progress_percent": 0, "started_at": None},
    response_only=True,
    status_codes=["202"],
)
JOB_PAGE = OpenApiExample("A page of rekey jobs", value=_page(JOB_VALUE), response_only=True)

EVENT_PAGE = OpenApiExample(
    "A page of key-use events",
    value=_page(
        {
            "seq": 42,
            "minute": "2025-03-04T09:30:00Z",
            "operation": "decrypt",
            "result": "ok",
            "count": 118,
            "label": "invoices",
            "requesting_id": "billing-service",
            "source_ip": "203.0.113.7",
            "key_version": 1,
            "created_at": "2025-03-04T09:30:01Z",
            "prev_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "hash": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
        }
    ),
    response_only=True,
)
AUDIT_PAGE = OpenApiExample(
    "A page of the audit trail",
    value=_page(
        {
            "chain": "tenant:12",
            "seq": 7,
            "tenant": "acme",
            "created_at": _T,
            "action": "kms_config.made_primary",
            "actor": "api-key:onboarding",
            "target_type": "kmsconfig",
            "target_id": _CONFIG_UID,
            "target_repr": "Vendor AWS key (eu-west-1) (aws, active)",
            "changes": {"primary": [_AWS_UID, _CONFIG_UID]},
            "source_ip": "198.51.100.20",
            "prev_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "hash": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
        }
    ),
    response_only=True,
)

# --- crypto --------------------------------------------------------------------------------------

_EDEK = (
    "7QEAAAABsqPTuhPrumc1p7qricwNJNczLSNrAwdp6tNP6UumR4Cfjl9ZUJAyl5XemPczaka0nGXBXSOxVQQ6xwuMwbhbjSV7VEsHpFRH+YMvUQ=="
)
_CIPHER = "/QGtk70z5W5ohfKoQ+nb47Jp+5RXhrw6f7snCt+b5nqzTmswfqOJM5c="
_CIPHER_NOTE = "/QH6DbE/kGMFBcKZTxRA56M69i4+hlHvntRZjRl2kilVT+PTchV2D4fZGgoA7RaNznEL"
ENCRYPT_REQUEST = OpenApiExample(
    "Encrypt a document for tenant acme",
    value={
        "tenant": "acme",
        "fields": {"ssn": "MTIzLTQ1LTY3ODk=", "note": "Y2FsbCBiYWNrIG9uIE1vbmRheQ=="},
        "label": "customer-record",
        "requesting_id": "crm-service",
        "source_ip": "203.0.113.7",
        "object_id": "customer/8841",
        "request_id": "req-5f2a",
        "custom": {"region": "eu"},
    },
    request_only=True,
)
ENCRYPT_RESPONSE = OpenApiExample(
    "The EDEK and the encrypted fields",
    value={"edek": _EDEK, "fields": {"ssn": _CIPHER, "note": _CIPHER_NOTE}},
    response_only=True,
)
DECRYPT_REQUEST = OpenApiExample(
    "Decrypt a document of tenant acme",
    value={"tenant": "acme", "edek": _EDEK, "fields": {"ssn": _CIPHER}, "requesting_id": "crm-service"},
    request_only=True,
)
DECRYPT_RESPONSE = OpenApiExample(
    "The plaintext fields", value={"fields": {"ssn": "MTIzLTQ1LTY3ODk="}}, response_only=True
)
REKEY_REQUEST = OpenApiExample(
    "Move two documents to acme's current key",
    value={"tenant": "acme", "edeks": [_EDEK, "bm90IGFuIEVERUs="], "requesting_id": "migration-job"},
    request_only=True,
)
REKEY_RESPONSE = OpenApiExample(
    "One rewrapped, one rejected",
    value={
        "edeks": [_EDEK, None],
        "errors": [
            {
                "index": 1,
                "type": "https://keycore.dev/problems/malformed-data",
                "title": "Malformed ciphertext",
                "status": 400,
                "detail": "Not an EDEK: 9 bytes is too short.",
            }
        ],
    },
    response_only=True,
)
BATCH_ENCRYPT_REQUEST = OpenApiExample(
    "Two documents, defaults for both at the top",
    value={
        "requesting_id": "import-job",
        "label": "customer-record",
        "items": [
            {"tenant": "acme", "fields": {"ssn": "MTIzLTQ1LTY3ODk="}, "object_id": "customer/1"},
            {"tenant": "no-such-tenant", "fields": {"ssn": "OTg3LTY1LTQzMjE="}, "object_id": "customer/2"},
        ],
    },
    request_only=True,
)
BATCH_ENCRYPT_RESPONSE = OpenApiExample(
    "Per-item results",
    value={
        "succeeded": 1,
        "failed": 1,
        "results": [
            {"edek": _EDEK, "fields": {"ssn": _CIPHER}},
            {
                "error": {
                    "type": "https://keycore.dev/problems/tenant-not-found",
                    "title": "Unknown tenant",
                    "status": 404,
                    "detail": "No tenant has the external id 'no-such-tenant'.",
                }
            },
        ],
    },
    response_only=True,
)
BATCH_DECRYPT_REQUEST = OpenApiExample(
    "One document",
    value={"requesting_id": "export-job", "items": [{"tenant": "acme", "edek": _EDEK, "fields": {"ssn": _CIPHER}}]},
    request_only=True,
)
BATCH_DECRYPT_RESPONSE = OpenApiExample(
    "Per-item results",
    value={"succeeded": 1, "failed": 0, "results": [{"fields": {"ssn": "MTIzLTQ1LTY3ODk="}}]},
    response_only=True,
)
