"""What may be done to a KMS configuration, by whom, in which state: the one home of that state machine.

:func:`kms_config_allowed_actions` answers for one configuration and one actor. The
services in ``keycore/services/keys.py`` ask it before every change and raise the
refusal it gives (a typed error from ``keycore/errors.py``); both portals ask it to
decide which buttons to show, and the API describes it in ``allowed_actions``. To
change who may revoke a key, or in which state a key may be made primary, edit this
module: nothing else restates these rules.

Each action is checked in the order the services always did:

1. **tenant sovereignty** (``keycore/services/sovereignty.py`` decides who is the
   vendor): the vendor never acts on the tenant's own configuration, and never makes
   a vendor-provided key primary once the tenant has brought its own. Such a refusal
   is a :class:`~keycore.errors.TenantSovereignty`, which the services first record on
   the tenant's chain as ``vendor.refused``;
2. **ownership**: only vendor-provided keys are retired or destroyed by KeyCore
   (a tenant disables, revokes or deletes its own key in its own KMS);
3. **state**: e.g. only an active or decrypt-only key becomes primary, only a disabled
   or revoked one is re-enabled, the primary key is never demoted, retired or destroyed
   while its tenant is active.

Facts that need more than the configuration's row — whether a tenant key is wrapped
under nothing else (retire, destroy) — are checked by the service itself, under lock.
Role capabilities (an auditor manages nothing) are ``keycore/roles.py``'s, checked by
the portals' guards and the API's scopes before a view runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from keycore import errors
from keycore.models import KmsConfig
from keycore.models.keys import BLOCKING_STATES, UNWRAP_STATES, ConfigOwner, ConfigState
from keycore.models.tenants import TenantStatus
from keycore.services.audit import Actor
from keycore.services.sovereignty import is_vendor, vendor_key_replacement_refusal

MAKE_PRIMARY = "make_primary"
DECRYPT_ONLY = "decrypt_only"
DISABLE = "disable"
REVOKE = "revoke"
REENABLE = "reenable"
REPLACE_SECRETS = "replace_secrets"
CHECK = "check"
RETIRE = "retire"
DESTROY = "destroy"

#: every action on a configuration, in the order the portals list them
ACTIONS = (MAKE_PRIMARY, DECRYPT_ONLY, DISABLE, REVOKE, REENABLE, REPLACE_SECRETS, CHECK, RETIRE, DESTROY)

#: actions that act on the tenant's own configuration: the vendor is refused them (tenant sovereignty)
_TENANT_ONLY_VERBS = {
    MAKE_PRIMARY: "make it primary",
    DECRYPT_ONLY: "demote it",
    DISABLE: "disable it",
    REVOKE: "revoke it",
    REENABLE: "re-enable it",
    REPLACE_SECRETS: "change its credentials",
}

_LEAVING = (TenantStatus.OFFBOARDING, TenantStatus.OFFBOARDED)


@dataclass(frozen=True)
class Refusal:
    """Why an action is refused, and the typed error a service raises for it."""

    reason: str
    error: type[errors.KeyCoreError]

    @property
    def sovereignty(self) -> bool:
        """Refused because only the tenant may do it (the vendor's attempt is recorded on the tenant's chain)."""
        return self.error is errors.TenantSovereignty

    def exception(self) -> errors.KeyCoreError:
        return self.error(self.reason)


@dataclass(frozen=True)
class ConfigActions:
    """The answer for one configuration and one actor: what is allowed, and why the rest is not.

    ``refusals`` holds the first refusal of each refused action, in the services' order
    (sovereignty, ownership, state); ``state_refusals`` only what the configuration's
    own state and owner refuse, so that a page can show an action the state permits as
    present but refused to this actor, with the reason.
    """

    refusals: dict[str, Refusal] = field(default_factory=dict)
    state_refusals: dict[str, Refusal] = field(default_factory=dict)

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(a for a in ACTIONS if a not in self.refusals)

    def __contains__(self, action: str) -> bool:
        return action in ACTIONS and action not in self.refusals

    def __iter__(self) -> Iterator[str]:
        return (a for a in ACTIONS if a not in self.refusals)

    @property
    def can(self) -> dict[str, bool]:
        """{action: allowed}, for templates (``actions.can.revoke``)."""
        return {a: a not in self.refusals for a in ACTIONS}

    @property
    def offered(self) -> dict[str, bool]:
        """{action: whether the configuration's state and owner permit it}, whoever asks."""
        return {a: a not in self.state_refusals for a in ACTIONS}

    @property
    def reasons(self) -> dict[str, str]:
        """{refused action: why}."""
        return {a: r.reason for a, r in self.refusals.items()}

    def refusal(self, action: str) -> Refusal | None:
        if action not in ACTIONS:
            raise ValueError(f"unknown action on a KMS configuration: {action}")
        return self.refusals.get(action)

    def enforce(self, action: str) -> None:
        """Raise the typed error of ``action``'s refusal, if any."""
        refusal = self.refusal(action)
        if refusal is not None:
            raise refusal.exception()


def _state_refusal(config: KmsConfig, action: str) -> Refusal | None:
    """What the configuration's owner and state alone refuse (true for every actor)."""
    state = config.state
    shown = config.get_state_display().lower()
    if action == MAKE_PRIMARY:
        if config.is_primary:
            return Refusal(f"{config.name} is already the primary key.", errors.Conflict)
        if state not in UNWRAP_STATES:
            return Refusal(f"{config.name} is {shown}; re-enable it first.", errors.Conflict)
    elif action == DECRYPT_ONLY:
        if config.is_primary:
            return Refusal("The primary key cannot be decrypt-only; make another key primary first.", errors.Conflict)
        if state != ConfigState.ACTIVE:
            return Refusal(f"{config.name} is {shown}.", errors.Conflict)
    elif action == DISABLE:
        if state not in UNWRAP_STATES:
            return Refusal(f"{config.name} is {shown}.", errors.Conflict)
    elif action == REVOKE:
        if state in (ConfigState.REVOKED, ConfigState.DESTROYED):
            return Refusal(f"{config.name} is already {shown}.", errors.Conflict)
    elif action == REENABLE:
        if state not in BLOCKING_STATES:
            return Refusal(f"{config.name} is not disabled or revoked.", errors.Conflict)
    elif action == CHECK:
        if state in (ConfigState.RETIRED, ConfigState.DESTROYED):
            return Refusal(f"{config.name} is {shown}: there is nothing to check.", errors.Conflict)
    elif action == RETIRE:
        if config.owner != ConfigOwner.VENDOR:
            return Refusal(
                "Only vendor-provided keys can be retired; the tenant disables or revokes its own.",
                errors.PermissionDenied,
            )
        if config.is_primary:
            return Refusal("The primary key cannot be retired; make another key primary first.", errors.Conflict)
        if state in (ConfigState.RETIRED, ConfigState.DESTROYED):
            return Refusal(f"{config.name} is already {shown}.", errors.Conflict)
    elif action == DESTROY:
        if config.owner != ConfigOwner.VENDOR:
            return Refusal(
                "KeyCore cannot destroy a tenant's own key; the tenant does that in its KMS.", errors.PermissionDenied
            )
        if config.is_primary and config.tenant.status not in _LEAVING:
            return Refusal("The primary key of an active tenant cannot be destroyed.", errors.Conflict)
    return None


def _sovereignty_refusal(config: KmsConfig, action: str, vendor: bool, memo: dict) -> Refusal | None:
    """What the vendor may never do to a tenant (keycore/services/sovereignty.py): None for anyone else."""
    if not vendor or action not in _TENANT_ONLY_VERBS:
        return None
    if config.owner == ConfigOwner.TENANT:
        verb = _TENANT_ONLY_VERBS[action]
        reason = f"{config.name} is the tenant's own key: only the tenant's administrators can {verb}."
        return Refusal(reason, errors.TenantSovereignty)
    if action == MAKE_PRIMARY:
        known = ("replacement", config.tenant_id)
        if known not in memo:
            memo[known] = vendor_key_replacement_refusal(config.tenant)
        if memo[known]:
            return Refusal(memo[known], errors.TenantSovereignty)
    return None


def kms_config_allowed_actions(config: KmsConfig, actor: Actor, *, memo: dict | None = None) -> ConfigActions:
    """What ``actor`` may do to ``config`` now, and for each refused action the reason and typed error.

    ``actor`` is whoever acts (``Actor.from_request``, an API key's actor, ``Actor.system``):
    a signed-in member of the configuration's tenant acts for the tenant, KeyCore's own
    jobs for nobody, and everyone else is the vendor. ``memo`` lets a page that asks for
    each of a tenant's configurations look up what they share (whether the tenant owns a
    key) once; the services never pass one, so that they ask afresh under lock.
    """
    memo = {} if memo is None else memo
    vendor = is_vendor(actor, config.tenant)
    refusals: dict[str, Refusal] = {}
    state_refusals: dict[str, Refusal] = {}
    for action in ACTIONS:
        by_state = _state_refusal(config, action)
        if by_state is not None:
            state_refusals[action] = by_state
        # the tenant's sovereignty first: the vendor's attempt is refused (and recorded) whatever the state
        first = _sovereignty_refusal(config, action, vendor, memo) or by_state
        if first is not None:
            refusals[action] = first
    return ConfigActions(refusals=refusals, state_refusals=state_refusals)
