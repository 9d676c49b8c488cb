"""KeyCore's domain model: the only app with models. One module per area."""

from keycore.models.accounts import User, VendorStaff
from keycore.models.api import ApiKey, IdempotencyRecord
from keycore.models.audit import AuditEvent, EventChain, KeyUseEvent
from keycore.models.events import ChainVerification, DeadLetter, EventDelivery, EventDestination
from keycore.models.jobs import RekeyJob
from keycore.models.keys import KeyHistoryEntry, KmsConfig, RevocationEpoch, TenantKey, TenantKeyWrap, VendorKey
from keycore.models.tenants import Invitation, Membership, Tenant, TenantCount

__all__ = [
    "ApiKey",
    "AuditEvent",
    "ChainVerification",
    "DeadLetter",
    "EventChain",
    "EventDelivery",
    "EventDestination",
    "IdempotencyRecord",
    "Invitation",
    "KeyHistoryEntry",
    "KeyUseEvent",
    "KmsConfig",
    "Membership",
    "RekeyJob",
    "RevocationEpoch",
    "Tenant",
    "TenantCount",
    "TenantKey",
    "TenantKeyWrap",
    "User",
    "VendorKey",
    "VendorStaff",
]
