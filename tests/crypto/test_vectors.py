"""Known-answer vectors: blobs written once (tests/crypto/make_vectors.py) must keep decrypting.

A second set of checks reads the same blobs with plain AES-GCM following
docs/formats.md, so the documentation and the code cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keycore import errors
from keycore.crypto import envelope, rootkey
from keycore.crypto.formats import decode_key_text
from keycore.providers.base import WrapContext
from keycore.providers.local import LocalProvider

VECTORS = Path(__file__).parent / "vectors"


def load(name: str) -> dict:
    return json.loads((VECTORS / f"{name}.json").read_text())


def cases(name: str) -> list[dict]:
    return load(name)["cases"]


def ids(name: str) -> list[str]:
    return [c["description"] for c in cases(name)]


def handle_for(case: dict) -> envelope.TenantKeyHandle:
    return envelope.TenantKeyHandle(
        bytes.fromhex(case["tenant_uid"]), case["key_version"], bytes.fromhex(case["tenant_key"])
    )


def test_every_format_version_has_vectors():
    assert {p.stem for p in VECTORS.glob("*.json")} >= {"edek_v1", "field_v1", "sealed_v1", "local_wrap_v1"}


# -- EDEK v1 and field v1 ---------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("edek_v1"), ids=ids("edek_v1"))
def test_edek_v1_vectors_parse_and_authenticate(case):
    edek = bytes.fromhex(case["edek"])
    header = envelope.parse_edek(edek)
    assert header == (case["format_version"], case["key_version"], bytes.fromhex(case["document_id"]))
    assert envelope.key_check_value(bytes.fromhex(case["tenant_key"])).hex() == case["kcv"]
    assert envelope.decrypt_document(handle_for(case), edek, {}) == {}


def test_edek_v1_vectors_are_one_dek_rewrapped():
    """The three EDEKs hold one document: rewrapping changes the key, never the document id."""
    assert len({c["document_id"] for c in cases("edek_v1")}) == 1


@pytest.mark.parametrize("case", cases("edek_v1"), ids=ids("edek_v1"))
def test_edek_v1_vectors_fail_under_another_tenant(case):
    other = dict(case, tenant_uid="ff" * 16)
    with pytest.raises(errors.AuthenticationFailed):
        envelope.decrypt_document(handle_for(other), bytes.fromhex(case["edek"]), {})


@pytest.mark.parametrize("case", cases("field_v1"), ids=ids("field_v1"))
def test_field_v1_vectors_decrypt_to_their_plaintexts(case):
    blobs = {name: bytes.fromhex(f["ciphertext"]) for name, f in case["fields"].items()}
    expected = {name: bytes.fromhex(f["plaintext"]) for name, f in case["fields"].items()}
    assert envelope.decrypt_document(handle_for(case), bytes.fromhex(case["edek"]), blobs) == expected


# -- sealed v1 --------------------------------------------------------------------------------


def keyring_from_vectors() -> rootkey.RootKeyring:
    data = load("sealed_v1")
    return rootkey.RootKeyring.from_text(data["current_root_key"], ",".join(data["previous_root_keys"]))


def test_root_key_ids_are_stable():
    for text, key_id in load("sealed_v1")["key_ids"].items():
        assert rootkey.key_id(rootkey.parse_root_key(text)) == key_id


@pytest.mark.parametrize("case", cases("sealed_v1"), ids=ids("sealed_v1"))
def test_sealed_v1_vectors_unseal(case):
    keyring = keyring_from_vectors()
    blob = bytes.fromhex(case["blob"])
    assert keyring.unseal(blob, purpose=case["purpose"], context=case["context"]) == bytes.fromhex(case["plaintext"])
    assert keyring.needs_reseal(blob) == (case["sealed_with_key_id"] != keyring.current_id)
    with pytest.raises(errors.AuthenticationFailed):
        keyring.unseal(blob, purpose=case["purpose"], context=case["context"] + "x")


# -- local wrap v1 ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("local_wrap_v1"), ids=ids("local_wrap_v1"))
def test_local_wrap_v1_vectors_unwrap(case):
    data = load("local_wrap_v1")
    provider = LocalProvider({}, {"kek": data["kek"]})
    assert provider.describe() == f"KeyCore local key {data['kek_id']}"
    context = WrapContext(**case["context"])
    assert provider.unwrap(bytes.fromhex(case["wrapped"]), context).hex() == case["key"]


# -- the documented layouts, read with plain AES-GCM ------------------------------------------


@pytest.mark.parametrize("case", cases("field_v1"), ids=ids("field_v1"))
def test_documented_edek_and_field_layouts(case):
    edek = bytes.fromhex(case["edek"])
    tenant_uid = bytes.fromhex(case["tenant_uid"])
    assert len(edek) == 82
    assert edek[0] == 0xED
    assert edek[1] == 0x01
    assert int.from_bytes(edek[2:6], "big") == case["key_version"]
    document_id, nonce, wrapped = edek[6:22], edek[22:34], edek[34:82]
    dek = AESGCM(bytes.fromhex(case["tenant_key"])).decrypt(nonce, wrapped, edek[:22] + tenant_uid)
    assert len(dek) == 32
    for name, f in case["fields"].items():
        blob = bytes.fromhex(f["ciphertext"])
        assert blob[:2] == b"\xfd\x01"
        aad = b"\xfd\x01" + document_id + name.encode()
        assert AESGCM(dek).decrypt(blob[2:14], blob[14:], aad).hex() == f["plaintext"]


@pytest.mark.parametrize("case", cases("sealed_v1"), ids=ids("sealed_v1"))
def test_documented_sealed_layout(case):
    data = load("sealed_v1")
    keys = {key_id: decode_key_text(text) for text, key_id in data["key_ids"].items()}
    blob = bytes.fromhex(case["blob"])
    assert blob[:2] == b"\x5e\x01"
    assert blob[2:10].hex() == case["sealed_with_key_id"]
    purpose = case["purpose"].encode()
    aad = blob[:10] + bytes((len(purpose),)) + purpose + case["context"].encode()
    plaintext = AESGCM(keys[case["sealed_with_key_id"]]).decrypt(blob[10:22], blob[22:], aad)
    assert plaintext.hex() == case["plaintext"]


@pytest.mark.parametrize("case", cases("local_wrap_v1"), ids=ids("local_wrap_v1"))
def test_documented_local_wrap_layout(case):
    data = load("local_wrap_v1")
    blob = bytes.fromhex(case["wrapped"])
    assert blob[:2] == b"\x1e\x01"
    assert blob[2:10].hex() == data["kek_id"]
    ctx = case["context"]
    context_aad = b"keycore/tenant-key/v1\x00" + ctx["tenant_uid"].encode() + b"\x00" + str(ctx["key_version"]).encode()
    key = AESGCM(decode_key_text(data["kek"])).decrypt(blob[10:22], blob[22:], blob[:10] + context_aad)
    assert key.hex() == case["key"]
