"""The web app on a Spanner ledger (Firestore read model), as on Google
Cloud: the dashboard, its key list and usage, and share links, which
answered 501 there before the Spanner store kept them. The flows are the
SQLite ones of test_web_http, run again on this store."""

from __future__ import annotations

from typing import Any

import pytest

from tests.emulators import (  # noqa: F401  (fixtures, found by name)
    firestore_emulator,
    spanner_emulator,
)
from tests.gcp._data import PROJECT, unique
from tests.integration.conftest import Service
from tests.web.test_web_http import (
    test_a_share_link_opens_signed_out_until_it_is_revoked as share_link_flow,
)
from tests.web.test_web_http import (
    test_no_page_or_export_shows_another_customers_data as isolation_flow,
)

pytestmark = pytest.mark.emulator


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    from ledger.spanner import SpannerLedger

    request.getfixturevalue("spanner_emulator")
    request.getfixturevalue("firestore_emulator")
    store_url = f"spanner://projects/{PROJECT}/instances/web/databases/{unique('db')}"
    SpannerLedger.open(store_url, create=True, migrate=True).close()
    return {
        "store_url": store_url,
        "read_model_url": f"firestore://projects/{PROJECT}?collection={unique('receipts')}",
    }


async def test_share_links_work_on_spanner(web_service: Service) -> None:
    await share_link_flow(web_service)


async def test_dashboard_keys_and_exports_stay_the_customers_own_on_spanner(
    web_service: Service,
) -> None:
    await isolation_flow(web_service)
