"""Forms both portals build KMS configurations with, from the provider's ``fields`` (``SettingField``).

A new provider gets its form without code here. The forms check shape only: the
provider's ``clean`` and the services decide what is required and valid (some fields
depend on others), and :func:`apply_service_errors` puts their typed errors back next
to the fields they name. Secret fields are write-only: their widgets never render a
value, not even the one just typed into a form that failed.
"""

from __future__ import annotations

from django import forms

from keycore import errors
from keycore.providers.base import KeyProvider, SettingField
from keycore.services.keys import ConfigInput

#: form field names the configuration form uses itself; provider fields get a prefix if they collide
CONFIG_NAME = "config_name"
CONFIG_RATE_LIMIT = "config_rate_limit"


def apply_service_errors(
    form: forms.Form, exc: errors.KeyCoreError, *, field_map: dict[str, str] | None = None
) -> None:
    """Put a service's field errors on the form's fields (renamed by ``field_map``); the rest on top."""
    field_map = field_map or {}
    placed = False
    for name, messages in (exc.field_errors or {}).items():
        target = field_map.get(name, name)
        for message in messages:
            form.add_error(target if target in form.fields else None, message)
            placed = True
    if not placed:
        form.add_error(None, exc.detail)


class WriteOnlyTextarea(forms.Textarea):
    """A textarea for secrets (private keys in PEM): like PasswordInput, it never renders a value."""

    def format_value(self, value):
        return None


def _form_field_name(setting: SettingField) -> str:
    return f"kms_{setting.name}" if setting.name in (CONFIG_NAME, CONFIG_RATE_LIMIT) else setting.name


def provider_field(setting: SettingField) -> forms.Field:
    """The form field of one provider setting; a secret one is write-only."""
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
    if setting.kind == "textarea":
        field.widget.attrs["spellcheck"] = "false"
    return field


class KmsConfigForm(forms.Form):
    """A new KMS configuration for one provider: a name, a rate limit for rekey jobs, and the provider's fields.

    ``rate_limit_help`` is the one thing the audiences read differently (whose quota it protects).
    """

    def __init__(self, *args, provider_cls: type[KeyProvider], rate_limit_help: str = "0: no limit.", **kwargs):
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
            self.fields[name] = provider_field(setting)
            self.field_map[setting.name] = name
        self.fields[CONFIG_RATE_LIMIT] = forms.IntegerField(
            label="Requests per second for rekey jobs",
            min_value=0,
            max_value=100000,
            required=False,
            initial=0,
            help_text=rate_limit_help,
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

    def config_input(self, provider: str) -> ConfigInput:
        """What ``services.keys.kms_config_create`` takes, from the cleaned form."""
        settings, secrets = self.provider_values()
        return ConfigInput(
            provider=provider,
            name=self.cleaned_data[CONFIG_NAME],
            settings=settings,
            secrets=secrets,
            rate_limit=self.cleaned_data[CONFIG_RATE_LIMIT] or 0,
        )


class SecretsForm(forms.Form):
    """Replace a configuration's credentials: only secret fields, all optional (empty keeps the current one)."""

    def __init__(self, *args, provider_cls: type[KeyProvider], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.provider_cls = provider_cls
        for setting in provider_cls.fields:
            if setting.secret:
                self.fields[setting.name] = provider_field(setting)

    def clean(self):
        data = super().clean()
        if not any(data.get(name) for name in self.fields):
            raise forms.ValidationError("Enter at least one new credential; empty fields keep the current ones.")
        return data

    def secrets(self) -> dict[str, str]:
        return {name: value for name, value in self.cleaned_data.items() if value}
