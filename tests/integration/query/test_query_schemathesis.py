"""Schemathesis against the served OpenAPI document: no 5xx, every answer as documented."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from punchcard_devstack import Endpoints
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.query.support import Served, scratch_database, serve_in_thread

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def threaded(stack: Endpoints) -> Iterator[Served]:
    """coupon-query on its own thread (schemathesis calls it synchronously) and database."""
    with scratch_database(stack.database_url) as url, serve_in_thread(url) as running:
        yield running


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms_to_the_served_openapi(
    threaded: Served, mode: GenerationMode
) -> None:
    """Generated requests (valid and invalid) never get a 5xx or an undocumented answer."""
    schema = schemathesis.openapi.from_url(f"{threaded.base_url}/openapi.json")
    headers = threaded.headers(threaded.admin_key)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) >= 16  # the reservation calls included
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and "{" not in operation.path:
            continue  # nothing to make invalid: no parameters and no body

        @hypothesis_settings(
            max_examples=30,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def conforms(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(base_url=threaded.base_url, headers=headers, checks=CHECKS)

        conforms()
