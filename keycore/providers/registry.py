"""Which providers exist: a name → dotted path registry, imported lazily.

Adding a provider (GCP KMS, Azure Key Vault…) is one module under
``keycore/providers/`` and one line here (or in the ``KEYCORE_EXTRA_PROVIDERS``
setting, for out-of-tree plug-ins). See ``docs/providers.md``.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module

from keycore import errors
from keycore.providers.base import KeyProvider

PROVIDERS: dict[str, str] = {
    "local": "keycore.providers.local.LocalProvider",
    "aws": "keycore.providers.aws.AwsKmsProvider",
    "kmip": "keycore.providers.kmip.KmipProvider",
    "pkcs11": "keycore.providers.pkcs11.Pkcs11Provider",
    "openbao": "keycore.providers.openbao.OpenBaoTransitProvider",
}


def _all_paths() -> dict[str, str]:
    paths = dict(PROVIDERS)
    try:
        from django.conf import settings

        if settings.configured:
            paths.update(getattr(settings, "KEYCORE_EXTRA_PROVIDERS", {}) or {})
    except ImportError:  # pragma: no cover - Django is always installed with KeyCore
        pass
    return paths


@cache
def get_provider_class(name: str) -> type[KeyProvider]:
    path = _all_paths().get(name)
    if path is None:
        raise errors.InvalidInput(f"Unknown KMS provider {name!r}.", field_errors={"provider": ["Unknown provider."]})
    module_name, _, class_name = path.rpartition(".")
    cls = getattr(import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, KeyProvider)):
        raise errors.KmsMisconfigured(f"{path} is not a KeyProvider.")
    return cls


def provider_names() -> list[str]:
    return list(_all_paths())


def provider_choices(*, for_tenant: bool | None = None) -> list[tuple[str, str]]:
    """(name, label) pairs; ``for_tenant`` True/False filters by who may create them."""
    out = []
    for name in _all_paths():
        cls = get_provider_class(name)
        if for_tenant is True and not cls.tenant_may_create:
            continue
        if for_tenant is False and not cls.vendor_may_create:
            continue
        out.append((name, cls.label))
    return out
