"""Forms of the tenant portal. They check shape only; the services check meaning and raise typed errors,
which ``keycore.ui.forms.apply_service_errors`` puts back on the fields they name.

KMS configuration forms are shared with the vendor portal: ``keycore/ui/forms.py``.
"""

from __future__ import annotations

from django import forms

from keycore.roles import TenantRole, tenant_role_may_grant


def assignable_roles(role: str) -> list[tuple[str, str]]:
    """Roles a member with ``role`` may give by invitation or role change.

    Only an owner makes or unmakes owners; otherwise an administrator could make
    itself owner and reach the tenant settings its role does not have.
    """
    return [(value, label) for value, label in TenantRole.choices if tenant_role_may_grant(role, value)]


def may_manage_member(actor_role: str, target_role: str) -> bool:
    """Whether a member with ``actor_role`` may change or remove a member who holds ``target_role``.

    The services enforce the same rule (``keycore.roles.tenant_role_may_grant``); the
    portal asks first so that it offers only what will be allowed.
    """
    return tenant_role_may_grant(actor_role, target_role)


class InviteForm(forms.Form):
    email = forms.EmailField(label="Email address", max_length=254)
    role = forms.ChoiceField(label="Role")

    def __init__(self, *args, inviter_role: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = assignable_roles(inviter_role)
        self.fields["role"].initial = TenantRole.ADMIN


class RoleForm(forms.Form):
    role = forms.ChoiceField(label="Role")

    def __init__(self, *args, actor_role: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = assignable_roles(actor_role)


class SettingsForm(forms.Form):
    require_mfa = forms.BooleanField(
        label="Require two-factor authentication for every member",
        required=False,
        help_text="Auditors included. Owners and administrators always need it.",
    )
    key_rotation_days = forms.IntegerField(
        label="Rotate the tenant key every (days)",
        required=False,
        min_value=1,
        max_value=3650,
        help_text="A new tenant-key version is created this often and new data uses it. Empty: only when you ask.",
    )
    event_retention_days = forms.IntegerField(
        label="Keep security events for (days)",
        min_value=1,
        max_value=3650,
        help_text="Older events are pruned; the event chain stays verifiable from a signed checkpoint.",
    )
    key_cache_seconds = forms.IntegerField(
        label="Keep an unwrapped key in KeyCore's memory at most (seconds)",
        required=False,
        min_value=30,
        max_value=300,
        help_text="If you disable or destroy your key inside your own KMS without telling KeyCore, this is how long "
        "KeyCore can still use it. Shorter means more calls to your KMS: each KeyCore process asks it about once "
        "per this many seconds for each key version in use. It also bounds how long an application encrypting "
        "in its own process (the SDK) keeps a key leased from yours. Empty: the operator's bound.",
    )
    retire_idle_days = forms.IntegerField(
        label="An older key version may be retired after no decrypt for (days)",
        required=False,
        min_value=1,
        max_value=3650,
        help_text="For versions that still count documents your application may have deleted. Empty: only drained "
        "versions (no document left) can be retired without waiting.",
    )
    auto_retire_versions = forms.BooleanField(
        label="Retire drained or idle older versions automatically",
        required=False,
        help_text="KeyCore checks hourly and destroys such versions for you; each retirement is in your events.",
    )
    detailed_events = forms.BooleanField(
        label="Record each key use in detail",
        required=False,
        help_text="Besides the counts per minute, keep every operation: its time, object id, request id and "
        "custom values, with the API key and address it came from — for investigations. Takes more space; "
        "applies within seconds.",
    )


class RevokeForm(forms.Form):
    confirm_name = forms.CharField(
        label="Type the tenant's name to confirm", max_length=200, strip=False, required=False
    )

    def __init__(self, *args, tenant_name: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tenant_name = tenant_name
        self.fields["confirm_name"].widget.attrs.update(
            {"data-confirm-text": tenant_name, "autocomplete": "off", "spellcheck": "false"}
        )

    def clean_confirm_name(self) -> str:
        typed = self.cleaned_data.get("confirm_name") or ""
        if typed.strip() != self.tenant_name:
            raise forms.ValidationError(f"Type the tenant's name exactly: {self.tenant_name}")
        return typed
