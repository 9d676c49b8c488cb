"""KeyCore's domain model: the only app with models. One module per area."""

from keycore.models.accounts import User, VendorStaff
from keycore.models.api import ApiKey, IdempotencyRecord
from keycore.models.audit import AuditEvent, EventChain, KeyUseEvent
from keycore.models.jobs import RekeyJob
from keycore.models.keys import KeyHistoryEntry, KmsConfig, RevocationEpoch, TenantKey, TenantKeyWrap
from keycore.models.tenants import Invitation, Membership, Tenant

__all__ = [
    "ApiKey",
    "AuditEvent",
    "EventChain",
    "IdempotencyRecord",
    "Invitation",
    "KeyHistoryEntry",
    "KeyUseEvent",
    "KmsConfig",
    "Membership",
    "RekeyJob",
    "RevocationEpoch",
    "Tenant",
    "TenantKey",
    "TenantKeyWrap",
    "User",
    "VendorStaff",
]
