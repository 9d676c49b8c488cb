"""The invitation a person is signing up through (kept in their session by the invitation link)."""

from __future__ import annotations

from django import template

from keycore import errors
from keycore.accounts import INVITATION_SESSION_KEY
from keycore.services.tenants import invitation_lookup

register = template.Library()


@register.simple_tag(takes_context=True)
def pending_invitation(context):
    """The still-valid invitation of this session, or None."""
    request = context.get("request")
    token = request.session.get(INVITATION_SESSION_KEY) if request is not None else None
    if not token:
        return None
    try:
        return invitation_lookup(token)
    except errors.KeyCoreError:
        return None
