"""Template helpers of the tenant portal: what the signed-in member's role allows, and provider names."""

from __future__ import annotations

from django import template

from keycore import errors
from keycore.providers.registry import get_provider_class
from keycore.roles import tenant_can

register = template.Library()


@register.filter
def can(membership, cap: str) -> bool:
    """``{% if request.membership|can:"manage_keys" %}``: the rule itself lives in keycore.roles."""
    return membership is not None and tenant_can(membership.role, cap)


@register.filter
def provider_label(name: str) -> str:
    try:
        return get_provider_class(name).label
    except errors.KeyCoreError:
        return name
