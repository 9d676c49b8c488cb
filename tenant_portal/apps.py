from django.apps import AppConfig


class TenantPortalConfig(AppConfig):
    name = "tenant_portal"
    verbose_name = "Tenant portal"
