"""Schemathesis against the generated schema: no 5xx and no response that breaks the schema, on any endpoint.

The WSGI application is called in this process with a key holding every scope.
Each operation gets a bounded number of generated requests, valid ones
(positive) and invalid ones (negative); half of them name the existing tenant,
so that the tenant-scoped endpoints are exercised past the tenant lookup. Every
body received is searched for secrets at the end, as in the other API tests.
Derandomized, so every run (and every xdist worker) sends the same requests.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.api.conftest import known_secrets

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES_PER_OPERATION = 8


def test_no_operation_answers_5xx_or_breaks_the_schema(tenant, make_key, settings):
    import schemathesis
    from django.core.wsgi import get_wsgi_application
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

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

    def aim(case, existing: bool):
        if existing and "external_id" in (case.path_parameters or {}):
            case.path_parameters["external_id"] = tenant.external_id
        return case

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

    assert bodies
    secrets = known_secrets()
    for body in bodies:
        for secret in secrets:
            assert secret not in body, f"a secret leaked in a response: {body[:300]!r}"
