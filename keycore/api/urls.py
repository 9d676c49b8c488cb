"""/api/v1/: the vendor bridge, the crypto API, the OpenAPI schema and its reference page.

Resources end in a slash, the crypto calls do not (``/api/v1/crypto/encrypt``).
Anything else under /api/v1/ is a 404 problem, never the portals' HTML page.
"""

from django.urls import path, re_path
from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView

from keycore.api import crypto, leases, vendor_keys, views
from keycore.api import schema as _schema  # noqa: F401 - registers the bearer scheme with drf-spectacular
from keycore.api.docs import ApiDocsView, redoc_script
from keycore.api.problems import unknown_endpoint

SchemaView = extend_schema(exclude=True)(SpectacularAPIView)

tenant = "tenants/<str:external_id>/"

urlpatterns = [
    # the crypto API first: it is the hot path, and Django tries patterns in order
    path("crypto/encrypt", crypto.EncryptView.as_view(), name="api-crypto-encrypt"),
    path("crypto/decrypt", crypto.DecryptView.as_view(), name="api-crypto-decrypt"),
    path("crypto/rekey", crypto.RekeyView.as_view(), name="api-crypto-rekey"),
    path("crypto/batch-encrypt", crypto.BatchEncryptView.as_view(), name="api-crypto-batch-encrypt"),
    path("crypto/batch-decrypt", crypto.BatchDecryptView.as_view(), name="api-crypto-batch-decrypt"),
    path("crypto/deterministic/encrypt", leases.DeterministicEncryptView.as_view(), name="api-crypto-det-encrypt"),
    path("crypto/deterministic/decrypt", leases.DeterministicDecryptView.as_view(), name="api-crypto-det-decrypt"),
    path("crypto/search-terms", leases.SearchTermsView.as_view(), name="api-crypto-search-terms"),
    path("crypto/leases", leases.LeaseView.as_view(), name="api-crypto-leases"),
    path("crypto/leases/derive", leases.LeaseDeriveView.as_view(), name="api-crypto-lease-derive"),
    path("crypto/epoch", leases.EpochView.as_view(), name="api-crypto-epoch"),
    path("crypto/usage", leases.UsageView.as_view(), name="api-crypto-usage"),
    path(
        "schema/",
        SchemaView.as_view(
            authentication_classes=[],
            permission_classes=[],
            # JSON unless YAML is asked for
            renderer_classes=[OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer, OpenApiYamlRenderer2],
        ),
        name="api-schema",
    ),
    path("docs/", ApiDocsView.as_view(), name="api-docs"),
    path("docs/redoc.js", redoc_script, name="api-docs-script"),
    # the vendor bridge
    path("tenants/", views.TenantListView.as_view(), name="api-tenants"),
    path("tenants/bulk/", views.TenantBulkView.as_view(), name="api-tenants-bulk"),
    path(tenant, views.TenantDetailView.as_view(), name="api-tenant"),
    path(tenant + "suspend/", views.tenant_suspend, name="api-tenant-suspend"),
    path(tenant + "reactivate/", views.tenant_reactivate, name="api-tenant-reactivate"),
    path(tenant + "offboard/", views.tenant_offboard, name="api-tenant-offboard"),
    path(tenant + "invitations/", views.InvitationListView.as_view(), name="api-invitations"),
    path(tenant + "invitations/<uuid:uid>/revoke/", views.invitation_revoke, name="api-invitation-revoke"),
    path(tenant + "invitations/<uuid:uid>/resend/", views.invitation_resend, name="api-invitation-resend"),
    path(tenant + "kms-configs/", views.KmsConfigListView.as_view(), name="api-kms-configs"),
    path(tenant + "kms-configs/<uuid:uid>/", views.KmsConfigDetailView.as_view(), name="api-kms-config"),
    path(
        tenant + "kms-configs/<uuid:uid>/make-primary/",
        views.KmsConfigMakePrimaryView.as_view(),
        name="api-kms-config-make-primary",
    ),
    path(
        tenant + "kms-configs/<uuid:uid>/decrypt-only/",
        views.kms_config_decrypt_only,
        name="api-kms-config-decrypt-only",
    ),
    path(tenant + "kms-configs/<uuid:uid>/retire/", views.kms_config_retire, name="api-kms-config-retire"),
    path(tenant + "key-history/", views.KeyHistoryView.as_view(), name="api-key-history"),
    path(tenant + "key-versions/", views.KeyVersionsView.as_view(), name="api-key-versions"),
    path(tenant + "rekey-jobs/", views.TenantRekeyJobsView.as_view(), name="api-tenant-rekey-jobs"),
    path(tenant + "events/", views.TenantEventsView.as_view(), name="api-tenant-events"),
    path("rekey-jobs/", views.RekeyJobListView.as_view(), name="api-rekey-jobs"),
    path("rekey-jobs/<uuid:uid>/", views.RekeyJobDetailView.as_view(), name="api-rekey-job"),
    path("rekey-jobs/<uuid:uid>/cancel/", views.rekey_job_cancel, name="api-rekey-job-cancel"),
    path("rekey-jobs/<uuid:uid>/retry/", views.rekey_job_retry, name="api-rekey-job-retry"),
    path("vendor-keys/", vendor_keys.VendorKeyListView.as_view(), name="api-vendor-keys"),
    path("vendor-keys/<uuid:uid>/", vendor_keys.VendorKeyDetailView.as_view(), name="api-vendor-key"),
    path("vendor-keys/<uuid:uid>/check/", vendor_keys.VendorKeyCheckView.as_view(), name="api-vendor-key-check"),
    path(
        "vendor-keys/<uuid:uid>/make-default/",
        vendor_keys.VendorKeyMakeDefaultView.as_view(),
        name="api-vendor-key-make-default",
    ),
    path("vendor-keys/<uuid:uid>/assign/", vendor_keys.VendorKeyAssignView.as_view(), name="api-vendor-key-assign"),
    path("vendor-keys/<uuid:uid>/retire/", vendor_keys.VendorKeyRetireView.as_view(), name="api-vendor-key-retire"),
    path("audit/", views.AuditListView.as_view(), name="api-audit"),
    re_path(r"^[\s\S]*\Z", unknown_endpoint),  # anything at all, newlines included
]
