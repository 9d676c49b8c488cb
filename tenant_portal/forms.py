"""Forms of the tenant portal. They check shape only; the services check meaning and raise typed errors,
which :func:`apply_errors` puts back on the fields they name.

KMS configuration forms are built from the provider's ``fields`` (SettingField), so a
new provider gets its form without code here. Secret fields are write-only: their
widgets never render a value, not even the one just typed into a form that failed.
"""

from __future__ import annotations

from django import forms

from keycore import errors
from keycore.providers.base import KeyProvider, SettingField
from keycore.roles import TenantRole, tenant_role_may_grant

#: form field names the configuration form uses itself; provider fields get a prefix if they collide
CONFIG_NAME = "config_name"
CONFIG_RATE_LIMIT = "config_rate_limit"


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


def apply_errors(form: forms.Form, exc: errors.KeyCoreError, *, field_map: dict[str, str] | None = None) -> None:
    """Put a service's field errors on the form's fields; what names no field goes on the form itself."""
    field_map = field_map or {}
    placed = False
    for name, messages in exc.field_errors.items():
        target = field_map.get(name, name)
        for message in messages:
            if target in form.fields:
                form.add_error(target, message)
            else:
                form.add_error(None, message)
            placed = True
    if not placed:
        form.add_error(None, exc.detail)


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


# --- KMS configurations ------------------------------------------------------------------


class WriteOnlyTextarea(forms.Textarea):
    """A textarea for secrets (private keys in PEM): like PasswordInput, it never renders a value."""

    def format_value(self, value):
        return None


def _form_field_name(setting: SettingField) -> str:
    return f"kms_{setting.name}" if setting.name in (CONFIG_NAME, CONFIG_RATE_LIMIT) else setting.name


def _form_field(setting: SettingField) -> forms.Field:
    common = {"label": setting.label, "help_text": setting.help, "required": False}
    if setting.kind == "int":
        field: forms.Field = forms.IntegerField(initial=setting.default, **common)
    elif setting.kind == "bool":
        field = forms.BooleanField(initial=bool(setting.default), **common)
    elif setting.kind == "choice":
        field = forms.ChoiceField(choices=[("", "—"), *setting.choices], initial=setting.default, **common)
    elif setting.secret:
        widget = WriteOnlyTextarea(attrs={"rows": 5}) if setting.kind == "textarea" else forms.PasswordInput()
        field = forms.CharField(widget=widget, strip=False, **common)
    elif setting.kind == "textarea":
        field = forms.CharField(widget=forms.Textarea(attrs={"rows": 5}), initial=setting.default, **common)
    else:
        field = forms.CharField(initial=setting.default, max_length=2048, **common)
    # the provider decides what is required (some fields depend on others); the browser only hints
    field.provider_required = setting.required and setting.default is None
    if field.provider_required:
        field.widget.attrs["aria-required"] = "true"
    field.secret = setting.secret
    field.widget.attrs.setdefault("autocomplete", "new-password" if setting.secret else "off")
    if setting.kind in ("textarea",):
        field.widget.attrs["spellcheck"] = "false"
    return field


class KmsConfigForm(forms.Form):
    """A tenant's new KMS configuration for one provider: a name, a job rate limit, and the provider's fields."""

    def __init__(self, *args, provider_cls: type[KeyProvider], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.provider_cls = provider_cls
        self.fields[CONFIG_NAME] = forms.CharField(
            label="Name",
            max_length=120,
            required=False,
            help_text="How this key appears in KeyCore, e.g. “Production key, eu-west-1”.",
        )
        self.field_map: dict[str, str] = {"name": CONFIG_NAME, "rate_limit": CONFIG_RATE_LIMIT}
        for setting in provider_cls.fields:
            name = _form_field_name(setting)
            self.fields[name] = _form_field(setting)
            self.field_map[setting.name] = name
        self.fields[CONFIG_RATE_LIMIT] = forms.IntegerField(
            label="Requests per second for rekey jobs",
            min_value=0,
            max_value=100000,
            required=False,
            initial=0,
            help_text="Background jobs stay under this rate so they never exhaust your KMS quota. 0: no limit.",
        )

    def setting_fields(self):
        return [self[self.field_map[s.name]] for s in self.provider_cls.fields if not s.secret]

    def secret_fields(self):
        return [self[self.field_map[s.name]] for s in self.provider_cls.fields if s.secret]

    def provider_values(self) -> tuple[dict, dict]:
        """(settings, secrets) as the provider's ``clean`` takes them; empty values left out."""
        data = self.cleaned_data
        settings, secrets = {}, {}
        for setting in self.provider_cls.fields:
            value = data.get(self.field_map[setting.name])
            if value in (None, "") or (setting.kind == "bool" and value is False):
                continue
            (secrets if setting.secret else settings)[setting.name] = value
        return settings, secrets


class SecretsForm(forms.Form):
    """Replace a configuration's credentials: only secret fields, all optional (empty keeps the current one)."""

    def __init__(self, *args, provider_cls: type[KeyProvider], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.provider_cls = provider_cls
        for setting in provider_cls.fields:
            if setting.secret:
                self.fields[setting.name] = _form_field(setting)

    def clean(self):
        data = super().clean()
        if not any(data.get(name) for name in self.fields):
            raise forms.ValidationError("Enter at least one new credential; empty fields keep the current ones.")
        return data

    def secrets(self) -> dict[str, str]:
        return {name: value for name, value in self.cleaned_data.items() if value}
