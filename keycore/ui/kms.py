"""A KMS configuration as both portals describe it: its provider's label, where the key lives, the setup help."""

from __future__ import annotations

from django.conf import settings

from keycore import errors
from keycore.models import KmsConfig, Tenant
from keycore.providers.base import KeyProvider
from keycore.providers.registry import get_provider_class
from keycore.services.keyring import describe_config


def provider_label(name: str) -> str:
    """The provider's name for people ("AWS KMS"); its registry name when no such provider is installed."""
    try:
        return get_provider_class(name).label
    except errors.KeyCoreError:
        return name


def where_the_key_lives(config: KmsConfig) -> str:
    """A configuration's non-secret location (ARN, host and key id, token and label); "" for a key KeyCore
    holds itself, whose description would need its sealed secret."""
    try:
        fields = get_provider_class(config.provider).fields
    except errors.KeyCoreError:
        return ""
    if not fields or not (config.settings or config.vendor_key_id):
        return ""
    return describe_config(config)


def kind_and_place(config: KmsConfig) -> str:
    """Which kind of KMS, and where the key lives in it: "AWS KMS: arn:aws:kms:…", or the kind alone."""
    where = where_the_key_lives(config)
    label = provider_label(config.provider)
    return f"{label}: {where}" if where else label


def setup_help(provider_cls: type[KeyProvider], tenant: Tenant) -> str:
    """What the KMS must allow, written for ``tenant`` (its ids and the vendor's principal filled in)."""
    kwargs = {
        "tenant_external_id": tenant.external_id,
        "vendor_principal": settings.KEYCORE_VENDOR_PRINCIPAL,
        "tenant_uid": tenant.uid.hex,
    }
    try:
        return provider_cls.setup_help(**kwargs)
    except TypeError:
        # a provider plug-in written before setup_help took the tenant's uid
        del kwargs["tenant_uid"]
        return provider_cls.setup_help(**kwargs)
