"""Session-wide KMS servers for the provider tests: moto, PyKMIP, SoftHSM2.

A server that cannot start here skips its tests with the reason; with
``KEYCORE_REQUIRE_SERVICES=1`` (CI) it fails them instead, so a broken CI image
cannot pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from keycore.providers.base import WrapContext
from tests.conftest import require
from tests.providers.servers import (
    KmipServer,
    MotoServer,
    ServiceUnavailable,
    SoftHsmToken,
    init_softhsm_token,
    start_kmip_server,
    start_moto_server,
)


def make_context(tenant_uid: str | None = None, key_version: int = 1) -> WrapContext:
    return WrapContext(tenant_uid or uuid.uuid4().hex, "acme", "cfg-test", key_version)


@pytest.fixture
def context() -> WrapContext:
    return make_context()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    try:
        server = start_moto_server()
    except ServiceUnavailable as exc:
        require(False, f"moto server: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kmip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmipServer]:
    try:
        server = start_kmip_server(tmp_path_factory.mktemp("kmip"))
    except ServiceUnavailable as exc:
        require(False, f"PyKMIP server: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmToken]:
    directory = tmp_path_factory.mktemp("softhsm")
    try:
        token = init_softhsm_token(directory)
        # A second, empty token in the same store: "token present, key missing" cases.
        init_softhsm_token(directory, label="keycore-empty", pin=token.pin, so_pin=token.so_pin)
    except ServiceUnavailable as exc:
        require(False, f"SoftHSM2: {exc}")
    previous = os.environ.get("SOFTHSM2_CONF")
    # SoftHSM2 reads its configuration when this process first initialises the module.
    os.environ.update(token.env)
    yield token
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous
