"""The tenant portal's security-events pages, built on three people: the owner configures forwarding,
the member (an auditor) reads and exports, the outsider (another tenant's owner) finds nothing."""

from __future__ import annotations

import pytest
from django.urls import reverse

from keycore.models import AuditEvent, ChainVerification, DeadLetter, EventDestination
from keycore.services.audit import Actor
from keycore.services.events import chain_verification_run
from keycore.services.forwarding import destination_create
from tests.events.conftest import use_keys
from tests.events.receivers import WebhookReceiver
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def url(name: str, tenant, **kwargs) -> str:
    return reverse(f"tenant:{name}", kwargs={"tenant": tenant.external_id, **kwargs})


def reauthenticate(client) -> None:
    assert client.post(reverse("account_reauthenticate"), {"password": PASSWORD}).status_code == 302


@pytest.fixture
def destination(tenant):
    destination, _ = destination_create(
        tenant=tenant,
        kind="syslog",
        name="rsyslog",
        settings_={"host": "127.0.0.1", "port": 9},
        actor=Actor.system("t"),
    )
    return destination


@pytest.fixture
def used(tenant, recorder):
    use_keys(tenant, encrypts=5, decrypts=3, label="invoices", who="billing-svc")
    use_keys(tenant, encrypts=2, decrypts=0, label="payroll", who="hr-svc")
    return tenant


def test_the_member_sees_key_use_with_counts_and_admin_events(client, member, used):
    client.force_login(member)
    page = client.get(url("events", used))
    assert page.status_code == 200
    text = page.content.decode()
    assert "billing-svc" in text and "hr-svc" in text and "invoices" in text
    totals = {(t["operation"], t["result"]): t["n"] for t in page.context["totals"]}
    assert totals == {("encrypt", "ok"): 7, ("decrypt", "ok"): 3}
    admin = client.get(url("events", used), {"view": "admin"})
    assert "tenant.created" in admin.content.decode()


def test_filters_narrow_the_key_use(client, member, used):
    client.force_login(member)
    page = client.get(url("events", used), {"label": "payroll"})
    assert {r["label"] for r in page.context["rows"]} == {"payroll"}
    page = client.get(url("events", used), {"who": "billing", "operation": "decrypt"})
    assert [(r["operation"], r["n"]) for r in page.context["rows"]] == [("decrypt", 3)]
    page = client.get(url("events", used), {"result": "key-revoked"})
    assert page.context["rows"] == []
    bad = client.get(url("events", used), {"since": "2026-01-02T00:00", "until": "2026-01-01T00:00"})
    assert bad.status_code == 400 and "before" in bad.content.decode()


def test_the_pages_are_paged_by_whole_minutes(client, member, tenant):
    from datetime import UTC, datetime

    from keycore.services.events import keyuse_append

    keyuse_append(
        [
            {
                "tenant_id": tenant.pk,
                "minute": datetime(2026, 1, 1, 10, m, tzinfo=UTC),
                "operation": "encrypt",
                "label": f"l{i}",
                "requesting_id": "svc",
                "source_ip": "",
                "result": "ok",
                "count": 1,
                "key_version": 1,
            }
            for m in range(3)
            for i in range(60)
        ]
    )
    client.force_login(member)
    since = {"since": "2026-01-01T00:00"}
    first = client.get(url("events", tenant), since)
    assert len(first.context["rows"]) == 60, "a page ends at a whole minute (100 rows would split the second)"
    seen = {r["minute"] for r in first.context["rows"]}
    following = client.get(url("events", tenant), {**since, "before": first.context["next_before"]})
    assert seen.isdisjoint({r["minute"] for r in following.context["rows"]})
    total = len(first.context["rows"]) + len(following.context["rows"])
    if following.context["next_before"]:
        last = client.get(url("events", tenant), {**since, "before": following.context["next_before"]})
        total += len(last.context["rows"])
    assert total == 180


def test_without_a_from_date_a_page_sums_one_day_and_links_to_the_one_before(client, member, tenant):
    from datetime import timedelta

    from django.utils import timezone

    from keycore.services.events import keyuse_append

    now = timezone.now().replace(second=0, microsecond=0)
    row = {"tenant_id": tenant.pk, "operation": "encrypt", "label": "", "requesting_id": "svc", "source_ip": ""}
    keyuse_append(
        [
            {**row, "minute": now - timedelta(hours=1), "result": "ok", "count": 5, "key_version": 1},
            {**row, "minute": now - timedelta(days=3), "result": "ok", "count": 7, "key_version": 1},
        ]
    )
    client.force_login(member)
    page = client.get(url("events", tenant))
    assert [(r["n"]) for r in page.context["rows"]] == [5]
    assert page.context["totals"] == [{"operation": "encrypt", "result": "ok", "n": 5}]
    older = page.context["next_before"]
    assert older, "older key use exists: the page links to the day before"
    day_before = client.get(url("events", tenant), {"before": older})
    assert day_before.context["rows"] == [] and day_before.context["next_before"], "an empty day links further"
    found = client.get(url("events", tenant), {"since": (now - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M")})
    assert sorted(r["n"] for r in found.context["rows"]) == [5, 7]


def test_the_outsider_and_vendor_staff_find_nothing(client, outsider, vendor_admin, tenant, destination, owner):
    verification = ChainVerification.objects.create(tenant=tenant, chain=f"tenant:{tenant.pk}", requested_by_label="x")
    client.force_login(outsider)
    pages = [
        url("events", tenant),
        url("events_export", tenant) + "?format=csv",
        url("events_verify", tenant),
        url("events_verification", tenant, verification=verification.uid),
        url("destinations", tenant),
        url("destination", tenant, destination=destination.uid),
    ]
    for page in pages:
        assert client.get(page).status_code == 404, page
    # the outsider's own tenant with acme's objects: still nothing
    from keycore.models import Tenant

    globex = Tenant.objects.get(external_id="globex")
    assert client.get(url("destination", globex, destination=destination.uid)).status_code == 404
    assert client.get(url("events_verification", globex, verification=verification.uid)).status_code == 404
    for action in ("destination_test", "destination_enable", "destination_replay"):
        assert client.post(url(action, globex, destination=destination.uid)).status_code == 404
    client.force_login(vendor_admin)
    assert client.get(url("events", tenant)).status_code == 403


def test_the_auditor_reads_but_cannot_configure_forwarding(client, member, tenant, destination):
    client.force_login(member)
    assert client.get(url("destinations", tenant)).status_code == 200
    assert client.get(url("destination", tenant, destination=destination.uid)).status_code == 200
    denied = client.post(url("destination_create", tenant), {"kind": "syslog", "host": "h", "port": 514})
    assert denied.status_code == 403
    assert client.post(url("destination_test", tenant, destination=destination.uid)).status_code == 403
    assert EventDestination.objects.count() == 1


def test_the_owner_adds_a_webhook_and_sees_its_secret_once(client, owner, tenant):
    client.force_login(owner)
    response = client.post(
        url("destination_create", tenant), {"kind": "webhook", "name": "Splunk", "url": "http://127.0.0.1:9/hook"}
    )
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    secret = response.context["secret"]
    assert len(secret) >= 32 and secret in response.content.decode()
    destination = EventDestination.objects.get(name="Splunk")
    for page in (url("destinations", tenant), url("destination", tenant, destination=destination.uid)):
        assert secret not in client.get(page).content.decode()
    event = AuditEvent.objects.get(action="event_destination.created")
    assert event.actor_user_id == owner.pk and secret not in str(event.changes)


def test_invalid_settings_are_explained_on_the_field(client, owner, tenant, settings):
    settings.KEYCORE_EVENT_DESTINATIONS_ALLOW_PRIVATE = False
    client.force_login(owner)
    response = client.post(url("destination_create", tenant), {"kind": "webhook", "url": "https://10.0.0.8/x"})
    assert response.status_code == 400
    assert "Internal addresses are not allowed" in str(response.context["form"].errors["url"])


def test_silencing_a_destination_asks_for_the_password_again(client, owner, tenant, destination):
    client.force_login(owner)
    for action in ("destination_disable", "destination_delete", "destination_secret", "destination_edit"):
        response = client.post(url(action, tenant, destination=destination.uid), {"name": "x"})
        assert response.status_code == 302 and response["Location"].startswith(reverse("account_reauthenticate"))
    destination.refresh_from_db()
    assert destination.enabled
    reauthenticate(client)
    response = client.post(url("destination_disable", tenant, destination=destination.uid))
    assert response.status_code == 302
    destination.refresh_from_db()
    assert not destination.enabled
    client.post(url("destination_enable", tenant, destination=destination.uid))
    destination.refresh_from_db()
    assert destination.enabled


def test_the_owner_edits_tests_and_deletes_a_destination(client, owner, tenant):
    receiver = WebhookReceiver(status=200)
    try:
        destination, _ = destination_create(
            tenant=tenant,
            kind="webhook",
            name="hook",
            settings_={"url": "http://127.0.0.1:9/"},
            actor=Actor.system("t"),
        )
        client.force_login(owner)
        reauthenticate(client)
        response = client.post(
            url("destination_edit", tenant, destination=destination.uid), {"name": "Our SIEM", "url": receiver.url}
        )
        assert response.status_code == 302
        destination.refresh_from_db()
        assert destination.settings["url"] == receiver.url and destination.name == "Our SIEM"
        result = client.post(url("destination_test", tenant, destination=destination.uid), HTTP_HX_REQUEST="true")
        assert "accepted" in result.content.decode() and len(receiver.requests) == 1
        response = client.post(url("destination_delete", tenant, destination=destination.uid))
        assert response["Location"] == url("destinations", tenant)
        assert not EventDestination.objects.filter(pk=destination.pk).exists()
    finally:
        receiver.close()


def test_the_owner_replays_dead_letters(client, owner, tenant, destination, django_capture_on_commit_callbacks):
    letters = [
        DeadLetter.objects.create(
            destination=destination, tenant=tenant, seq=n, event={"id": f"x:{n}", "seq": n}, attempts=8, last_error="e"
        )
        for n in (4, 5, 6)
    ]
    client.force_login(owner)
    page = client.get(url("destination", tenant, destination=destination.uid))
    assert page.content.decode().count('name="letter"') == 3
    with django_capture_on_commit_callbacks() as callbacks:
        client.post(url("destination_replay", tenant, destination=destination.uid), {"letter": [letters[0].pk]})
    assert len(callbacks) == 1, "a replay task is enqueued after commit"
    assert list(DeadLetter.objects.order_by("seq").values_list("replay_state", flat=True)) == ["queued", "", ""]
    client.post(url("destination_replay", tenant, destination=destination.uid), {"which": "all"})
    assert set(DeadLetter.objects.values_list("replay_state", flat=True)) == {"queued"}


def test_verifying_the_chain_from_the_portal(client, member, used):
    client.force_login(member)
    response = client.post(url("events_verify", used))
    verification = ChainVerification.objects.get(tenant=used)
    assert response["Location"] == url("events_verification", used, verification=verification.uid)
    polling = client.get(response["Location"], HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 2s"' in polling
    chain_verification_run(verification.pk)  # what the Celery task does
    done = client.get(response["Location"], HTTP_HX_REQUEST="true").content.decode()
    assert "The chain is intact" in done and "hx-trigger" not in done
    # tamper with one row: the next verification names it
    victim = AuditEvent.objects.filter(tenant=used).order_by("seq")[1]
    AuditEvent.objects.filter(pk=victim.pk).update(target_repr="forged")
    client.post(url("events_verify", used))
    latest = ChainVerification.objects.filter(tenant=used).latest("created_at")
    chain_verification_run(latest.pk)
    page = client.get(url("events_verification", used, verification=latest.uid)).content.decode()
    assert f"The chain is broken at event {victim.seq}" in page
    assert "changed after it was written" in page


def test_the_owner_gives_a_syslog_destination_a_client_certificate_and_its_key_stays_hidden(
    client, owner, tenant, tmp_path
):
    from tests.events.receivers import make_pki

    pki = make_pki(tmp_path)
    client.force_login(owner)
    form = {
        "kind": "syslog",
        "name": "SIEM",
        "host": "127.0.0.1",
        "port": 6514,
        "tls": "on",
        "ca_bundle": pki["ca_pem"],
        "client_cert": pki["client_cert_pem"],
        "client_key": "not a key",
        "hostname": "keycore-eu-1",
    }
    refused = client.post(url("destination_create", tenant), form)
    assert refused.status_code == 400 and "not a key" not in refused.content.decode(), "a key is never echoed"
    added = client.post(url("destination_create", tenant), {**form, "client_key": pki["client_key_pem"]})
    assert added.status_code == 302
    destination = EventDestination.objects.get(tenant=tenant, name="SIEM")
    assert destination.has_secret and destination.settings["hostname"] == "keycore-eu-1"
    page = client.get(added["Location"]).content.decode()
    key_body = pki["client_key_pem"].split("-----")[2].strip()[:40]
    assert key_body not in page and "BEGIN PRIVATE KEY" not in page
    created = AuditEvent.objects.get(action="event_destination.created", target_id=str(destination.uid))
    assert "BEGIN" not in str(created.changes) and created.changes["client_key"] == "(changed)"
