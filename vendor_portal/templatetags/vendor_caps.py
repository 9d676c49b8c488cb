"""``{% vendor_caps as can %}``: what the signed-in staff member's role may do, for showing only usable links.

The sidebar of every vendor page uses it, whichever view rendered the page; the rule
itself stays in keycore.roles (views are guarded by keycore.access.vendor_view).
"""

from __future__ import annotations

from django import template

from keycore.roles import Cap, vendor_can

register = template.Library()

SHOWN_CAPS = (Cap.READ, Cap.WRITE, Cap.MANAGE_STAFF, Cap.MANAGE_API_KEYS)


def caps_of(role: str | None) -> dict[str, bool]:
    return {cap: vendor_can(role, cap) for cap in SHOWN_CAPS}


@register.simple_tag(takes_context=True)
def vendor_caps(context) -> dict[str, bool]:
    staff = getattr(context.get("request"), "staff", None)
    return caps_of(staff.role if staff is not None else None)
