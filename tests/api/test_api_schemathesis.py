"""Schemathesis against the generated schema: no 5xx and no response that breaks the schema, on any endpoint.

The WSGI application is called in this process with a key holding every scope.
Each operation gets a bounded number of generated requests, valid ones
(positive) and invalid ones (negative); half of them name the existing tenant
(or vendor key), so that the scoped endpoints are exercised past the lookup. Every
body received is searched for secrets at the end, as in the other API tests.
Derandomized, so every run (and every xdist worker) sends the same requests.

A third pass takes valid requests and poisons one text in them — a body member, a query parameter or
a path parameter — with what no database or JSON renderer can hold (a NUL, a lone surrogate) or a
URL that does not parse: each must be answered with a 4xx problem, never a 5xx (issue 19, item 10:
this is how those were found by hand).
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.api.conftest import known_secrets

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES_PER_OPERATION = 12
POISONED_PER_OPERATION = 12
POISON = ("a\x00b", "\ud800", "x\udfff", "\x00", "http://[::1")


def _texts(value, path=()):
    """Paths to the string leaves of a JSON value."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _texts(item, (*path, i))


def _replace(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    out = list(value)
    out[head] = _replace(out[head], rest, new)
    return out


def poison(case, data):
    """``case`` with one of its texts (body, query or path) replaced by a poisoned one."""
    targets = [("body", p) for p in _texts(case.body)] if isinstance(case.body, dict | list) else []
    targets += [("query", (k,)) for k in case.query or {}]
    targets += [("path_parameters", (k,)) for k in case.path_parameters or {}]
    if not targets:
        return case
    where, path = data.draw(st.sampled_from(targets))
    bad = data.draw(st.sampled_from(POISON))
    if where == "body":
        case.body = _replace(case.body, path, bad)
        return case
    if where == "query":  # sent as UTF-8: a NUL reaches the view, a lone surrogate cannot be sent
        case.query = {**case.query, path[0]: bad.encode("utf-8", "replace").decode()}
    else:  # path parameters go as given: percent-encode the bytes, a surrogate's as the bytes that are not UTF-8
        raw = quote(bad.encode("utf-8", "surrogatepass"), safe="")
        case.path_parameters = {**case.path_parameters, path[0]: raw}
    return case


def test_no_operation_answers_5xx_or_breaks_the_schema(tenant, make_key, settings):
    import schemathesis
    from django.core.wsgi import get_wsgi_application
    from django.test import Client
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from keycore.services import vendor_keys
    from keycore.services.audit import Actor

    settings.KEYCORE_KMS_TIMEOUT = 0.5  # a generated AWS configuration must not wait on the real AWS
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())
    headers = {"Authorization": f"Bearer {make_key()}"}
    bodies: list[bytes] = []

    def keep_body(ctx, response, case):  # the secret scan below reads every body Schemathesis received
        bodies.append(response.content)
        return True

    checks = [
        keep_body,
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
    ]

    # a vendor key that exists, so that half of the /vendor-keys/{uid}/ requests get past its lookup
    vendor_key = vendor_keys.vendor_key_create(
        name="Schemathesis key", provider="local", settings_={}, secrets={}, actor=Actor.system("tests")
    )

    def aim(case, existing: bool):
        if existing and "external_id" in (case.path_parameters or {}):
            case.path_parameters["external_id"] = tenant.external_id
        if existing and "uid" in (case.path_parameters or {}) and case.path.startswith("/api/v1/vendor-keys/"):
            case.path_parameters["uid"] = str(vendor_key.uid)
        return case

    poison_client = Client(raise_request_exception=False)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            cases = st.tuples(operation.as_strategy(generation_mode=mode), st.booleans()).map(lambda t: aim(*t))

            @hypothesis_settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=cases)
            def run(case):
                case.call_and_validate(headers=headers, checks=checks)

            run()

        poisoned = st.tuples(
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE), st.booleans(), st.data()
        )

        @hypothesis_settings(
            max_examples=POISONED_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=poisoned)
        def run_poisoned(case):
            case, existing, data = case
            case = poison(aim(case, existing), data)
            # sent by Django's client: schemathesis's own checks of a body cannot encode a lone surrogate
            body = json.dumps(case.body) if isinstance(case.body, dict | list | str | int | float) else ""
            response = poison_client.generic(
                case.method.upper(),
                case.formatted_path + ("?" + urlencode(case.query, doseq=True) if case.query else ""),
                body,
                content_type="application/json",
                HTTP_AUTHORIZATION=headers["Authorization"],
            )
            bodies.append(response.content)
            where = f"{case.method.upper()} {case.formatted_path} {case.query} {body[:300]}"
            assert response.status_code < 500, (where, response.status_code, response.content[:300])
            if response.status_code >= 400:
                assert response["Content-Type"] == "application/problem+json", (where, response["Content-Type"])

        run_poisoned()

    assert bodies
    secrets = known_secrets()
    for body in bodies:
        for secret in secrets:
            assert secret not in body, f"a secret leaked in a response: {body[:300]!r}"
