"""Admin audit events: who did what to which object, written in the caller's transaction.

Every service that changes something calls :func:`audit_record` inside its own
``transaction.atomic`` block, so the change and its event commit or roll back
together (nothing is lost on a crash). Events are appended to a hash chain per
tenant (and one for vendor-wide events): each row stores the SHA-256 of the
previous row's hash and its own canonical content.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import BigIntegerField
from django.db.models.functions import Cast, Substr
from django.utils import timezone

from keycore import errors
from keycore.models import AuditEvent, EventChain
from keycore.models.audit import GENESIS_HASH
from keycore.sealing import root_keyring
from keycore.services.bulk_writes import insert_rows, update_rows

__all__ = [
    "GENESIS_HASH",
    "Actor",
    "audit_record",
    "audit_record_many",
    "audit_record_rows",
    "chain_key",
    "diff",
    "event_digest",
    "scrub",
]
#: field names whose values never enter an audit event, whatever a caller passes
SECRET_FIELD_MARKERS = (
    "secret",
    "password",
    "token",
    "pin",
    "private",
    "kek",
    "credential",
    "key_pem",
    "client_key",
)


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
    """The client's address: the peer's, or behind trusted proxies the rightmost hop none of them wrote.

    Each of the ``KEYCORE_TRUSTED_PROXY_COUNT`` proxies appends the address it got the
    connection from to ``X-Forwarded-For``; so the last *n* entries are theirs, and the
    *n*-th from the right is the address of whoever reached the outermost one. Every
    entry left of it came with the request and is the client's own claim: taking it
    would let anyone choose their address (in audit events, and in the sign-in rate
    limits, where one shared address means one attacker locks everyone out). With fewer
    entries than proxies, all were written by trusted proxies and the leftmost is the
    client. An entry that is not an address falls back to the peer's.
    """
    count = settings.KEYCORE_TRUSTED_PROXY_COUNT
    if count:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if hops:
            found = normalise_ip(_without_port(hops[-min(count, len(hops))]))
            if found is not None:
                return found
    return normalise_ip(request.META.get("REMOTE_ADDR"))


def _without_port(hop: str) -> str:
    """Some proxies write ``203.0.113.9:51234`` or ``[2001:db8::1]:443``: the address alone."""
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


def normalise_ip(value: str | None) -> str | None:
    """The canonical text of an IP address (as PostgreSQL's inet returns it), or None if it is not one.

    Canonical, because the address is part of what an event's hash covers.
    """
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def scrub(changes: dict[str, Any] | None) -> dict[str, Any]:
    """Drop anything that looks like a secret, at any depth; secrets are audited as 'changed', never by value."""
    return {name: _scrub_value(name, value) for name, value in (changes or {}).items()}


#: any marker anywhere in a name, in one pass (scrub runs on every event's every key)
_SECRET_NAME = re.compile("|".join(re.escape(marker) for marker in SECRET_FIELD_MARKERS))


def _is_secret_name(name: Any) -> bool:
    return _SECRET_NAME.search(str(name).lower()) is not None


def _scrub_value(name: Any, value: Any) -> Any:
    if _is_secret_name(name):
        return "(changed)"
    if isinstance(value, dict):
        return {k: _scrub_value(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value("", v) for v in value]
    return value


#: a text in an event's changes longer than this is recorded as its digest (events stay small enough for syslog)
BULKY_VALUE_CHARS = 1024


def compact(changes: dict[str, Any]) -> dict[str, Any]:
    """Bulky values out of events: PEM material (CA bundles, certificates) and any text over
    ``BULKY_VALUE_CHARS`` become ``"sha256:<hex> (…)"`` — enough to tell which one, a few dozen bytes."""
    return {name: _compact_value(value) for name, value in changes.items()}


def _compact_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _compact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_compact_value(v) for v in value]
    if isinstance(value, str) and ("-----BEGIN " in value or len(value) > BULKY_VALUE_CHARS):
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        pems = value.count("-----BEGIN ")
        what = f"{pems} PEM block{'s' if pems != 1 else ''}, " if pems else ""
        return f"sha256:{digest} ({what}{len(value):,} characters)"
    return value


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


# --- signatures over chain heads and checkpoints ------------------------------------------------

MAC_INFO = b"keycore event-chain signatures v1"


@cache
def chain_mac_keys() -> dict[str, bytes]:
    """MAC keys derived (HKDF-SHA256) from every configured root key, by root-key id; current first.

    A different key from the one that seals secrets: the root key is never used for two purposes.
    """
    # from the keyring, so a KMS-wrapped root key (keycore/unseal.py) is unwrapped once per process, not again here
    return root_keyring().derive_keys(MAC_INFO)


def _mac_message(kind: str, chain: str, seq: int, digest: str) -> bytes:
    return f"{kind}\n{chain}\n{seq}\n{digest}".encode()


def chain_sign(kind: str, chain: str, seq: int, digest: str) -> tuple[str, str]:
    """(root-key id, HMAC-SHA256 hex) over a chain position: ``kind`` is "head" or "checkpoint"."""
    signer, key = next(iter(chain_mac_keys().items()))
    return signer, hmac.new(key, _mac_message(kind, chain, seq, digest), hashlib.sha256).hexdigest()


def chain_signature_valid(kind: str, chain: str, seq: int, digest: str, *, key_id: str, mac: str) -> bool | None:
    """True/False; None when the root key that signed is not configured (so it cannot be checked)."""
    key = chain_mac_keys().get(key_id)
    if key is None:
        return None
    expected = hmac.new(key, _mac_message(kind, chain, seq, digest), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, mac or "")


def lock_chain(key: str) -> EventChain:
    """The chain's head, locked until the caller's transaction ends (one appender at a time).

    PostgreSQL: SELECT … FOR UPDATE. SQLite: writers are serialised by the database
    (transactions begin IMMEDIATE), so there is nothing to lock.
    """
    head, _ = EventChain.objects.select_for_update(no_key=True).get_or_create(key=key)
    return head


def advance_head(head: EventChain, seq: int, last_hash: str) -> None:
    """Move the locked head to (seq, last_hash) and re-sign it."""
    head.seq, head.last_hash = seq, last_hash
    head.head_key_id, head.head_mac = chain_sign("head", head.key, seq, last_hash)
    head.save(update_fields=["seq", "last_hash", "head_key_id", "head_mac"])


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
        head = lock_chain(key)
        seq, prev_hash = head.seq + 1, head.last_hash
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
            changes=json.loads(json.dumps(compact(scrub(changes)), default=str)),
            source_ip=normalise_ip(actor.source_ip),
            user_agent=actor.user_agent[:300],
            created_at=timezone.now(),
        )
        event.hash = event_digest(prev_hash, audit_payload(event))
        event.save()
        advance_head(head, seq, event.hash)
    return event


class _EventRow(dict):
    """An audit row as attname → value, readable as attributes by ``audit_payload``."""

    __getattr__ = dict.get


def audit_record_many(*, actor: Actor, action: str, rows: list[tuple[int, str, str, str, dict[str, Any]]]) -> None:
    """Append one audit event per (tenant id, target type, target id, target repr, changes) to its tenant's chain.

    ``changes`` must be JSON-ready and hold no secret: callers pass fixed keys
    (fingerprints, counts, the job), checked once here with ``scrub``.

    The same chain rules as :func:`audit_record`, set-based (for jobs over
    thousands of tenants): heads locked in tenant order (as key-use flushes lock
    them), hashes chained, rows inserted at once, heads moved and re-signed at once.
    """
    if not rows:
        return
    sample = rows[0][4]
    if scrub(sample) != sample or json.loads(json.dumps(sample)) != sample:
        raise errors.InvalidInput("Set-based audit events take plain, secret-free changes only.")
    _append_many(actor, [(tenant_id, action, *rest) for tenant_id, *rest in rows])


def audit_record_rows(
    *, actor: Actor, rows: list[tuple[int, str, str, str, str, dict[str, Any]]], new_chains: bool = False
) -> None:
    """Append (tenant id, action, target type, target id, target repr, changes) events, set-based.

    Like :func:`audit_record` for each row — changes scrubbed of secrets and compacted, every one —
    and like :func:`audit_record_many` in its writes; a tenant's rows keep their order on its chain.

    ``new_chains``: the tenants were created in the caller's transaction, so none has a chain yet and no
    one else can append to one before it commits; their heads are written once, signed, at their final
    position (no lock, no empty head first and then an update).
    """
    if rows:
        _append_many(
            actor,
            [(*row[:5], json.loads(json.dumps(compact(scrub(row[5])), default=str))) for row in rows],
            new_chains=new_chains,
        )


def _append_many(
    actor: Actor, rows: list[tuple[int, str, str, str, str, dict[str, Any]]], *, new_chains: bool = False
) -> None:
    now = timezone.now()
    keys = sorted({chain_key(tenant_id) for tenant_id, *_ in rows})
    if new_chains:
        heads = {key: [None, 0, GENESIS_HASH] for key in keys}
        _append_events(actor, rows, heads, now)
        defaults = {f.attname: f.get_default() for f in EventChain._meta.concrete_fields if not f.primary_key}
        new = []
        for key, (_pk, seq, last) in heads.items():
            signer, mac = chain_sign("head", key, seq, last)
            new.append({**defaults, "key": key, "seq": seq, "last_hash": last, "head_key_id": signer, "head_mac": mac})
        insert_rows(EventChain, new)  # a chain that exists already makes this fail: the caller's promise was wrong
        return

    def lock(wanted):
        chains = EventChain.objects.select_for_update(no_key=True).filter(key__in=wanted)
        ordered = chains.order_by(Cast(Substr("key", 8), BigIntegerField()))
        ordered = ordered.values_list("pk", "key", "seq", "last_hash")
        return {key: [pk, seq, last] for pk, key, seq, last in ordered}

    heads = lock(keys)
    if len(heads) < len(keys):  # a tenant without any event yet
        EventChain.objects.bulk_create([EventChain(key=k) for k in keys if k not in heads], ignore_conflicts=True)
        heads.update(lock([k for k in keys if k not in heads]))
    _append_events(actor, rows, heads, now)
    moved = []
    for key, (pk, seq, last) in heads.items():  # what advance_head does, for many heads in one statement
        moved.append((pk, seq, last, *chain_sign("head", key, seq, last)))
    update_rows(
        EventChain, [("seq", "int8"), ("last_hash", "text"), ("head_key_id", "text"), ("head_mac", "text")], moved
    )


def _append_events(actor: Actor, rows, heads: dict[str, list], now) -> None:
    """Chain ``rows`` onto ``heads`` (key → [pk, seq, last hash], moved in place) and insert them."""
    common = {
        "actor_user_id": actor.user.pk if actor.user is not None and actor.user.pk else None,
        "actor_api_key_id": actor.api_key.pk if actor.api_key is not None else None,
        "actor_label": actor.label[:200],
        "source_ip": normalise_ip(actor.source_ip),
        "user_agent": actor.user_agent[:300],
        "created_at": now,
    }
    events = []
    for tenant_id, action, target_type, target_id, target_repr, changes in sorted(rows, key=lambda row: row[0]):
        key = chain_key(tenant_id)
        head = heads[key]
        head[1] += 1
        event = _EventRow(
            common,
            tenant_id=tenant_id,
            chain=key,
            seq=head[1],
            prev_hash=head[2],
            action=action,
            target_type=target_type[:40],
            target_id=target_id[:64],
            target_repr=target_repr[:300],
            changes=changes,
        )
        event["hash"] = head[2] = event_digest(head[2], audit_payload(event))
        events.append(event)
    insert_rows(AuditEvent, events)


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """Changed fields as {name: [before, after]}."""
    return {k: [before.get(k), after.get(k)] for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}
