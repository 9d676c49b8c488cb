"""A tenant's KMS configuration cannot point KeyCore at private networks or make it load a library."""

from __future__ import annotations

import pytest

from keycore import errors
from keycore.models import KmsConfig
from keycore.services.keys import ConfigInput, kms_config_create, kms_config_test_connection

pytestmark = pytest.mark.django_db

KMIP = {"host": "10.1.2.3", "port": 5696, "key_uid": "1"}


def _kmip_input(host: str) -> ConfigInput:
    return ConfigInput("kmip", "Tenant KMIP", {**KMIP, "host": host}, {"client_certificate": "x", "client_key": "y"})


@pytest.mark.parametrize("host", ["10.1.2.3", "169.254.169.254", "192.168.0.10", "[fd00::1]", "localhost"])
def test_a_tenant_cannot_point_keycore_at_a_private_address(tenant, actor, settings, host):
    settings.KEYCORE_TENANT_KMS_ALLOWED_NETWORKS = []
    from keycore.egress import check_tenant_egress
    from keycore.providers.registry import get_provider_class

    with pytest.raises(errors.InvalidInput, match="not a public address"):
        check_tenant_egress(get_provider_class("kmip"), {"host": host})
    bare = host.strip("[]")
    url_host = f"[{bare}]" if ":" in bare else bare
    with pytest.raises(errors.InvalidInput, match="not a public address"):
        check_tenant_egress(get_provider_class("aws"), {"endpoint_url": f"http://{url_host}:4566"})


def test_the_operator_can_open_a_private_range(settings):
    from keycore.egress import check_tenant_egress
    from keycore.providers.registry import get_provider_class

    settings.KEYCORE_TENANT_KMS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    check_tenant_egress(get_provider_class("kmip"), {"host": "10.1.2.3"})
    with pytest.raises(errors.InvalidInput):
        check_tenant_egress(get_provider_class("kmip"), {"host": "10.2.0.1"})


def test_public_hosts_and_aws_regional_endpoints_pass(settings):
    from keycore.egress import check_tenant_egress
    from keycore.providers.registry import get_provider_class

    settings.KEYCORE_TENANT_KMS_ALLOWED_NETWORKS = []
    check_tenant_egress(get_provider_class("kmip"), {"host": "8.8.8.8"})
    check_tenant_egress(get_provider_class("aws"), {"key_id": "arn:aws:kms:eu-west-1:111122223333:key/x"})


def test_the_policy_applies_to_the_services_for_tenant_configurations_only(tenant, actor, settings):
    settings.KEYCORE_TENANT_KMS_ALLOWED_NETWORKS = []
    with pytest.raises(errors.InvalidInput, match="not a public address"):
        kms_config_test_connection(tenant=tenant, provider="kmip", settings_=KMIP, secrets={})
    with pytest.raises(errors.InvalidInput, match="not a public address"):
        kms_config_create(tenant=tenant, owner="tenant", data=_kmip_input("10.1.2.3"), actor=actor)
    assert not KmsConfig.objects.filter(tenant=tenant, provider="kmip").exists()


def test_tenant_pkcs11_modules_must_be_allowed_in_production(settings, tmp_path):
    from keycore.egress import check_tenant_egress
    from keycore.providers.registry import get_provider_class

    module = tmp_path / "libvendor.so"
    module.write_bytes(b"\x7fELF")
    settings.EMBEDDED = False
    settings.KEYCORE_PKCS11_MODULES = None
    with pytest.raises(errors.InvalidInput, match="has not allowed any PKCS#11 module"):
        check_tenant_egress(get_provider_class("pkcs11"), {"module_path": str(module)})
    settings.KEYCORE_PKCS11_MODULES = str(tmp_path / "other.so")
    with pytest.raises(errors.InvalidInput, match="not one of the PKCS#11 modules"):
        check_tenant_egress(get_provider_class("pkcs11"), {"module_path": str(module)})
    settings.KEYCORE_PKCS11_MODULES = str(module)
    check_tenant_egress(get_provider_class("pkcs11"), {"module_path": str(module)})
