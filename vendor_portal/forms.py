"""Forms of the vendor portal. They parse and check shapes; the services own every rule.

A service's typed error lands next to the field it names (:func:`add_service_error`),
so a rule is written once, in the service, and shown where the person typed.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time

from django import forms
from django.utils import timezone

from keycore import errors, selectors
from keycore.models.api import ApiScope
from keycore.models.tenants import EXTERNAL_ID_PATTERN
from keycore.providers.base import SettingField
from keycore.roles import TenantRole, VendorRole


def add_service_error(form: forms.Form, exc: errors.KeyCoreError, *, field_map: dict[str, str] | None = None) -> None:
    """Put a typed service error on the form: each field error next to its field, the rest on top."""
    placed = False
    for name, messages in (exc.field_errors or {}).items():
        name = (field_map or {}).get(name, name)
        target = name if name in form.fields else None
        for message in messages:
            form.add_error(target, message)
            placed = True
    if not placed:
        form.add_error(None, exc.detail)


class SecretTextarea(forms.Textarea):
    """A textarea for secrets (PEM private keys): write-only, never filled back in, not even after an error."""

    def format_value(self, value):
        return None


# --- tenants -----------------------------------------------------------------------------


class AdminInviteForm(forms.Form):
    email = forms.EmailField(required=False, label="Email")
    role = forms.ChoiceField(choices=TenantRole.choices, initial=TenantRole.OWNER, label="Role")


AdminInviteFormSet = forms.formset_factory(AdminInviteForm, extra=3, max_num=10, validate_max=True)


class TenantCreateForm(forms.Form):
    name = forms.CharField(max_length=200, label="Name", help_text="How the tenant is shown, e.g. Acme Corporation.")
    external_id = forms.CharField(
        max_length=128,
        label="External id",
        help_text="Your id for this customer; your applications name the tenant by it. It cannot change later.",
        widget=forms.TextInput(
            # keycore.js suggests one from the name (acme-corporation) until it is typed here
            attrs={
                "pattern": EXTERNAL_ID_PATTERN,
                "autocomplete": "off",
                "spellcheck": "false",
                "data-suggest-from": "id_name",
            }
        ),
    )
    vendor_key = forms.ModelChoiceField(
        queryset=None,
        required=False,
        to_field_name="uid",
        label="Vendor key",
        help_text="Where the tenant's vendor-provided key is wrapped; empty: the default for new tenants.",
        empty_label="The default for new tenants",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["vendor_key"].queryset = selectors.vendor_key_list().filter(state="active").order_by("name")


class InvitationForm(forms.Form):
    email = forms.EmailField(label="Email")
    role = forms.ChoiceField(choices=TenantRole.choices, initial=TenantRole.ADMIN, label="Role")


class StatusForm(forms.Form):
    transition = forms.ChoiceField(
        choices=[("suspend", "Suspend"), ("reactivate", "Reactivate"), ("offboard", "Offboard")]
    )
    reason = forms.CharField(required=False, max_length=300, label="Reason (kept in the audit trail)")


class ShredForm(forms.Form):
    confirm = forms.CharField(label="Type the tenant's external id to confirm", max_length=128)

    def __init__(self, *args, external_id: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.external_id = external_id
        self.fields["confirm"].widget.attrs.update({"data-confirm-text": external_id, "autocomplete": "off"})

    def clean_confirm(self):
        value = self.cleaned_data["confirm"]
        if value != self.external_id:
            raise forms.ValidationError("That is not this tenant's external id; nothing was shredded.")
        return value


class CsvUploadForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="Columns: external_id, name, admin_email, admin_role (owner, admin or auditor). "
        "One row per admin; repeat a tenant's external id and name for more admins.",
    )


class CsvConfirmForm(forms.Form):
    payload = forms.CharField(widget=forms.HiddenInput)


# --- keys ---------------------------------------------------------------------------------


class ProviderChoiceForm(forms.Form):
    provider = forms.ChoiceField(label="Where the key lives")

    def __init__(self, *args, choices, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["provider"].choices = choices


def _setting_field(spec: SettingField) -> forms.Field:
    common = {"label": spec.label, "help_text": spec.help, "required": spec.required and spec.default is None}
    if spec.secret:
        widget = SecretTextarea(attrs={"rows": 4}) if spec.kind == "textarea" else forms.PasswordInput()
        common["help_text"] = (spec.help + " " if spec.help else "") + "Write-only: stored sealed, never shown again."
        return forms.CharField(widget=widget, strip=False, **common)
    if spec.kind == "int":
        return forms.IntegerField(initial=spec.default, **common)
    if spec.kind == "bool":
        return forms.BooleanField(initial=bool(spec.default), **{**common, "required": False})
    if spec.kind == "choice":
        return forms.ChoiceField(choices=spec.choices, initial=spec.default, **common)
    if spec.kind == "textarea":
        return forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), initial=spec.default, **common)
    return forms.CharField(initial=spec.default, **common)


class KmsConfigForm(forms.Form):
    """A vendor-provided key: a name, a rate limit, and the fields the provider declares."""

    name = forms.CharField(
        max_length=120, required=False, label="Name", help_text="Optional; shown in the key history."
    )
    rate_limit = forms.IntegerField(
        min_value=0, initial=0, required=False, label="Requests per second for rekey jobs", help_text="0 = no limit."
    )

    def __init__(self, *args, provider_cls, **kwargs):
        super().__init__(*args, **kwargs)
        self.provider_cls = provider_cls
        self.setting_names: list[str] = []
        self.secret_names: list[str] = []
        for spec in provider_cls.fields:
            self.fields[spec.name] = _setting_field(spec)
            (self.secret_names if spec.secret else self.setting_names).append(spec.name)

    def provider_values(self) -> tuple[dict, dict]:
        """(settings, secrets) as the provider's ``clean`` takes them."""
        data = self.cleaned_data
        settings = {n: data[n] for n in self.setting_names if data.get(n) not in (None, "")}
        secrets = {n: data[n] for n in self.secret_names if data.get(n)}
        return settings, secrets


# --- staff and API keys -------------------------------------------------------------------


class StaffInviteForm(forms.Form):
    email = forms.EmailField(label="Email")
    role = forms.ChoiceField(choices=VendorRole.choices, initial=VendorRole.OPERATOR, label="Role")


class StaffRoleForm(forms.Form):
    role = forms.ChoiceField(choices=VendorRole.choices, label="Role")


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=120, label="Name", help_text="What uses it, e.g. billing-service (production).")
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple, label="Scopes", required=True
    )
    tenants = forms.CharField(
        required=False,
        label="Limit to tenants",
        help_text="Crypto keys only: external ids, separated by commas or spaces. Empty = every tenant.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    expires_on = forms.DateField(
        required=False,
        label="Expires on",
        help_text="Optional. The key stops working at 00:00 UTC that day.",
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def clean_tenants(self) -> list[str]:
        return [t for t in re.split(r"[\s,]+", self.cleaned_data.get("tenants") or "") if t]

    def clean_expires_on(self):
        day = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        moment = datetime.combine(day, time.min, tzinfo=UTC)
        if moment <= timezone.now():
            raise forms.ValidationError("Choose a day in the future.")
        return moment
