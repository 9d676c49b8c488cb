from django.urls import path

from tenant_portal import events, views

app_name = "tenant"

urlpatterns = [
    path("", views.switch, name="switch"),
    path("<str:tenant>/", views.overview, name="overview"),
    # security events (tenant_portal/events.py)
    path("<str:tenant>/events/", events.events, name="events"),
    path("<str:tenant>/events/export/", events.events_export, name="events_export"),
    path("<str:tenant>/events/verify/", events.events_verify, name="events_verify"),
    path("<str:tenant>/events/verify/<uuid:verification>/", events.events_verification, name="events_verification"),
    path("<str:tenant>/events/destinations/", events.destinations, name="destinations"),
    path("<str:tenant>/events/destinations/new/", events.destination_create, name="destination_create"),
    path("<str:tenant>/events/destinations/<uuid:destination>/", events.destination_detail, name="destination"),
    path("<str:tenant>/events/destinations/<uuid:destination>/edit/", events.destination_edit, name="destination_edit"),
    path("<str:tenant>/events/destinations/<uuid:destination>/test/", events.destination_test, name="destination_test"),
    path(
        "<str:tenant>/events/destinations/<uuid:destination>/enable/",
        events.destination_enable,
        name="destination_enable",
    ),
    path(
        "<str:tenant>/events/destinations/<uuid:destination>/disable/",
        events.destination_disable,
        name="destination_disable",
    ),
    path(
        "<str:tenant>/events/destinations/<uuid:destination>/secret/",
        events.destination_secret,
        name="destination_secret",
    ),
    path(
        "<str:tenant>/events/destinations/<uuid:destination>/delete/",
        events.destination_delete,
        name="destination_delete",
    ),
    path(
        "<str:tenant>/events/destinations/<uuid:destination>/replay/",
        events.destination_replay,
        name="destination_replay",
    ),
]
