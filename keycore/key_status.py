"""A tenant's key status: whether its data can be read now, and if not, why — one rule, asked by everyone.

Support staff must know before anything else whether a tenant's data is dark. A tenant's
status (active, suspended, offboarding), its primary configuration's state (revoked by the
tenant, disabled) and the health of every KMS it still needs combine into one
:class:`KeyStatus`. :func:`key_status_of` is that combination, pure (no ORM), and the only
place it is written: ``keycore.services.summary.tenant_summary_sync`` stores its answer on
the tenant (``Tenant.key_status``, indexed, counted for the dashboard) in the transaction of
every change that can move it; the portals, the API and the docs show :func:`describe`.

Precedence, first match wins (the most final, then the most dark, then the least):

1. shredded — the tenant was offboarded and its vendor-provided keys crypto-shredded;
2. offboarded — offboarding: encrypt and decrypt refused, keys shredded after the grace period;
3. revoked — the tenant revoked its own primary key (only the tenant can: trust model);
4. disabled — the primary key is disabled, or a vendor-provided primary is revoked, or there is none;
5. suspended — the vendor suspended the tenant: its key is intact, crypto is refused;
6. kms_unreachable — the primary key's KMS failed its last health check;
7. degraded — the primary key works, but another key still holding tenant keys failed its last
   health check or was disabled or revoked: part of the data (under that key) is dark;
8. healthy — nothing it needs is known to fail (a key not checked yet is not a failure).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from keycore.models.keys import BLOCKING_STATES, UNWRAP_STATES, ConfigOwner, ConfigState
from keycore.models.tenants import Health, KeyStatus, TenantStatus

__all__ = ["AT_RISK", "DARK", "KEY_DARK", "ConfigFacts", "Description", "KeyStatus", "describe", "key_status_of"]

#: statuses in which none of the tenant's data can be encrypted or decrypted
DARK = (
    KeyStatus.REVOKED,
    KeyStatus.DISABLED,
    KeyStatus.SUSPENDED,
    KeyStatus.OFFBOARDED,
    KeyStatus.SHREDDED,
)
#: statuses in which some or all data may be unreadable because a KMS fails (it may come back by itself)
AT_RISK = (KeyStatus.KMS_UNREACHABLE, KeyStatus.DEGRADED)
#: what the vendor's support staff look at first: dark because of the key (the tenant's or a disabled one)
KEY_DARK = (KeyStatus.REVOKED, KeyStatus.DISABLED)

_SENTENCES = {
    KeyStatus.HEALTHY: "Healthy: its key works and every KMS it needs answered its last health check.",
    KeyStatus.DEGRADED: (
        "Degraded: new data is encrypted, but another key that still holds some of its tenant keys failed its "
        "health check or was disabled or revoked, so data under that key cannot be decrypted."
    ),
    KeyStatus.KMS_UNREACHABLE: (
        "KMS unreachable: the KMS of its primary key failed its last health check; encrypt and decrypt fail "
        "while the KMS does not answer (keys already in memory keep working until they expire)."
    ),
    KeyStatus.REVOKED: (
        "Revoked by the tenant: its data cannot be encrypted or decrypted until the tenant re-enables its key."
    ),
    KeyStatus.DISABLED: (
        "Key disabled: its primary key is disabled or revoked, so its data cannot be encrypted or decrypted "
        "until that key is re-enabled."
    ),
    KeyStatus.SUSPENDED: "Suspended by the vendor: encrypt and decrypt are refused until the tenant is reactivated.",
    KeyStatus.OFFBOARDED: (
        "Offboarded: encrypt and decrypt are refused; its vendor-provided keys may be crypto-shredded after the "
        "grace period."
    ),
    KeyStatus.SHREDDED: "Shredded: its vendor-provided keys were crypto-shredded; data under them can never be read.",
}


@dataclass(frozen=True)
class Description:
    status: str
    label: str
    #: the whole sentence, label first (the API's key_status_detail, a tooltip)
    sentence: str
    #: the sentence without its label, for a page that shows the label as a badge beside it
    explanation: str
    dark: bool
    at_risk: bool


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def describe(status: str) -> Description:
    """The people-facing label and sentence of a key status (the portals' badge and tooltip, the API's detail)."""
    value = KeyStatus(status)
    return Description(
        status=value.value,
        label=value.label,
        sentence=_SENTENCES[value],
        explanation=_upper_first(_SENTENCES[value].split(": ", 1)[1]),
        dark=value in DARK,
        at_risk=value in AT_RISK,
    )


@dataclass(frozen=True)
class ConfigFacts:
    """What the rule needs of one KMS configuration of the tenant."""

    owner: str
    state: str
    health: str
    is_primary: bool = False
    #: some live tenant key has a wrap under it (a blocked or failing key then darkens that data)
    holds_keys: bool = True


def key_status_of(*, tenant_status: str, configs: Iterable[ConfigFacts]) -> KeyStatus:
    """The key status of a tenant in ``tenant_status`` with these configurations (see the module's precedence)."""
    configs = list(configs)
    primary = next((c for c in configs if c.is_primary), None)
    if tenant_status == TenantStatus.OFFBOARDED:
        return KeyStatus.SHREDDED
    if tenant_status == TenantStatus.OFFBOARDING:
        return KeyStatus.OFFBOARDED
    if primary is not None and primary.state == ConfigState.REVOKED and primary.owner == ConfigOwner.TENANT:
        return KeyStatus.REVOKED
    if primary is None or primary.state != ConfigState.ACTIVE:
        return KeyStatus.DISABLED
    if tenant_status == TenantStatus.SUSPENDED:
        return KeyStatus.SUSPENDED
    if primary.health == Health.FAILING:
        return KeyStatus.KMS_UNREACHABLE
    for other in configs:
        if other.is_primary or not other.holds_keys:
            continue
        if other.state in BLOCKING_STATES or (other.state in UNWRAP_STATES and other.health == Health.FAILING):
            return KeyStatus.DEGRADED
    return KeyStatus.HEALTHY
