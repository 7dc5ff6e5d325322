"""What an SRE reads: one access line per request and an audit line per
operator action (from a real `billing serve`), and /metrics with a request
duration histogram by route template and no `_created` series."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration._proc import client_session, remote_service, running_server
from tests.integration.conftest import Service

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_access_and_audit_lines_in_cloud_loggings_shape(
    tmp_path: Path, signing_key_file: Path
) -> None:
    env = {"BILLING_TRACE_PROJECT": "vexa-prod", "BILLING_ACCESS_LOG_PER_S_MAX": "1000"}
    with running_server(tmp_path, signing_key_file, env=env) as server:
        async with client_session(server.url) as session:
            service = remote_service(server.url, session)
            customer = await service.create_customer()
            headers = {**customer.auth, "X-Cloud-Trace-Context": f"{TRACE}/7;o=1"}
            async with session.post(
                "/v1/events", json=service.event(customer), headers=headers
            ) as response:
                assert response.status == 202
                request_id = response.headers["X-Request-Id"]
            async with session.get("/v1/receipts/rcpt_nothing", headers=customer.auth) as gone:
                assert gone.status == 404
    records = server.log_records()
    assert all({"message", "severity", "time"} <= set(r) for r in records)
    access = [r for r in records if r["message"] == "http.access"]
    (charge,) = [r for r in access if r.get("request_id") == request_id]
    assert (charge["method"], charge["route"], charge["status"]) == ("POST", "/v1/events", 202)
    assert charge["latency_ms"] > 0 and charge["severity"] == "INFO"
    assert charge["logging.googleapis.com/trace"] == f"projects/vexa-prod/traces/{TRACE}"
    assert any(r["route"] == "/v1/receipts/{receipt_id}" and r["status"] == 404 for r in access)
    audits = {r["action"]: r for r in records if r["message"] == "audit"}
    assert audits["customer.create"]["target"]["customer_id"] == customer.customer_id
    assert audits["api_key.create"]["target"]["key_id"] == customer.key_id
    assert audits["entitlement.put"]["target"]["entitlement_id"] == customer.entitlement_id
    assert audits["customer.create"]["actor"]["credential"] == "admin_token"
    assert customer.api_key not in server.stderr()


async def test_audit_covers_revocation_reversal_and_a_sampled_access_log(
    tmp_path: Path, signing_key_file: Path
) -> None:
    env = {"BILLING_ACCESS_LOG_PER_S_MAX": "0"}  # 5xx only
    with running_server(tmp_path, signing_key_file, env=env) as server:
        async with client_session(server.url) as session:
            service = remote_service(server.url, session)
            customer = await service.create_customer()
            _, receipt, _ = await service.post_event(customer, service.event(customer))
            async with session.post(
                f"/v1/receipts/{receipt['receipt_id']}/reversals", json={"reason": "twice"},
                headers={**service.admin, "Idempotency-Key": "rev-1"},
            ) as response:
                assert response.status == 202, await response.text()
            async with session.delete(
                f"/v1/customers/{customer.customer_id}/api-keys/{customer.key_id}",
                headers=service.admin,
            ) as response:
                assert response.status == 200
            async with session.get("/metrics") as response:
                dropped = [line for line in (await response.text()).splitlines()
                           if line.startswith("billing_access_log_dropped_total ")]
    records = server.log_records()
    assert not [r for r in records if r["message"] == "http.access"]
    assert float(dropped[0].split()[1]) >= 5
    audits = {r["action"]: r["target"] for r in records if r["message"] == "audit"}
    assert audits["api_key.revoke"] == {"customer_id": customer.customer_id,
                                        "key_id": customer.key_id}
    reversal = audits["receipt.reverse"]
    assert (reversal["receipt_id"], reversal["outcome"]) == (receipt["receipt_id"], "committed")
    assert reversal["amount_minor"] == -25 and reversal["reason"] == "twice"


async def test_metrics_have_a_duration_histogram_by_route_and_no_created_series(
    service: Service,
) -> None:
    customer = await service.create_customer()
    await service.post_event(customer, service.event(customer))
    async with service.session.get("/metrics") as response:
        text = await response.text()
    assert "_created" not in text
    bucket = ('billing_http_request_duration_seconds_bucket{le="+Inf",method="POST",'
              'route="/v1/events",status="202"} 1.0')
    assert bucket in text
    assert 'route="/v1/customers/{customer_id}/api-keys"' in text  # a template, not an id
    assert customer.customer_id not in text


async def _metrics_status(service: Service, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with service.session.get("/metrics", headers=headers) as response:
        return response.status, await response.text()


@pytest.mark.parametrize("settings_overrides", [{"metrics_token": "mtk_scraper"}])
async def test_metrics_need_the_scrapers_token_when_one_is_set(service: Service) -> None:
    assert (await _metrics_status(service, None))[0] == 401
    assert (await _metrics_status(service, service.runtime.services.settings.admin_token))[0] == 401
    status, text = await _metrics_status(service, "mtk_scraper")
    assert status == 200 and "billing_ready" in text


@pytest.mark.parametrize("settings_overrides", [{
    "dev": False, "host": "0.0.0.0", "public_url": "https://billing.example.com",
}])
async def test_metrics_are_closed_on_a_public_listener_without_a_token(service: Service) -> None:
    status, text = await _metrics_status(service, None)
    assert status == 401 and "metrics_token_not_configured" in text
    assert "billing_ready" not in text
