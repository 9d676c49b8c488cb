"""KeyCore's in-process SDK: encrypt and decrypt inside the application, with keys leased from KeyCore.

No Django: it needs ``cryptography`` and ``urllib3`` (``pip install keycore[sdk]``, or the
``sdk/`` package metadata), and imports only :mod:`keycore.crypto`, :mod:`keycore.errors` and
:mod:`keycore.client`. One :class:`KeyCoreSDK` per process, shared by its threads::

    from keycore.sdk import KeyCoreSDK

    kc = KeyCoreSDK("https://keys.example.com", api_key, requesting_id="billing-service")
    doc = kc.encrypt("acme", {"iban": b"DE89 3704 0044 0532 0130 00"}, label="invoices")
    kc.decrypt("acme", doc.edek, doc.fields)["iban"]
    kc.encrypt_deterministic("acme", "email", b"ada@example.com")      # equal values, equal bytes
    kc.search_terms("acme", "email", b"ada@example.com")               # one per key version in use

How it works (``docs/sdk.md`` is the protocol):

* **Leases.** The first encrypt for a tenant asks KeyCore for a lease: a random lease id and the key
  HKDF derives from the tenant's current key version and that id — never the tenant key. Documents
  are encrypted here under fresh DEKs wrapped under the lease key (EDEK v2, the same format KeyCore's
  servers write), so plaintext never leaves the process. An EDEK naming a lease this process does
  not hold (another process's, or a KeyCore process's own) fetches that lease's key. Leases are
  dropped when they expire (at most 5 minutes, or the tenant's shorter bound), and replaced after
  2^24 wraps (``LeaseKey.max_wraps``), so no key wraps more DEKs than random nonces allow.
* **Revocation.** A thread polls KeyCore's revocation epoch once a second; when it moves, every lease
  older than the new epoch is dropped at once, so the next use asks KeyCore again — which refuses a
  revoked key. If KeyCore cannot be reached, leases still expire on time and then every call for that
  tenant raises :class:`~keycore.client.LeaseUnavailable` (fail closed).
* **Security events.** Every use is counted (tenant, operation, key version, label, requesting id,
  result) and reported by a thread once a second (``report_interval``); KeyCore records the counts
  as key-use events of the reporting API key, and moves the per-version document counts, exactly as
  for its own operations. A crash loses at most the counts of one reporting interval; a KeyCore that
  cannot be reached keeps them pending (up to ``max_pending`` distinct buckets) for the next report.
* **Errors** are the REST client's (:mod:`keycore.client`): ``KeyRevoked``, ``TenantNotFound``,
  ``TamperedData``, ``MalformedData``, ``LeaseUnavailable``, …

Rekeying an EDEK goes through KeyCore's ``crypto/rekey`` (EDEKs only, no plaintext), so the version
counts move on the server's own evidence; v1 EDEKs (written before leases existed) are decrypted
through the REST API, as the SDK has no key that opens them.
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import socket
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keycore import client as _client
from keycore import errors as _errors
from keycore.client import (
    PROBLEM_BASE,
    EncryptedDocument,
    KeyCoreAPIError,
    KeyCoreClient,
    LeaseUnavailable,
    TransportError,
    error_from_problem,
)
from keycore.crypto.envelope import (
    DeterministicKey,
    LeaseKey,
    _decrypt_fields,
    _unwrap_v2,
    decrypt_with_lease,
    encrypt_with_lease,
    rewrap_with_leases,
)
from keycore.crypto.formats import (
    EDEK_KIND,
    EDEK_V2,
    EDEK_V2_BYTES,
    EDEK_V2_PREFIX_BYTES,
    deterministic_key_version,
    pack_edek_v2_prefix,
    unpack_edek,
)

__all__ = ["EncryptedDocument", "KeyCoreSDK", "LeaseUnavailable", *_client.__all__]

log = logging.getLogger(__name__)

_monotonic = time.monotonic


def _b64d(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _translate(exc: _errors.KeyCoreError) -> KeyCoreAPIError:
    """The REST client's exception for an error raised by the local crypto (same code, same class)."""
    problem = {"type": PROBLEM_BASE + exc.code, "status": exc.http_status, "title": exc.title, "detail": exc.detail}
    return error_from_problem(problem)


@dataclass(slots=True)
class _Lease:
    key: LeaseKey
    tenant_uid: bytes
    expires: float  # monotonic
    epoch: int
    current_version: int | None
    deterministic: dict[int, DeterministicKey] = field(default_factory=dict)


class KeyCoreSDK:
    """Encrypt, decrypt, rekey and search for any tenant, in process. Thread-safe; one per process.

    ``process`` names this process in the tenant's audit trail (default: host name and pid).
    ``poll_interval`` is how often the revocation epoch is read (1 s), ``report_interval`` how often
    use counts are sent (1 s). ``lease_margin`` drops a lease that many seconds before KeyCore's
    expiry (covers the time the lease took to arrive).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        requesting_id: str = "sdk",
        process: str | None = None,
        poll_interval: float = 1.0,
        report_interval: float = 1.0,
        timeout: float = 5.0,
        retries: int = 2,
        lease_margin: float = 1.0,
        max_pending: int = 100_000,
        start_threads: bool = True,
    ) -> None:
        self.requesting_id = requesting_id
        self.process = process or f"{socket.gethostname()} pid {os.getpid()}"
        self.poll_interval = poll_interval
        self.report_interval = report_interval
        self.lease_margin = lease_margin
        self.max_pending = max_pending
        self._client = KeyCoreClient(
            base_url,
            api_key,
            timeout=timeout,
            retries=retries,
            requesting_id=requesting_id,
            user_agent="keycore-python-sdk/1",
        )
        # the epoch poll must not queue behind retries: one try, a short timeout
        self._poller = KeyCoreClient(
            base_url,
            api_key,
            timeout=min(timeout, max(poll_interval, 0.5)),
            retries=0,
            user_agent="keycore-python-sdk/1",
        )
        self._leases: dict[str, _Lease] = {}  # tenant → the lease new documents are encrypted under
        # (tenant, the EDEK's first 22 bytes: kind, format, version, lease id) → the lease, for decrypting
        self._known: dict[tuple[str, bytes], _Lease] = {}
        self._fetch_locks: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()
        self._uses: deque = deque()
        self._pending: Counter = Counter()
        self._report_lock = threading.Lock()
        self.epoch: int | None = None
        self.last_poll_ok: float | None = None
        self.reports_failed = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._start_threads = start_threads
        self._pid = os.getpid()
        if start_threads:
            self._start()
        _instances.add(self)

    # -- lifecycle -----------------------------------------------------------------------------

    def _start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._poll_loop, name="keycore-sdk-epoch", daemon=True),
            threading.Thread(target=self._report_loop, name="keycore-sdk-usage", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _after_fork(self) -> None:
        # a forked worker has no threads and must not reuse its parent's pooled connections
        self._pid = os.getpid()
        self._leases.clear()
        self._known.clear()
        self._uses.clear()
        self._pending.clear()
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._fetch_locks = {}
        self._client._pool.clear()
        self._poller._pool.clear()
        if self._start_threads:
            self._start()

    def close(self) -> None:
        """Stop the threads, report what is left and forget every key."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        try:
            self.report()
        except KeyCoreAPIError:
            log.warning("KeyCore SDK: the last use counts could not be reported", exc_info=True)
        self.drop_leases()
        self._client.close()
        self._poller.close()

    def __enter__(self) -> KeyCoreSDK:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KeyCoreSDK({self._client.base_url!r}, leases={len(self._leases)})"

    # -- leases --------------------------------------------------------------------------------

    def drop_leases(self, older_than_epoch: int | None = None) -> int:
        """Forget leases (all, or those checked against an epoch older than ``older_than_epoch``)."""
        with self._lock:
            if older_than_epoch is None:
                dropped = len(self._leases) + len(self._known)
                self._leases = {}
                self._known = {}
                return dropped
            keep = {t: lease for t, lease in self._leases.items() if lease.epoch >= older_than_epoch}
            known = {k: lease for k, lease in self._known.items() if lease.epoch >= older_than_epoch}
            dropped = len(self._leases) - len(keep) + len(self._known) - len(known)
            self._leases, self._known = keep, known
            return dropped

    def _lock_for(self, key: Any) -> threading.Lock:
        lock = self._fetch_locks.get(key)
        if lock is None:
            with self._lock:
                lock = self._fetch_locks.setdefault(key, threading.Lock())
        return lock

    def _make(self, answer: dict, started: float) -> _Lease:
        uid = bytes.fromhex(answer["tenant_uid"])
        lease = _Lease(
            LeaseKey(uid, answer["key_version"], _b64d(answer["lease_id"]), _b64d(answer["lease_key"])),
            uid,
            started + float(answer["ttl_seconds"]) - self.lease_margin,
            int(answer["epoch"]),
            answer.get("current_version"),
            {
                d["key_version"]: DeterministicKey(uid, d["key_version"], _b64d(d["key"]))
                for d in answer.get("deterministic", ())
            },
        )
        return lease

    def _unreachable(self, tenant: str, exc: KeyCoreAPIError) -> LeaseUnavailable:
        return LeaseUnavailable(
            f"No valid lease of tenant {tenant}'s key and KeyCore could not be reached to renew it ({exc.detail}); "
            "refusing rather than use a key whose revocation would go unheard.",
            status=503,
            type=PROBLEM_BASE + "lease-unavailable",
        )

    def _current(self, tenant: str) -> _Lease:
        lease = self._leases.get(tenant)
        if lease is not None and _monotonic() < lease.expires:
            return lease
        with self._lock_for(tenant):
            lease = self._leases.get(tenant)
            if lease is not None and _monotonic() < lease.expires:
                return lease
            started = _monotonic()
            try:
                answer = self._client.lease(tenant, process=self.process)
            except (TransportError, _client.ServiceUnavailable) as exc:
                self._leases.pop(tenant, None)
                raise self._unreachable(tenant, exc) from exc
            except KeyCoreAPIError:
                self._leases.pop(tenant, None)
                raise
            lease = self._make(answer, started)
            with self._lock:
                self._leases[tenant] = lease
                self._known[(tenant, lease.key._head)] = lease
            return lease

    def _renew(self, tenant: str, exhausted: _Lease) -> _Lease:
        """A new lease in place of one that has wrapped its maximum of data keys (kept for decrypting)."""
        with self._lock:
            if self._leases.get(tenant) is exhausted:
                del self._leases[tenant]
        return self._current(tenant)

    def _for_edek(self, tenant: str, version: int, lease_id: bytes) -> _Lease:
        key = (tenant, pack_edek_v2_prefix(version, lease_id))
        lease = self._known.get(key)
        if lease is not None and _monotonic() < lease.expires:
            return lease
        with self._lock_for(key):
            lease = self._known.get(key)
            if lease is not None and _monotonic() < lease.expires:
                return lease
            started = _monotonic()
            try:
                answer = self._client.lease_derive(tenant, version, lease_id, process=self.process)
            except (TransportError, _client.ServiceUnavailable) as exc:
                self._known.pop(key, None)
                raise self._unreachable(tenant, exc) from exc
            except KeyCoreAPIError:
                self._known.pop(key, None)
                raise
            lease = self._make(answer, started)
            with self._lock:
                self._known[key] = lease
            return lease

    # -- counting ----------------------------------------------------------------------------------

    def _count(self, tenant, operation, version, label, requesting_id, result="ok", count=1) -> None:
        self._uses.append((tenant, operation, version, label or "", requesting_id or self.requesting_id, result, count))

    def _failed(self, tenant, operation, version, label, requesting_id, exc: BaseException) -> None:
        code = getattr(exc, "code", "") or "error"
        self._count(tenant, operation, version, label, requesting_id, code)

    # -- documents -------------------------------------------------------------------------------

    def _refused(self, tenant, operation, label, requesting_id, exc: KeyCoreAPIError) -> None:
        """Count a use KeyCore refused a lease for (revoked, disabled, unreachable): the tenant sees the attempts."""
        if not isinstance(exc, _client.NotFound | _client.InvalidInput | _client.AuthenticationFailed):
            self._count(tenant, operation, None, label, requesting_id, exc.code or "error")

    def encrypt(
        self, tenant: str, fields: Mapping[str, bytes], *, label: str = "", requesting_id: str | None = None
    ) -> EncryptedDocument:
        """Encrypt a document (field name → bytes) under a fresh DEK; store the EDEK with the fields."""
        try:
            lease = self._current(tenant)
        except KeyCoreAPIError as exc:
            self._refused(tenant, "encrypt", label, requesting_id, exc)
            raise
        try:
            try:
                edek, out = encrypt_with_lease(lease.key, fields)
            except _errors.LeaseExhausted:
                lease = self._renew(tenant, lease)
                edek, out = encrypt_with_lease(lease.key, fields)
        except _errors.KeyCoreError as exc:
            self._failed(tenant, "encrypt", lease.key.version, label, requesting_id, exc)
            raise _translate(exc) from None
        self._uses.append((tenant, "encrypt", lease.key.version, label, requesting_id or self.requesting_id, "ok", 1))
        return EncryptedDocument(edek, out)

    def decrypt(
        self,
        tenant: str,
        edek: bytes,
        fields: Mapping[str, bytes],
        *,
        label: str = "",
        requesting_id: str | None = None,
    ) -> dict[str, bytes]:
        """Decrypt the given fields of a document (any lease's, KeyCore's own, or v1 through KeyCore)."""
        if type(edek) is bytes and len(edek) == EDEK_V2_BYTES and edek[0] == EDEK_KIND and edek[1] == EDEK_V2:
            lease = self._known.get((tenant, edek[:EDEK_V2_PREFIX_BYTES]))
            if lease is not None and _monotonic() < lease.expires:
                # the hot path: a lease held for exactly this EDEK's header, so the checks of decrypt_with_lease
                # (format, version, lease id) are already made; authentication does the rest
                try:
                    plain = _decrypt_fields(*_unwrap_v2(lease.key, edek), fields)
                except _errors.KeyCoreError as exc:
                    self._failed(tenant, "decrypt", lease.key.version, label, requesting_id, exc)
                    raise _translate(exc) from None
                self._uses.append(
                    (tenant, "decrypt", lease.key.version, label, requesting_id or self.requesting_id, "ok", 1)
                )
                return plain
            version = int.from_bytes(edek[2:6], "big")
            lease_id = edek[6:EDEK_V2_PREFIX_BYTES]
        else:
            try:
                parts = unpack_edek(edek)
            except _errors.KeyCoreError as exc:
                self._failed(tenant, "decrypt", None, label, requesting_id, exc)
                raise _translate(exc) from None
            # a v1 EDEK is wrapped under the tenant key itself: only KeyCore can open it (it counts the use)
            return (
                self._client.decrypt(
                    tenant, bytes(edek), fields, label=label or None, requesting_id=requesting_id or self.requesting_id
                )
                if parts.format_version != EDEK_V2
                else self.decrypt(tenant, bytes(edek), fields, label=label)
            )
        try:
            lease = self._for_edek(tenant, version, lease_id)
        except KeyCoreAPIError as exc:
            self._refused(tenant, "decrypt", label, requesting_id, exc)
            raise
        try:
            plain = decrypt_with_lease(lease.key, edek, fields)
        except _errors.KeyCoreError as exc:
            self._failed(tenant, "decrypt", version, label, requesting_id, exc)
            raise _translate(exc) from None
        self._uses.append((tenant, "decrypt", version, label, requesting_id or self.requesting_id, "ok", 1))
        return plain

    def encrypt_batch(
        self, documents: Iterable[tuple[str, Mapping[str, bytes]]], *, label: str = "", requesting_id: str | None = None
    ) -> list[EncryptedDocument | KeyCoreAPIError]:
        """Encrypt many documents (``(tenant, fields)``); each result or its error in place."""
        out: list[EncryptedDocument | KeyCoreAPIError] = []
        for tenant, fields in documents:
            try:
                out.append(self.encrypt(tenant, fields, label=label, requesting_id=requesting_id))
            except KeyCoreAPIError as exc:
                out.append(exc)
        return out

    def decrypt_batch(
        self,
        documents: Iterable[tuple[str, bytes, Mapping[str, bytes]]],
        *,
        label: str = "",
        requesting_id: str | None = None,
    ) -> list[dict[str, bytes] | KeyCoreAPIError]:
        """Decrypt many documents (``(tenant, edek, fields)``); each result or its error in place."""
        out: list[dict[str, bytes] | KeyCoreAPIError] = []
        for tenant, edek, fields in documents:
            try:
                out.append(self.decrypt(tenant, edek, fields, label=label, requesting_id=requesting_id))
            except KeyCoreAPIError as exc:
                out.append(exc)
        return out

    def rekey(
        self,
        tenant: str,
        edeks: Sequence[bytes],
        *,
        new_tenant: str | None = None,
        label: str | None = None,
        requesting_id: str | None = None,
    ) -> list[bytes | KeyCoreAPIError]:
        """Rewrap EDEKs to the tenant's current key (or ``new_tenant``'s) through KeyCore: only the EDEKs travel,
        never a field, and KeyCore moves the per-version counts on its own evidence."""
        return self._client.rekey(
            tenant, edeks, new_tenant=new_tenant, label=label, requesting_id=requesting_id or self.requesting_id
        )

    def rekey_locally(self, tenant: str, edek: bytes) -> bytes:
        """Rewrap one v2 EDEK from its lease to this process's current lease, without a call to KeyCore.

        Counted as a decrypt of the old version and an encrypt under the new one (a report cannot move
        documents between versions: use :meth:`rekey` when the version counts must drain).
        """
        parts = unpack_edek(edek)
        if parts.format_version != EDEK_V2:
            return self.rekey(tenant, [edek])[0]  # type: ignore[return-value]
        old = self._for_edek(tenant, parts.key_version, parts.lease_id)
        new = self._current(tenant)
        try:
            try:
                moved = rewrap_with_leases(edek, old.key, new.key)
            except _errors.LeaseExhausted:
                new = self._renew(tenant, new)
                moved = rewrap_with_leases(edek, old.key, new.key)
        except _errors.KeyCoreError as exc:
            self._failed(tenant, "decrypt", parts.key_version, "", None, exc)
            raise _translate(exc) from None
        self._count(tenant, "decrypt", parts.key_version, "", None)
        self._count(tenant, "encrypt", new.key.version, "", None)
        return moved

    # -- deterministic values -------------------------------------------------------------------

    def encrypt_deterministic(
        self, tenant: str, field_name: str, value: bytes, *, label: str = "", requesting_id: str | None = None
    ) -> bytes:
        """AES-SIV of ``value`` under the tenant's current key version and ``field_name``: equal values give
        equal bytes, so the application can find rows by equality. It reveals which values are equal."""
        lease = self._current(tenant)
        version = lease.key.version
        det = lease.deterministic.get(version)
        if det is None:
            raise _client.KeyUnavailable(f"The lease of tenant {tenant} carries no deterministic key.")
        try:
            blob = det.encrypt(field_name, value)
        except _errors.KeyCoreError as exc:
            self._failed(tenant, "det_encrypt", version, label, requesting_id, exc)
            raise _translate(exc) from None
        self._uses.append((tenant, "det_encrypt", version, label, requesting_id or self.requesting_id, "ok", 1))
        return blob

    def decrypt_deterministic(
        self, tenant: str, field_name: str, blob: bytes, *, label: str = "", requesting_id: str | None = None
    ) -> bytes:
        try:
            version = deterministic_key_version(blob)
        except _errors.KeyCoreError as exc:
            raise _translate(exc) from None
        det = self._current(tenant).deterministic.get(version)
        if det is None:  # a version no longer in use: KeyCore decides whether it can still be read
            return self._client.decrypt_deterministic(
                tenant, field_name, blob, requesting_id=requesting_id or self.requesting_id, label=label or None
            )
        try:
            value = det.decrypt(field_name, blob)
        except _errors.KeyCoreError as exc:
            self._failed(tenant, "det_decrypt", version, label, requesting_id, exc)
            raise _translate(exc) from None
        self._count(tenant, "det_decrypt", version, label, requesting_id)
        return value

    def search_terms(
        self, tenant: str, field_name: str, value: bytes, *, label: str = "", requesting_id: str | None = None
    ) -> list[bytes]:
        """The deterministic ciphertexts of ``value`` under every key version still in use, newest first:
        ``WHERE email_ct IN (...)`` finds rows written before and after a rotation."""
        lease = self._current(tenant)
        terms = [lease.deterministic[v].encrypt(field_name, value) for v in sorted(lease.deterministic, reverse=True)]
        self._count(tenant, "search", lease.key.version, label, requesting_id)
        return terms

    def rekey_deterministic(self, tenant: str, field_name: str, blob: bytes) -> bytes:
        """The same value under the tenant's current key version (for a rotation's backfill)."""
        value = self.decrypt_deterministic(tenant, field_name, blob)
        return self.encrypt_deterministic(tenant, field_name, value)

    # -- the threads ----------------------------------------------------------------------------------

    def poll(self) -> int:
        """Read the revocation epoch now; drop every lease checked against an older one. Returns the epoch."""
        epoch = self._poller.epoch()
        self.last_poll_ok = _monotonic()
        if epoch != self.epoch:
            self.epoch = epoch
            dropped = self.drop_leases(older_than_epoch=epoch)
            if dropped:
                log.info("KeyCore SDK: revocation epoch %s, %d lease(s) dropped", epoch, dropped)
        return epoch

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll()
            except KeyCoreAPIError as exc:
                # leases keep their own expiry: an unreachable KeyCore makes them end on time, not sooner
                log.debug("KeyCore SDK: epoch poll failed: %s", exc)
            except Exception:  # pragma: no cover - never let the thread die
                log.exception("KeyCore SDK: epoch poll failed")

    def pending_uses(self) -> int:
        return sum(item[6] for item in list(self._uses)) + sum(self._pending.values())

    def report(self) -> int:
        """Send the use counts gathered so far; returns how many uses were reported."""
        with self._report_lock:
            uses = self._uses
            taken = Counter()
            for _ in range(len(uses)):
                tenant, operation, version, label, rid, result, count = uses.popleft()
                taken[(tenant, operation, version, label, rid, result)] += count
            pending = self._pending
            pending.update(taken)
            if not pending:
                return 0
            items = list(pending.items())
            sent = 0
            for start in range(0, len(items), 1000):
                chunk = items[start : start + 1000]
                reports = [
                    {
                        "tenant": tenant,
                        "operation": operation,
                        "count": count,
                        "key_version": version,
                        "label": label[:100],
                        "requesting_id": rid[:200],
                        "result": result[:40],
                    }
                    for (tenant, operation, version, label, rid, result), count in chunk
                ]
                try:
                    skipped = self._client.report_usage(reports).get("skipped") or ()
                except (TransportError, _client.ServiceUnavailable, _client.RateLimited):
                    self.reports_failed += 1
                    if len(pending) > self.max_pending:
                        log.error("KeyCore SDK: %d use buckets unreported; dropping the oldest", len(pending))
                        for key, _ in items[: len(pending) - self.max_pending]:
                            pending.pop(key, None)
                    raise
                except KeyCoreAPIError:
                    # refused (a tenant removed meanwhile): these counts can never be recorded
                    self.reports_failed += 1
                    log.error("KeyCore SDK: KeyCore refused a use report; %d buckets dropped", len(chunk))
                else:
                    if skipped:
                        log.warning(
                            "KeyCore SDK: %d use report(s) of unknown or inactive tenants skipped", len(skipped)
                        )
                for key, count in chunk:
                    pending.pop(key, None)
                    sent += count
            return sent

    def _report_loop(self) -> None:
        while not self._stop.wait(self.report_interval):
            try:
                self.report()
            except KeyCoreAPIError as exc:
                log.warning("KeyCore SDK: use counts kept for the next report: %s", exc)
            except Exception:  # pragma: no cover
                log.exception("KeyCore SDK: reporting uses failed")


_instances: weakref.WeakSet[KeyCoreSDK] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sdk in list(_instances):
        sdk._after_fork()


def _at_exit() -> None:
    for sdk in list(_instances):
        if not sdk._stop.is_set():
            try:
                sdk.report()
            except Exception:
                log.warning("KeyCore SDK: the last use counts could not be reported at exit")


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
