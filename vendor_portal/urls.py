from django.urls import path

from vendor_portal import events, jobs, keys, staff, views

app_name = "vendor"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("tenants/", views.tenant_list, name="tenants"),
    # outside tenants/ so that no external id ("new", "import", "export.csv" are valid ones) is shadowed
    path("tenants.csv", views.tenant_export, name="tenants_export"),
    path("onboarding/new/", views.tenant_create, name="tenant_create"),
    path("onboarding/import/", views.tenant_import, name="tenant_import"),
    path("onboarding/import/confirm/", views.tenant_import_confirm, name="tenant_import_confirm"),
    path("tenants/<str:external_id>/", views.tenant_detail, name="tenant"),
    path("tenants/<str:external_id>/audit/", views.tenant_audit, name="tenant_audit"),
    path("tenants/<str:external_id>/status/", views.tenant_status, name="tenant_status"),
    path("tenants/<str:external_id>/shred/", views.tenant_shred, name="tenant_shred"),
    path("tenants/<str:external_id>/invitations/", views.invitation_create, name="invitation_create"),
    path("tenants/<str:external_id>/invitations/<uuid:uid>/resend/", views.invitation_resend, name="invitation_resend"),
    path("tenants/<str:external_id>/invitations/<uuid:uid>/revoke/", views.invitation_revoke, name="invitation_revoke"),
    path("tenants/<str:external_id>/keys/new/", keys.key_create, name="key_create"),
    path("tenants/<str:external_id>/keys/test/", keys.key_test, name="key_test"),
    path("tenants/<str:external_id>/keys/<uuid:uid>/primary/", keys.key_make_primary, name="key_make_primary"),
    path("tenants/<str:external_id>/keys/<uuid:uid>/decrypt-only/", keys.key_decrypt_only, name="key_decrypt_only"),
    path("tenants/<str:external_id>/keys/<uuid:uid>/retire/", keys.key_retire, name="key_retire"),
    path("jobs/", jobs.job_list, name="jobs"),
    path("jobs/<uuid:uid>/", jobs.job_detail, name="job"),
    path("jobs/<uuid:uid>/progress/", jobs.job_progress, name="job_progress"),
    path("jobs/<uuid:uid>/retry/", jobs.job_retry, name="job_retry"),
    path("jobs/<uuid:uid>/cancel/", jobs.job_cancel, name="job_cancel"),
    path("staff/", staff.staff_list, name="staff"),
    path("staff/invite/", staff.staff_invite, name="staff_invite"),
    path("staff/<int:pk>/role/", staff.staff_role, name="staff_role"),
    path("staff/<int:pk>/deactivate/", staff.staff_deactivate, name="staff_deactivate"),
    path("staff/invitations/<uuid:uid>/resend/", staff.staff_invitation_resend, name="staff_invitation_resend"),
    path("staff/invitations/<uuid:uid>/revoke/", staff.staff_invitation_revoke, name="staff_invitation_revoke"),
    path("api-keys/", staff.api_key_list, name="api_keys"),
    path("api-keys/new/", staff.api_key_create, name="api_key_create"),
    path("api-keys/<uuid:uid>/rotate/", staff.api_key_rotate, name="api_key_rotate"),
    path("api-keys/<uuid:uid>/revoke/", staff.api_key_revoke, name="api_key_revoke"),
    path("audit/", views.audit_list, name="audit"),
    # security events: chain verification (vendor_portal/events.py)
    path("events/chains/", events.event_chains, name="event_chains"),
    path("events/chains/<uuid:verification>/", events.event_chain_verification, name="event_chain_verification"),
]
