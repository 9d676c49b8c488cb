from django.urls import path

from vendor_portal import views

app_name = "vendor"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("tenants/", views.tenant_list, name="tenants"),
    path("tenants/<str:external_id>/", views.tenant_detail, name="tenant"),
]
