"""Fixtures of the security-events tests: an actor with a source address, and key use written to the chain."""

from __future__ import annotations

import pytest


@pytest.fixture
def admin_actor(owner):
    from keycore.services.audit import Actor

    return Actor.for_user(owner, source_ip="203.0.113.7", user_agent="pytest-browser/1.0")


@pytest.fixture
def recorder():
    """The process's key-use recorder, empty before and after the test."""
    from keycore.services.keyuse import recorder

    recorder.reset()
    yield recorder
    recorder.reset()


def use_keys(tenant, *, encrypts: int = 3, decrypts: int = 2, label: str = "invoices", who: str = "billing-svc"):
    """Real crypto calls for ``tenant``, then a flush: the key-use rows land on its chain."""
    from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
    from keycore.services.keyuse import recorder

    meta = CallMeta(requesting_id=who, label=label, source_ip="198.51.100.4")
    stored = [crypto_encrypt(tenant=tenant.external_id, fields={"f": b"x"}, meta=meta) for _ in range(encrypts)]
    for item in stored[:decrypts]:
        crypto_decrypt(tenant=tenant.external_id, edek=item.edek, fields=item.fields, meta=meta)
    recorder.flush()
