"""The OpenAPI document and the service agree: the same routes (method and
path template) both ways, and every error code the code can raise listed."""

from __future__ import annotations

import re
from pathlib import Path

from gateway import app as app_module
from gateway import docs_page, openapi, rendering
from gateway.error_codes import ERROR_CODES
from tests.integration.conftest import Service

ROOT = Path(__file__).resolve().parents[2]
# Where error codes are raised: the gateway, and the codes it passes through
# from money parsing and from the account actors' refusals.
_RAISING_SOURCES = (*sorted((ROOT / "gateway").rglob("*.py")), ROOT / "ledger" / "money.py")
_RAISE_RE = re.compile(
    r"\b(?:ApiError|RouteError|bad_request|MoneyError|_reject)\(\s*(?:\d+,\s*)?\"([a-z_]+)\""
)


def _served_routes(service: Service) -> set[tuple[str, str]]:
    """(METHOD, template) of the app the composition root builds, Stripe
    routes included. aiohttp adds HEAD to every GET: the document's GET
    stands for both."""
    app = service.runtime.make_app()
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


def _documented_routes() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in openapi.document()["paths"].items()
        for method in item
    }


async def test_every_served_route_is_documented_and_every_documented_one_served(
    service: Service,
) -> None:
    served, documented = _served_routes(service), _documented_routes()
    assert served - documented == set(), "served but not in the OpenAPI document"
    assert documented - served == set(), "in the OpenAPI document but not served"


def _raised_codes() -> set[str]:
    codes = set()
    for source in _RAISING_SOURCES:
        codes.update(_RAISE_RE.findall(source.read_text()))
    codes.update(rendering._STATUS_BY_CODE)  # the account actors' refusal codes
    codes.update(code for code, _ in app_module._HTTP_CODES.values())
    codes.add("http_error")  # any other HTTP exception aiohttp raises
    return codes


def test_every_error_code_the_code_raises_is_documented() -> None:
    raised = _raised_codes()
    assert len(raised) > 40  # the scan finds the raises (a broken regex finds none)
    assert raised - set(ERROR_CODES) == set(), "raised but not documented"
    assert set(ERROR_CODES) - raised == set(), "documented but never raised"
    enum = openapi.document()["components"]["schemas"]["ErrorDetail"]["properties"]["code"]
    assert set(enum["enum"]) == set(ERROR_CODES)


def test_every_operation_lists_only_known_codes_with_their_statuses() -> None:
    for path, item in openapi.document()["paths"].items():
        for method, operation in item.items():
            for code in operation["x-error-codes"]:
                for status in ERROR_CODES[code].statuses:
                    assert str(status) in operation["responses"], (method, path, code)


def test_the_docs_page_has_an_anchor_for_everything_and_no_dangling_link() -> None:
    page = docs_page.render()
    anchors = set(re.findall(r'id="([^"]+)"', page))
    document = openapi.document()
    expected = {f"error-{code}" for code in ERROR_CODES}
    expected |= {f"schema-{name}" for name in document["components"]["schemas"]}
    expected |= {f"op-{op['operationId']}" for item in document["paths"].values()
                 for op in item.values()}
    assert expected - anchors == set()
    assert set(re.findall(r'href="#([^"]+)"', page)) - anchors == set()
