"""A tenant's key status as both portals show it: one badge, its label and its sentence (keycore/key_status.py)."""

from __future__ import annotations

from django import template

from keycore.key_status import Description, describe
from keycore.models.keys import BLOCKING_STATES

register = template.Library()


@register.filter
def key_status(value: str) -> Description:
    """``{% with ks=tenant.key_status|key_status %}`` → ``ks.label``, ``ks.sentence``, ``ks.dark``."""
    return describe(value)


@register.inclusion_tag("includes/key_status_badge.html")
def key_status_badge(value: str):
    """The badge (its sentence as the tooltip and, for screen readers, the accessible description)."""
    return {"ks": describe(value)}


@register.filter
def health_badge(config) -> str:
    """The badge class of a configuration's KMS health: grey, never green, while the key is disabled or revoked
    (its KMS may answer, but no data is read through it)."""
    return "unknown" if config.state in BLOCKING_STATES else config.health
