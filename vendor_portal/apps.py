from django.apps import AppConfig


class VendorPortalConfig(AppConfig):
    name = "vendor_portal"
    verbose_name = "Vendor portal"
