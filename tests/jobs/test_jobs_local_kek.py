"""The local provider's KEK rotation: a new current KEK, previous ones kept for unwrap, then dropped."""

from __future__ import annotations

import uuid

import pytest

from keycore import errors
from keycore.crypto.envelope import new_tenant_key
from keycore.providers.base import WrapContext
from keycore.providers.local import LocalProvider


def context(version: int = 1) -> WrapContext:
    return WrapContext(uuid.uuid4().hex, "acme", "cfg-1", version)


def test_after_a_rotation_old_wraps_still_unwrap_and_new_ones_use_the_new_kek():
    secrets = LocalProvider.generate_secrets()
    old = LocalProvider({}, secrets)
    key, ctx = new_tenant_key(), context()
    wrapped = old.wrap(key, ctx)
    rotated = LocalProvider.rotate_kek(secrets)
    assert rotated["previous"] == secrets["kek"] and rotated["kek"] != secrets["kek"]
    new = LocalProvider({}, rotated)
    assert new.current_key_id != old.current_key_id
    assert new.previous_key_ids == [old.current_key_id]
    assert new.needs_rewrap(wrapped) and new.unwrap(wrapped, ctx) == key
    again = new.wrap(key, ctx)
    assert not new.needs_rewrap(again)
    assert LocalProvider.wrap_key_id(again) == new.current_key_id


def test_dropping_previous_keks_keeps_only_those_still_needed():
    first = LocalProvider.generate_secrets()
    second = LocalProvider.rotate_kek(first)
    third = LocalProvider.rotate_kek(second)
    assert third["previous"].split(",") == [second["kek"], first["kek"]]
    needed = LocalProvider({}, first).current_key_id
    kept = LocalProvider.drop_previous(third, {needed})
    assert kept == {"kek": third["kek"], "previous": first["kek"]}
    assert LocalProvider.drop_previous(third) == {"kek": third["kek"]}
    wrapped = LocalProvider({}, second).wrap(b"k" * 32, context())
    with pytest.raises(errors.KmsKeyNotFound):
        LocalProvider({}, kept).unwrap(wrapped, context())


def test_a_configuration_without_a_usable_kek_cannot_be_rotated():
    with pytest.raises(errors.KmsMisconfigured):
        LocalProvider.rotate_kek({"kek": "garbage"})


def test_rotations_that_never_finish_are_refused_before_the_secrets_grow_without_bound():
    secrets = LocalProvider.generate_secrets()
    for _ in range(16):
        secrets = LocalProvider.rotate_kek(secrets)
    with pytest.raises(errors.Conflict, match="previous KEKs"):
        LocalProvider.rotate_kek(secrets)


def test_clean_keeps_previous_keks_and_checks_them():
    rotated = LocalProvider.rotate_kek(LocalProvider.generate_secrets())
    assert LocalProvider.clean({}, rotated) == ({}, rotated)
    with pytest.raises(errors.InvalidInput):
        LocalProvider.clean({}, {**rotated, "previous": "not a key"})
