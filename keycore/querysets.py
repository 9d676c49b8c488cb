"""Tenant isolation is structural: every portal view and API queryset starts here."""

from __future__ import annotations

from django.db import models


class TenantScopedQuerySet(models.QuerySet):
    #: the path from the model to its tenant; models that reach it indirectly override it
    tenant_field = "tenant"

    def for_tenant(self, tenant) -> TenantScopedQuerySet:
        return self.filter(**{self.tenant_field: tenant})


class TenantKeyWrapQuerySet(TenantScopedQuerySet):
    tenant_field = "tenant_key__tenant"
