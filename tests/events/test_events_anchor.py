"""The chain anchored outside the database: a rollback is caught by the head a tenant or its SIEM kept.

Deleting the newest events and putting back an older, validly signed head leaves a chain that
verifies on its own. Every export and every SIEM delivery carries the chain's signed head (seq,
hash, time); verification given the last one kept refuses a chain that ends before it — from the
command, the tenant portal and the service alike.
"""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.urls import reverse

from keycore.models import AuditEvent, ChainVerification, EventChain, KeyUseEvent
from keycore.services.audit import chain_key
from keycore.services.event_export import ExportFilter, export_with_head
from keycore.services.events import (
    anchor_parse,
    chain_anchor,
    chain_verification_run,
    chain_verify,
    events_prune,
)
from keycore.services.forwarding import deliver_pending, destination_create
from keycore.services.tenants import tenant_update
from tests.events.conftest import use_keys
from tests.events.receivers import WebhookReceiver

pytestmark = pytest.mark.django_db


def head_state(tenant) -> dict:
    return EventChain.objects.filter(key=chain_key(tenant.pk)).values("seq", "last_hash", "head_mac", "head_key_id")[0]


def roll_back(tenant, to: dict) -> None:
    """What someone with the database does: delete the newest events, put the older signed head back."""
    key = chain_key(tenant.pk)
    AuditEvent.objects.filter(chain=key, seq__gt=to["seq"]).delete()
    KeyUseEvent.objects.filter(chain=key, seq__gt=to["seq"]).delete()
    EventChain.objects.filter(key=key).update(**to)


@pytest.fixture
def rolled_back(tenant, recorder, admin_actor):
    """(the head the tenant kept from its last export, the seq the chain was rolled back to)."""
    use_keys(tenant)
    earlier = head_state(tenant)
    tenant_update(tenant=tenant, actor=admin_actor, name="Acme (renamed)")
    use_keys(tenant, who="after-the-snapshot")
    kept = list(export_with_head(tenant, ExportFilter()))[-1]
    assert kept["kind"] == "chain_head" and kept["seq"] == head_state(tenant)["seq"]
    roll_back(tenant, earlier)
    return kept, earlier["seq"]


def test_a_rolled_back_chain_verifies_alone_but_not_against_the_kept_head(tenant, rolled_back):
    kept, back_to = rolled_back
    assert chain_verify(tenant.pk).ok, "the gap a chain inside the database cannot close by itself"
    report = chain_verify(tenant.pk, known_head=kept)
    assert not report.ok and report.first_broken_seq == back_to + 1
    assert "rolled back" in report.problem and str(kept["seq"]) in report.problem


def test_the_command_refuses_it_given_the_last_line_of_an_export(tenant, rolled_back, tmp_path):
    kept, _ = rolled_back
    export = tmp_path / "events.jsonl"
    export.write_text('{"kind": "admin"}\n' + json.dumps(kept) + "\n")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exit_status:
        call_command("verify_event_chain", "--tenant", "acme", "--known-head", str(export), stdout=out, stderr=err)
    assert exit_status.value.code == 1 and "rolled back" in out.getvalue()


def test_the_tenant_portal_shows_the_head_and_verifies_against_a_kept_one(client, member, tenant, rolled_back):
    kept, back_to = rolled_back
    client.force_login(member)
    page = client.get(reverse("tenant:events_verify", kwargs={"tenant": "acme"})).content.decode()
    shown = json.loads(page.split('id="chain-head">')[1].split("</code>")[0].replace("&quot;", '"'))
    assert shown["seq"] == back_to and anchor_parse(shown) == shown, "the head as it stands now, to keep"
    response = client.post(reverse("tenant:events_verify", kwargs={"tenant": "acme"}), {"known_head": json.dumps(kept)})
    verification = ChainVerification.objects.get(tenant=tenant)
    assert verification.known_head == kept
    chain_verification_run(verification.pk)  # what the Celery task does
    done = client.get(response["Location"]).content.decode()
    assert f"The chain is broken at event {back_to + 1}" in done and "rolled back" in done
    bad = client.post(reverse("tenant:events_verify", kwargs={"tenant": "acme"}), {"known_head": "not a head"})
    assert bad.status_code == 400 and ChainVerification.objects.count() == 1


def test_a_head_kept_from_the_past_holds_while_the_chain_goes_on(tenant, recorder, admin_actor):
    use_keys(tenant)
    kept = chain_anchor(chain_key(tenant.pk))
    use_keys(tenant, who="later")
    assert chain_verify(tenant.pk, known_head=kept).ok
    out = io.StringIO()
    call_command("verify_event_chain", "--tenant", "acme", "--known-head", json.dumps(kept), stdout=out)
    assert "reaches the kept head" in out.getvalue()


def test_a_forged_or_foreign_head_is_refused(tenant, other_tenant, recorder):
    use_keys(tenant)
    use_keys(other_tenant)
    kept = chain_anchor(chain_key(tenant.pk))
    inflated = {**kept, "seq": kept["seq"] + 50}
    report = chain_verify(tenant.pk, known_head=inflated)
    assert not report.ok and "not issued by this KeyCore" in report.problem
    foreign = chain_anchor(chain_key(other_tenant.pk))
    assert "is of chain" in chain_verify(tenant.pk, known_head=foreign).problem


def test_a_head_pruned_past_still_holds(tenant, recorder):
    from datetime import timedelta

    from django.utils import timezone

    use_keys(tenant)
    kept = chain_anchor(chain_key(tenant.pk))
    tenant.event_retention_days = 1
    result = events_prune(tenant=tenant, now=timezone.now() + timedelta(days=3))
    assert result.pruned and result.checkpoint_seq >= kept["seq"]
    assert chain_verify(tenant.pk, known_head=kept).ok


def test_webhook_deliveries_carry_the_signed_head(tenant, admin_actor, recorder):
    receiver = WebhookReceiver()
    try:
        destination, _ = destination_create(
            tenant=tenant,
            kind="webhook",
            name="siem",
            settings_={"url": receiver.url},
            actor=admin_actor,
            from_beginning=True,
        )
        use_keys(tenant)
        deliver_pending(destination.pk)
        body = json.loads(receiver.requests[-1].body)
        head = body["head"]
        assert head["seq"] == body["events"][-1]["seq"] and head["hash"] == body["events"][-1]["hash"]
        assert chain_verify(tenant.pk, known_head=anchor_parse(head)).ok
    finally:
        receiver.close()


def test_no_head_is_issued_for_a_chain_whose_head_was_tampered_with(tenant, recorder):
    use_keys(tenant)
    EventChain.objects.filter(key=chain_key(tenant.pk)).update(head_mac="0" * 64)
    assert chain_anchor(chain_key(tenant.pk)) is None
