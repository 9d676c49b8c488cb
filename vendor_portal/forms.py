"""Forms of the vendor portal. They parse and check shapes; the services own every rule.

A service's typed error lands next to the field it names
(``keycore.ui.forms.apply_service_errors``), so a rule is written once, in the
service, and shown where the person typed. KMS configuration forms are shared with
the tenant portal: ``keycore/ui/forms.py``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time

from django import forms
from django.utils import timezone

from keycore import selectors
from keycore.models.api import ApiScope
from keycore.models.tenants import EXTERNAL_ID_PATTERN
from keycore.roles import TenantRole, VendorRole

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
