"""The overview says which key protects the tenant's data, which keys can unwrap its tenant keys, what
happened to them, which jobs run, and how the keys were used in the last 30 days."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from keycore.models import RekeyJob
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.events import keyuse_append
from keycore.services.keys import kms_config_make_primary
from keycore.services.keyuse import recorder
from tests.tenant_portal.conftest import url

pytestmark = pytest.mark.django_db


def test_a_new_tenant_is_protected_by_a_vendor_provided_key(client, member, tenant):
    client.force_login(member)
    page = client.get(url("overview", tenant)).content.decode()
    assert "Your data is protected by a vendor-provided key" in page
    assert "Vendor-provided key" in page  # the configuration, by name
    assert "v1" in page  # the tenant key version and where it is wrapped
    assert "Added" in page and "Made primary" in page  # the history timeline


def test_after_the_rekey_job_only_the_tenants_own_key_can_unwrap(client, owner, tenant, own_config):
    from keycore.services.jobs import job_run

    client.force_login(owner)
    job = kms_config_make_primary(config=own_config, actor=Actor.for_user(owner))
    page = client.get(url("overview", tenant)).content.decode()
    assert "Your data is protected by your own key" in page
    assert "A vendor-provided key can still unwrap 1 of your 2 tenant key version" in page
    assert f'id="job-{job.uid}"' in page and 'hx-trigger="every 1s"' in page  # running job, polled
    assert job_run(job.pk).state == "succeeded"
    page = client.get(url("overview", tenant)).content.decode()
    assert "Only your key can unwrap your tenant keys now" in page
    assert "1 of them (v1) was once under the vendor" in page, "the history the cryptography backs, said too"
    assert own_config.settings["key_id"] in page  # where the key lives, exactly
    assert "replacing Vendor-provided key" in page  # the history names the change


def test_a_revoked_primary_key_is_said_loudly(client, owner, tenant, own_config):
    from keycore.services.keys import kms_config_revoke

    kms_config_make_primary(config=own_config, actor=Actor.for_user(owner))
    kms_config_revoke(config=own_config, actor=Actor.for_user(owner))
    client.force_login(owner)
    page = client.get(url("overview", tenant)).content.decode()
    assert "Your data cannot be read or written: your primary key is revoked" in page


def test_a_revoked_key_never_reads_healthy_nor_only_yours(client, owner, tenant, own_config):
    """Under a revoked key the overview once said "Healthy" and, in green, that only the tenant's key could unwrap."""
    from keycore.services.jobs import job_run
    from keycore.services.keys import kms_config_check, kms_config_revoke

    job_run(kms_config_make_primary(config=own_config, actor=Actor.for_user(owner)).pk)
    kms_config_check(config=own_config)  # its KMS answers
    kms_config_revoke(config=own_config, actor=Actor.for_user(owner))
    client.force_login(owner)
    page = client.get(url("overview", tenant)).content.decode()
    state = page[page.index('id="key-state"') : page.index("Tenant key versions")]
    assert "Healthy" not in state and "ok-text" not in state and "Only your key" not in state
    assert "Revoked by tenant" in state
    assert '<span class="badge badge-unknown">Reachable</span>' in state, "its KMS answers, but never in green"
    assert 'badge-ok">' not in state


def test_the_chart_counts_encrypts_and_decrypts_per_day_by_data_label(client, member, tenant):
    invoices = CallMeta(requesting_id="billing", label="invoices")
    profiles = CallMeta(requesting_id="crm", label="profiles")
    for _ in range(3):
        sealed = crypto_encrypt(tenant=tenant.external_id, fields={"n": b"1"}, meta=invoices)
    crypto_decrypt(tenant=tenant.external_id, edek=sealed.edek, fields=sealed.fields, meta=invoices)
    crypto_encrypt(tenant=tenant.external_id, fields={"n": b"1"}, meta=profiles)
    recorder.flush()
    # earlier days, as other processes' flushes left them; one day outside the 30-day window
    now = timezone.now().replace(second=0, microsecond=0)
    row = {"tenant_id": tenant.pk, "requesting_id": "billing", "source_ip": "", "key_version": 1}
    keyuse_append(
        [
            {
                **row,
                "minute": now - timedelta(days=3),
                "operation": "encrypt",
                "label": "invoices",
                "result": "ok",
                "count": 40,
            },
            {
                **row,
                "minute": now - timedelta(days=3),
                "operation": "decrypt",
                "label": "",
                "result": "key-revoked",
                "count": 7,
            },
            {
                **row,
                "minute": now - timedelta(days=45),
                "operation": "encrypt",
                "label": "old",
                "result": "ok",
                "count": 999,
            },
        ]
    )
    client.force_login(member)
    response = client.get(url("overview", tenant))
    charts = response.context["charts"]
    assert charts["encrypts"].total == 3 + 1 + 40
    assert charts["decrypts"].total == 1
    assert charts["refused"].total == 7
    assert {name for _, name, _ in charts["encrypts"].legend} == {"invoices", "profiles"}
    page = response.content.decode()
    assert "Encrypts per day" in page and "44 in 30 days" in page
    assert re.search(r'<rect class="bar s\d" [^>]+><title>\d{4}-\d\d-\d\d: 40 × invoices</title>', page)
    assert "key-revoked" in page
    assert "old" not in [name for _, name, _ in charts["encrypts"].legend]
    # the CSP forbids inline styles: the chart is attributes and classes only
    assert "style=" not in page


def test_the_key_state_partial_is_what_htmx_refreshes_when_a_job_finishes(client, member, tenant, own_config):
    from keycore.services.jobs import job_run

    job = kms_config_make_primary(config=own_config, actor=Actor.system("tests"))
    client.force_login(member)
    polling = client.get(url("job_progress", tenant, job=job.uid), HTTP_HX_REQUEST="true")
    assert "HX-Trigger" not in polling and b'hx-trigger="every 1s"' in polling.content
    job_run(job.pk)
    finished = client.get(url("job_progress", tenant, job=job.uid), HTTP_HX_REQUEST="true")
    assert finished["HX-Trigger"] == "job-finished"
    assert b"every 1s" not in finished.content  # polling stops
    assert b"100%" in finished.content
    partial = client.get(url("key_state", tenant)).content.decode()
    assert "Only your key can unwrap" in partial and "<html" not in partial


def test_jobs_list_and_detail(client, member, tenant, own_config):
    job = kms_config_make_primary(config=own_config, actor=Actor.system("tests"))
    client.force_login(member)
    listing = client.get(url("jobs", tenant)).content.decode()
    assert url("job", tenant, job=job.uid) in listing
    detail = client.get(url("job", tenant, job=job.uid)).content.decode()
    assert "Acme AWS key" in detail and "Vendor-provided key" in detail
    assert url("job_cancel", tenant, job=job.uid) not in detail  # an auditor gets no buttons


def test_an_administrator_stops_and_reruns_a_rewrap(client, admin, tenant, own_config):
    job = kms_config_make_primary(config=own_config, actor=Actor.system("tests"))
    client.force_login(admin)
    client.post(url("job_cancel", tenant, job=job.uid))
    assert RekeyJob.objects.get(pk=job.pk).state == "cancelled"
    client.post(url("job_retry", tenant, job=job.uid))
    assert RekeyJob.objects.get(pk=job.pk).state == "pending"


def test_settled_days_are_summed_once_and_today_always_live(tenant):
    from django.core.cache import cache

    from keycore import selectors

    now = timezone.now().replace(second=0, microsecond=0)
    base = {"tenant_id": tenant.pk, "requesting_id": "billing", "source_ip": "", "key_version": 1, "label": "x"}

    def append(minute, count):
        keyuse_append([{**base, "minute": minute, "operation": "encrypt", "result": "ok", "count": count}])

    def total():
        return sum(row["n"] for row in selectors.tenant_key_use_daily(tenant)[1])

    append(now - timedelta(days=3), 5)
    append(now, 1)
    assert total() == 6
    # a late row for a settled day is not summed again until its cached sums expire ...
    append(now - timedelta(days=3), 100)
    # ... while today's rows always count at once
    append(now, 2)
    assert total() == 8
    cache.clear()
    assert total() == 108
