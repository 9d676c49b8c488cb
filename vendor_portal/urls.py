from django.urls import path

from vendor_portal import events, views

app_name = "vendor"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("tenants/", views.tenant_list, name="tenants"),
    path("tenants/<str:external_id>/", views.tenant_detail, name="tenant"),
    # security events: chain verification (vendor_portal/events.py)
    path("events/chains/", events.event_chains, name="event_chains"),
    path("events/chains/<uuid:verification>/", events.event_chain_verification, name="event_chain_verification"),
]
