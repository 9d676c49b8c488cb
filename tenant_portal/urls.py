from django.urls import path

from tenant_portal import events, keys, versions, views

app_name = "tenant"

# Every page below "<tenant>/" is guarded by keycore.access.tenant_view; objects are named by uid.
# tests/test_isolation.py walks this list as another tenant's member and expects 404 everywhere.
urlpatterns = [
    path("", views.switch, name="switch"),
    path("<str:tenant>/", views.overview, name="overview"),
    path("<str:tenant>/key-state/", views.overview_key_state, name="key_state"),
    # members and invitations
    path("<str:tenant>/members/", views.members, name="members"),
    path("<str:tenant>/members/invite/", views.member_invite, name="member_invite"),
    path("<str:tenant>/members/<uuid:member>/role/", views.member_role, name="member_role"),
    path("<str:tenant>/members/<uuid:member>/remove/", views.member_remove, name="member_remove"),
    path("<str:tenant>/invitations/<uuid:invitation>/resend/", views.invitation_resend_view, name="invitation_resend"),
    path("<str:tenant>/invitations/<uuid:invitation>/revoke/", views.invitation_revoke_view, name="invitation_revoke"),
    path(
        "<str:tenant>/invitations/<uuid:invitation>/approve/", views.invitation_approve_view, name="invitation_approve"
    ),
    # key versions and what the vendor did (tenant_portal/versions.py)
    path("<str:tenant>/keys/versions/", versions.versions, name="versions"),
    path("<str:tenant>/keys/versions/<int:version>/retire/", versions.version_retire, name="version_retire"),
    path("<str:tenant>/vendor-actions/", versions.vendor_actions, name="vendor_actions"),
    # KMS configurations
    path("<str:tenant>/keys/", keys.config_list, name="keys"),
    path("<str:tenant>/keys/new/", keys.config_new, name="key_new"),
    path("<str:tenant>/keys/new/<str:provider>/", keys.config_create, name="key_create"),
    path("<str:tenant>/keys/new/<str:provider>/test/", keys.config_test, name="key_test"),
    path("<str:tenant>/keys/<uuid:config>/", keys.config_detail, name="key"),
    path("<str:tenant>/keys/<uuid:config>/check/", keys.config_check, name="key_check"),
    path("<str:tenant>/keys/<uuid:config>/credentials/", keys.config_secrets, name="key_secrets"),
    path("<str:tenant>/keys/<uuid:config>/revoke/", keys.config_revoke, name="key_revoke"),
    path(
        "<str:tenant>/keys/<uuid:config>/make-primary/",
        keys.config_action,
        {"action": "make-primary"},
        name="key_primary",
    ),
    path(
        "<str:tenant>/keys/<uuid:config>/decrypt-only/",
        keys.config_action,
        {"action": "decrypt-only"},
        name="key_demote",
    ),
    path("<str:tenant>/keys/<uuid:config>/disable/", keys.config_action, {"action": "disable"}, name="key_disable"),
    path("<str:tenant>/keys/<uuid:config>/reenable/", keys.config_action, {"action": "reenable"}, name="key_reenable"),
    # rekey jobs
    path("<str:tenant>/jobs/", views.jobs, name="jobs"),
    path("<str:tenant>/jobs/<uuid:job>/", views.job_detail, name="job"),
    path("<str:tenant>/jobs/<uuid:job>/progress/", views.job_progress, name="job_progress"),
    path("<str:tenant>/jobs/<uuid:job>/retry/", views.job_action, {"action": "retry"}, name="job_retry"),
    path("<str:tenant>/jobs/<uuid:job>/cancel/", views.job_action, {"action": "cancel"}, name="job_cancel"),
    # settings (owners)
    path("<str:tenant>/settings/", views.settings_view, name="settings"),
    path("<str:tenant>/settings/save/", views.settings_save, name="settings_save"),
    path("<str:tenant>/settings/rotate-key/", views.rotate_tenant_key, name="rotate_key"),
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
