"""Template helpers of the tenant portal: what the signed-in member's role allows, and provider names."""

from __future__ import annotations

from django import template

from keycore.roles import tenant_can
from keycore.ui.kms import provider_label

register = template.Library()


@register.filter
def can(membership, cap: str) -> bool:
    """``{% if request.membership|can:"manage_keys" %}``: the rule itself lives in keycore.roles."""
    return membership is not None and tenant_can(membership.role, cap)


register.filter("provider_label", provider_label)
