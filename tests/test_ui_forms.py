"""keycore/ui/forms.py, the KMS configuration forms both portals use: built from a provider's fields, secrets
write-only (never rendered back, not even into a form that failed), a service's errors on the fields they name."""

from __future__ import annotations

import pytest

from keycore import errors
from keycore.providers.registry import get_provider_class
from keycore.ui.forms import CONFIG_NAME, KmsConfigForm, SecretsForm, apply_service_errors

TYPED = "-----BEGIN PRIVATE KEY-----\nMIIEvQ-not-a-real-key\n-----END PRIVATE KEY-----"


@pytest.mark.parametrize(
    ("provider", "secret"), [("aws", "secret_access_key"), ("kmip", "client_key"), ("pkcs11", "pin")]
)
def test_a_typed_secret_is_never_rendered_back(provider, secret):
    cls = get_provider_class(provider)
    form = KmsConfigForm({CONFIG_NAME: "K", secret: TYPED}, provider_cls=cls)
    form.is_valid()
    form.add_error(None, "The KMS refused.")
    html = str(form)
    assert f'name="{secret}"' in html and "not-a-real-key" not in html
    replace = SecretsForm({secret: TYPED}, provider_cls=cls)
    replace.is_valid()
    assert "not-a-real-key" not in str(replace)


def test_settings_and_secrets_are_separated_as_the_provider_takes_them():
    cls = get_provider_class("aws")
    arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    form = KmsConfigForm(
        {CONFIG_NAME: "K", "key_id": arn, "access_key_id": "AKIA", "secret_access_key": "s3cret"}, provider_cls=cls
    )
    assert form.is_valid(), form.errors
    settings, secrets = form.provider_values()
    assert settings == {"key_id": arn} and secrets == {"access_key_id": "AKIA", "secret_access_key": "s3cret"}
    assert form.config_input("aws").name == "K"


def test_a_services_error_lands_on_the_field_it_names_and_the_rest_on_top():
    form = KmsConfigForm({CONFIG_NAME: "K"}, provider_cls=get_provider_class("aws"))
    form.is_valid()
    apply_service_errors(
        form,
        errors.InvalidInput("Bad.", field_errors={"key_id": ["Not an ARN."], "name": ["Too long."], "x": ["?"]}),
        field_map=form.field_map,
    )
    assert form.errors["key_id"] == ["Not an ARN."] and form.errors[CONFIG_NAME] == ["Too long."]
    assert form.non_field_errors() == ["?"]
