"""What the password is being asked for: the re-authentication page names the action it confirms.

allauth sends a person to ``/accounts/reauthenticate/?next=<the action's URL>``; this
resolves that URL to the action and the object it acts on ("revoke Acme AWS key"). An
object is named only if the person may see it (a member of its tenant, or vendor
staff); otherwise, and for any other URL, the page speaks in general terms.
"""

from __future__ import annotations

from django import template
from django.urls import Resolver404, resolve
from django.utils.http import url_has_allowed_host_and_scheme

from keycore.access import memberships_of, staff_of
from keycore.models import ApiKey, KmsConfig, Tenant, VendorStaff

register = template.Library()

#: URL name → what confirming does; {config}, {tenant}, {api_key}, {staff} are filled in from the URL
PURPOSES = {
    "tenant:key_primary": "make {config} the primary key of {tenant}",
    "tenant:key_reenable": "re-enable {config}",
    "tenant:key_disable": "disable {config}",
    "tenant:key_demote": "make {config} decrypt-only",
    "tenant:key_revoke": "revoke {config}",
    "tenant:key": "replace the credentials of {config}",  # where replacing them sends people to confirm first
    "tenant:member_invite": "invite someone to {tenant}",
    "tenant:member_role": "change a member's role in {tenant}",
    "vendor:key_retire": "retire {config}, a key of {tenant}",
    "vendor:tenant_status": "offboard {tenant}",
    "vendor:tenant_shred": "crypto-shred the vendor-provided keys of {tenant}",
    "vendor:tenant_shred_request": "ask to crypto-shred the keys of {tenant} before its grace period ends",
    "vendor:tenant_shred_approve": "approve crypto-shredding the keys of {tenant} before its grace period ends",
    "vendor:api_key_create": "create an API key",
    "vendor:api_key_rotate": "rotate the API key {api_key}",
    "vendor:staff_invite": "invite someone to the vendor's staff",
    "vendor:staff_role": "change the role of {staff}",
    "vendor:api_key_revoke": "revoke the API key {api_key}",
    "vendor:staff_deactivate": "deactivate {staff}",
    "mfa_deactivate_totp": "turn off your authenticator app",
    "mfa_generate_recovery_codes": "make new recovery codes",
    "mfa_activate_totp": "set up an authenticator app",
    "account_email": "change your email addresses",
    "account_change_password": "change your password",
}


def _names(request, match) -> dict[str, str] | None:
    """The names a purpose mentions, looked up only where the person may see them; None if they may not."""
    kwargs, user = match.kwargs, request.user
    names: dict[str, str] = {}
    if match.namespace == "tenant":
        membership = memberships_of(user).filter(tenant__external_id=kwargs.get("tenant")).first()
        if membership is None:
            return None
        tenant = membership.tenant
    elif match.namespace == "vendor":
        if staff_of(user) is None:
            return None
        tenant = Tenant.objects.filter(external_id=kwargs.get("external_id")).first()
        if "uid" in kwargs and match.url_name in ("api_key_revoke", "api_key_rotate"):
            key = ApiKey.objects.filter(uid=kwargs["uid"]).first()
            names["api_key"] = key.name if key else "?"
        if "pk" in kwargs:
            staff = VendorStaff.objects.select_related("user").filter(pk=kwargs["pk"]).first()
            names["staff"] = staff.user.email if staff else "?"
    else:
        return names
    if tenant is not None:
        names["tenant"] = tenant.name
        config_uid = kwargs.get("config") or (kwargs.get("uid") if match.url_name == "key_retire" else None)
        if config_uid:
            config = KmsConfig.objects.for_tenant(tenant).filter(uid=config_uid).first()
            if config is None:
                return None
            names["config"] = config.name
    return names


@register.simple_tag(takes_context=True)
def reauthentication_purpose(context) -> str:
    """ "revoke Acme AWS key" for the action the ``next`` URL names, or "" when it names none we know."""
    request = context.get("request")
    target = request.GET.get("next", "") if request is not None else ""
    if not target or not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return ""
    try:
        match = resolve(target.split("?", 1)[0])
    except Resolver404:
        return ""
    purpose = PURPOSES.get(match.view_name)
    if purpose is None or not request.user.is_authenticated:
        return ""
    names = _names(request, match)
    if names is None:
        return ""
    try:
        return purpose.format(**names)
    except KeyError:
        return ""
