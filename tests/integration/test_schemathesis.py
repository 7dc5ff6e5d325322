"""Schemathesis fuzzes the running service from its own OpenAPI document:
whatever it sends, valid or not, the answer is never a 5xx and always one the
document describes (status, content type, body schema).

Seeded and bounded: the same cases every run (a failure reproduces), a few
hundred in all, well under a minute. The server is the integration fixture's
(real SQLite, real sockets on loopback); Schemathesis calls it from a worker
thread, so the server's event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, strategies
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway import openapi
from tests.integration.conftest import Customer, Service, now_rfc3339

SEED = 20261205
EXAMPLES_PER_OPERATION = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# The web app's Stripe routes answer 503 by design when Stripe is not
# configured, as in this fixture; tests/stripe covers them with a fake Stripe.
_NOT_FUZZED_TAGS = frozenset({"Stripe", "Web app"})


def _auth_headers(service: Service, customer: Customer, operation: Any) -> dict[str, str]:
    schemes = {name for requirement in operation.definition.raw.get("security", [])
               for name in requirement}
    if "apiKey" in schemes:
        return dict(customer.auth)
    if "adminToken" in schemes:
        return dict(service.admin)
    return {}


def _aim_at(customer: Customer) -> Callable[[Any], Any]:
    """Half of the event bodies name the real customer, entitlement and
    currency with a fresh timestamp, so fuzzing reaches the charge itself
    rather than stopping at `customer_not_found` every time."""

    def aim(pair: tuple[Any, bool]) -> Any:
        case, aimed = pair
        bodies = case.body.get("events") if isinstance(case.body, dict) else None
        if isinstance(case.body, dict) and bodies is None:
            bodies = [case.body]
        for body in bodies if aimed and isinstance(bodies, list) else []:
            if isinstance(body, dict):
                body.update(customer_id=customer.customer_id, currency=customer.currency,
                            entitlement_id=customer.entitlement_id, timestamp=now_rfc3339())
        return case

    return aim


def _run(
    service: Service,
    customer: Customer,
    operation: Any,
    mode: GenerationMode,
    answers: Counter[tuple[str, int]],
) -> None:
    """One operation's cases in one generation mode, each sent and checked."""
    operation_id = operation.definition.raw["operationId"]
    headers = _auth_headers(service, customer, operation)
    cases = strategies.tuples(
        operation.as_strategy(generation_mode=mode), strategies.booleans()
    ).map(_aim_at(customer))

    @hypothesis.seed(SEED)
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
        suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate],
    )
    @hypothesis.given(case=cases)
    def check(case: Any) -> None:
        response = case.call(base_url=service.url, headers=headers, timeout=10)
        answers[(operation_id, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    check()


def _fuzz(service: Service, customer: Customer) -> Counter[tuple[str, int]]:
    """Run every operation's cases; returns how many got which status, by operation."""
    schema = schemathesis.openapi.from_dict(openapi.document())
    answers: Counter[tuple[str, int]] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        raw = operation.definition.raw
        if set(raw.get("tags", ())) & _NOT_FUZZED_TAGS:
            continue
        _run(service, customer, operation, GenerationMode.POSITIVE, answers)
        if raw["parameters"] or "requestBody" in raw:  # else nothing to make invalid
            _run(service, customer, operation, GenerationMode.NEGATIVE, answers)
    return answers


@pytest.mark.timeout(120)
async def test_fuzzing_from_the_document_finds_no_5xx_and_no_undocumented_answer(
    service: Service,
) -> None:
    customer = await service.create_customer(quota="1000000.00")
    answers = await asyncio.get_running_loop().run_in_executor(None, _fuzz, service, customer)
    # The run did fuzz (a skipped operation set would pass silently), and
    # reached both the charge itself and the refusals.
    assert sum(answers.values()) >= 300, answers
    assert answers[("postEvent", 202)] > 0 and answers[("postEvent", 400)] > 0, answers
    # The service is still whole: a good charge goes through.
    status, body, _ = await service.post_event(customer, service.event(customer))
    assert status == 202, body
