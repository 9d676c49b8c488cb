"""Admin audit events: who did what to which object, written in the caller's transaction.

Every service that changes something calls :func:`audit_record` inside its own
``transaction.atomic`` block, so the change and its event commit or roll back
together (nothing is lost on a crash). Events are appended to a hash chain per
tenant (and one for vendor-wide events): each row stores the SHA-256 of the
previous row's hash and its own canonical content.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from keycore.models import AuditEvent, EventChain

GENESIS_HASH = "0" * 64
#: field names whose values never enter an audit event, whatever a caller passes
SECRET_FIELD_MARKERS = ("secret", "password", "token", "pin", "private", "kek", "credential", "key_pem")


@dataclass(frozen=True)
class Actor:
    """Who acts: a signed-in user, an API key, or KeyCore itself (jobs, schedules)."""

    label: str
    user: Any = None
    api_key: Any = None
    source_ip: str | None = None
    user_agent: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def system(cls, what: str) -> Actor:
        return cls(label=f"system:{what}")

    @classmethod
    def for_user(cls, user, *, source_ip: str | None = None, user_agent: str = "") -> Actor:
        return cls(label=user.email, user=user, source_ip=source_ip, user_agent=user_agent[:300])

    @classmethod
    def from_request(cls, request) -> Actor:
        ip = client_ip(request)
        agent = request.META.get("HTTP_USER_AGENT", "")[:300]
        api_key = getattr(request, "api_key", None)
        if api_key is not None:
            return cls(label=f"api-key:{api_key.name}", api_key=api_key, source_ip=ip, user_agent=agent)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return cls.for_user(user, source_ip=ip, user_agent=agent)
        return cls(label="anonymous", source_ip=ip, user_agent=agent)


def client_ip(request) -> str | None:
    """The peer address; behind a trusted proxy (KEYCORE_BEHIND_PROXY) the first X-Forwarded-For hop."""
    from django.conf import settings

    if settings.SECURE_PROXY_SSL_HEADER:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip() or None
    return request.META.get("REMOTE_ADDR") or None


def scrub(changes: dict[str, Any] | None) -> dict[str, Any]:
    """Drop anything that looks like a secret; secrets are audited as 'changed', never by value."""
    out: dict[str, Any] = {}
    for name, value in (changes or {}).items():
        if any(marker in name.lower() for marker in SECRET_FIELD_MARKERS):
            out[name] = "(changed)"
        else:
            out[name] = value
    return out


def chain_key(tenant_id: int | None) -> str:
    return f"tenant:{tenant_id}" if tenant_id else "vendor"


def event_digest(prev_hash: str, payload: dict[str, Any]) -> str:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(prev_hash.encode() + b"\n" + body).hexdigest()


def audit_payload(event: AuditEvent) -> dict[str, Any]:
    """The content a chain hash covers; verification recomputes it from the stored row."""
    return {
        "chain": event.chain,
        "seq": event.seq,
        "tenant": event.tenant_id,
        "action": event.action,
        "actor": event.actor_label,
        "actor_user": event.actor_user_id,
        "actor_api_key": event.actor_api_key_id,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target_repr": event.target_repr,
        "changes": event.changes,
        "source_ip": event.source_ip,
        "user_agent": event.user_agent,
        "created_at": event.created_at.isoformat(),
    }


def _advance_chain(key: str) -> tuple[int, str, EventChain]:
    head, _ = EventChain.objects.select_for_update().get_or_create(key=key)
    return head.seq + 1, head.last_hash, head


def audit_record(
    *,
    actor: Actor,
    action: str,
    tenant=None,
    target=None,
    target_type: str = "",
    target_id: str = "",
    target_repr: str = "",
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event (in the caller's transaction)."""
    if target is not None:
        target_type = target_type or target._meta.model_name
        target_id = target_id or str(getattr(target, "uid", None) or target.pk)
        target_repr = target_repr or str(target)[:300]
    tenant_id = tenant.pk if tenant is not None else None
    with transaction.atomic():
        key = chain_key(tenant_id)
        seq, prev_hash, head = _advance_chain(key)
        event = AuditEvent(
            tenant_id=tenant_id,
            chain=key,
            seq=seq,
            prev_hash=prev_hash,
            action=action,
            actor_user=actor.user if actor.user is not None and actor.user.pk else None,
            actor_api_key=actor.api_key,
            actor_label=actor.label[:200],
            target_type=target_type[:40],
            target_id=target_id[:64],
            target_repr=target_repr[:300],
            changes=json.loads(json.dumps(scrub(changes), default=str)),
            source_ip=actor.source_ip,
            user_agent=actor.user_agent[:300],
            created_at=timezone.now(),
        )
        event.hash = event_digest(prev_hash, audit_payload(event))
        event.save()
        head.seq = seq
        head.last_hash = event.hash
        head.save(update_fields=["seq", "last_hash"])
    return event


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """Changed fields as {name: [before, after]}."""
    return {k: [before.get(k), after.get(k)] for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}
