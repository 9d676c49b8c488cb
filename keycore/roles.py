"""Who may do what: the roles of both audiences and their capabilities, in one place.

Both portals and the REST API ask these functions; no view compares role names
itself. Capabilities are verbs on the product, not on pages.
"""

from __future__ import annotations

from django.db import models


class VendorRole(models.TextChoices):
    ADMIN = "admin", "Administrator"
    OPERATOR = "operator", "Operator"
    AUDITOR = "auditor", "Auditor"


class TenantRole(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Administrator"
    AUDITOR = "auditor", "Auditor"


class Cap(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Change tenants, keys and jobs"
    MANAGE_STAFF = "manage_staff", "Manage staff"
    MANAGE_API_KEYS = "manage_api_keys", "Manage API keys"
    MANAGE_MEMBERS = "manage_members", "Manage members"
    MANAGE_KEYS = "manage_keys", "Manage keys"
    MANAGE_SETTINGS = "manage_settings", "Manage tenant settings"
    SHRED = "shred", "Crypto-shred an offboarded tenant's keys, and approve shredding early"


VENDOR_CAPS: dict[str, frozenset[str]] = {
    VendorRole.ADMIN: frozenset({Cap.READ, Cap.WRITE, Cap.MANAGE_STAFF, Cap.MANAGE_API_KEYS, Cap.SHRED}),
    VendorRole.OPERATOR: frozenset({Cap.READ, Cap.WRITE}),
    VendorRole.AUDITOR: frozenset({Cap.READ}),
}

TENANT_CAPS: dict[str, frozenset[str]] = {
    TenantRole.OWNER: frozenset({Cap.READ, Cap.MANAGE_MEMBERS, Cap.MANAGE_KEYS, Cap.MANAGE_SETTINGS}),
    TenantRole.ADMIN: frozenset({Cap.READ, Cap.MANAGE_MEMBERS, Cap.MANAGE_KEYS}),
    TenantRole.AUDITOR: frozenset({Cap.READ}),
}

#: roles whose holders must have MFA enrolled (when KEYCORE_REQUIRE_ADMIN_MFA is on): every role that can
#: change anything, so a stolen password alone can read at most (an operator can offboard a tenant)
VENDOR_ROLES_REQUIRING_MFA = frozenset(role for role, caps in VENDOR_CAPS.items() if caps - {Cap.READ})
TENANT_ROLES_REQUIRING_MFA = frozenset(role for role, caps in TENANT_CAPS.items() if caps - {Cap.READ})


def tenant_role_may_grant(granter: str | None, role: str) -> bool:
    """Whether a member with role ``granter`` may give (or take away) ``role``.

    ``granter`` None means the vendor (portal or API), who names a tenant's first
    owners. Only owners make or unmake owners; an administrator cannot promote
    anyone, itself included, above itself.
    """
    if granter is None or granter == TenantRole.OWNER:
        return True
    if granter == TenantRole.ADMIN:
        return role != TenantRole.OWNER
    return False


def vendor_can(role: str | None, cap: str) -> bool:
    return role is not None and cap in VENDOR_CAPS.get(role, frozenset())


def tenant_can(role: str | None, cap: str) -> bool:
    return role is not None and cap in TENANT_CAPS.get(role, frozenset())
