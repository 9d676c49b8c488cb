from django.urls import include, path

from keycore import views

handler400 = "keycore.views.bad_request"
handler404 = "keycore.views.not_found"
handler500 = "keycore.views.server_error"
handler403 = "keycore.views.forbidden"

urlpatterns = [
    # first: the crypto API is the hot path, and Django tries the patterns in order
    path("api/v1/", include("keycore.api.urls")),
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation_accept"),
    path("accounts/", include("allauth.urls")),
    path("vendor/", include("vendor_portal.urls")),
    path("tenant/", include("tenant_portal.urls")),
]
