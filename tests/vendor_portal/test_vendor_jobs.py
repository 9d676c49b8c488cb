"""Rekey jobs in the portal: the list and its filters, the live progress that polls only while a job runs,
retry and cancel."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from keycore.models import AuditEvent, RekeyJob
from keycore.services import jobs, keys
from keycore.services.audit import Actor
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db


def _start_job(tenant, name="Next"):
    actor = Actor.system("tests")
    config = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=keys.ConfigInput("local", name, {}, {}), actor=actor
    )
    return keys.kms_config_make_primary(config=config, actor=actor)


def test_the_progress_fragment_polls_while_the_job_runs_and_stops_when_it_is_done(as_auditor, tenant):
    job = _start_job(tenant)
    url = reverse("vendor:job_progress", args=[job.uid])
    waiting = as_auditor.get(url).content.decode()
    assert 'hx-trigger="every 1s"' in waiting and url in waiting
    assert "<progress" in waiting and "<html" not in waiting
    jobs.job_run(job.pk)
    done = as_auditor.get(url).content.decode()
    assert "hx-trigger" not in done  # finished: the fragment stops asking for itself
    assert "Done: 1 tenant key." in done and 'value="1" max="1"' in done
    assert "Retry" not in done and "Cancel job" not in done  # and an auditor never sees the buttons


def test_the_job_page_has_a_live_region_around_the_progress(as_admin, tenant):
    job = _start_job(tenant)
    page = as_admin.get(reverse("vendor:job", args=[job.uid])).content.decode()
    assert 'id="job-progress" aria-live="polite"' in page
    assert "Cancel job" in page and "Next" in page and "Vendor-provided key" in page


def test_cancel_then_retry_a_job(as_operator, tenant, vendor_operator):
    job = _start_job(tenant)
    as_operator.post(reverse("vendor:job_cancel", args=[job.uid]))
    job.refresh_from_db()
    assert job.state == "cancelled"
    as_operator.post(reverse("vendor:job_retry", args=[job.uid]))
    job.refresh_from_db()
    assert job.state == "pending"
    actions = list(
        AuditEvent.objects.for_tenant(tenant)
        .filter(action__in=["rekey_job.cancelled", "rekey_job.retried"], actor_user=vendor_operator)
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["rekey_job.cancelled", "rekey_job.retried"]


def test_retrying_a_finished_job_is_explained(as_admin, tenant):
    job = _start_job(tenant)
    jobs.job_run(job.pk)
    response = as_admin.post(reverse("vendor:job_retry", args=[job.uid]), follow=True)
    assert "Only failed, paused or cancelled jobs can be retried." in response.content.decode()


def test_the_list_filters_by_state_kind_and_tenant(as_admin, tenant, other_tenant):
    done = _start_job(tenant)
    jobs.job_run(done.pk)
    waiting = _start_job(other_tenant)
    url = reverse("vendor:jobs")
    assert [j.pk for j in as_admin.get(url).context["page"].rows] == [waiting.pk, done.pk]
    assert [j.pk for j in as_admin.get(url, {"state": "succeeded"}).context["page"].rows] == [done.pk]
    assert [j.pk for j in as_admin.get(url, {"tenant": "globex"}).context["page"].rows] == [waiting.pk]
    assert [j.pk for j in as_admin.get(url, {"kind": "root_rotation"}).context["page"].rows] == []
    assert as_admin.get(url, {"state": "exploded"}).status_code == 400


def test_the_jobs_list_needs_no_more_queries_for_more_rows(as_admin, monkeypatch):
    tenants = [make_tenant(f"t{i}", f"T{i}") for i in range(6)]
    for t in tenants:
        _start_job(t)
    counts = []
    for size in (2, 6):
        monkeypatch.setattr("vendor_portal.jobs.PAGE_SIZE", size)
        with CaptureQueriesContext(connection) as queries:
            response = as_admin.get(reverse("vendor:jobs"))
        assert len(response.context["page"].rows) == size
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_a_job_id_that_is_not_there_is_a_404(as_admin):
    import uuid

    assert as_admin.get(reverse("vendor:job", args=[uuid.uuid4()])).status_code == 404
    assert RekeyJob.objects.count() == 0


def test_a_job_is_named_for_what_it_does_and_counted_in_plain_grammar(as_auditor, tenant):
    job = _start_job(tenant, name="EU vendor key")
    page = as_auditor.get(reverse("vendor:job", args=[job.uid])).content.decode()
    assert "<h1>Move to EU vendor key</h1>" in page and "configuration" not in page.split("<h1>")[1][:40]
    assert job.unit == "tenant key"  # one
    job.total = 3
    assert job.unit == "tenant keys"


def test_the_job_filters_offer_any_not_dashes(as_auditor):
    page = as_auditor.get(reverse("vendor:jobs")).content.decode()
    assert "---------" not in page and page.count('<option value="" selected>Any</option>') == 2
