"""Schemathesis against the API's own OpenAPI schema, over HTTP to a live daphne: generated
requests to every operation, with a workspace's token, must never get a 5xx nor a response that
breaks the schema. Bounded: a few examples per operation, so the suite stays quick; `make fuzz`
sets FUZZ_API_EXAMPLES for a long random search (docs/security.md, "Fuzzing"). (The operations
are walked by hand: schemathesis' pytest plugin does not run on this pytest.)"""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from apps.workspaces import services
from tests.factories import make_workspace

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]
FUZZ_API_EXAMPLES = int(os.environ.get("FUZZ_API_EXAMPLES") or 0)
EXAMPLES_PER_OPERATION = FUZZ_API_EXAMPLES or 10


def test_no_operation_answers_5xx_or_breaks_its_schema(live_server_process):
    _, token = services.api_token_create(workspace=make_workspace(slug="fuzz"), name="fuzz")
    schema = schemathesis.openapi.from_url(f"{live_server_process.url}/api/v1/schema/")
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=not FUZZ_API_EXAMPLES,
            database=None,
        )
        def check(case):
            if _daphne_refuses(case):
                return
            case.call_and_validate(
                base_url=live_server_process.url,
                headers={"Authorization": f"Bearer {token}"},
                # A well-formed id that names nothing is a 400/404 by design, not a failure.
                excluded_checks=[positive_data_acceptance],
            )

        try:
            check()
        except (
            Exception,
            BaseExceptionGroup,
        ) as error:  # every operation is tried; all failures are reported together
            failures.append(f"{operation.label}: {str(error)[:1500]}")
    assert not failures, "\n\n".join(failures)


def _daphne_refuses(case) -> bool:
    """Twisted, under daphne, answers a multipart body with no parts with a bare 400 before
    Parley sees the request; nothing of ours to check there."""
    return "multipart" in str(case.media_type or "") and not case.body


def test_the_reference_is_public_and_its_assets_come_from_parley(client):
    schema = client.get("/api/v1/schema/")
    docs = client.get("/api/v1/docs/")
    assert schema.status_code == 200 and b"openapi: 3" in schema.content
    assert docs.status_code == 200
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/" in docs.content
    assert b"cdn" not in docs.content.lower()
