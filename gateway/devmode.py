"""Development conveniences for `make serve`: a demo customer with an API key
and a default entitlement, and a banner that says how to use them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from gateway.compose import Runtime
from ledger import AlreadyExists, Customer, Entitlement
from ledger.api_keys import issue_api_key
from ledger.clock import utc_now_rfc3339

DEMO_CUSTOMER_ID = "cus_demo"
DEMO_ENTITLEMENT_ID = "default"
DEMO_QUOTA_MINOR = 100_000  # 1,000.00 USD, hard


@dataclass(frozen=True)
class Demo:
    customer_id: str
    entitlement_id: str
    api_key: str


def seed_demo(runtime: Runtime) -> Demo:
    store = runtime.adapters.store
    now = utc_now_rfc3339()
    with contextlib.suppress(AlreadyExists):
        store.create_customer(
            Customer(
                customer_id=DEMO_CUSTOMER_ID,
                email="demo@example.com",
                currency="USD",
                created_at=now,
            )
        )
    if DEMO_ENTITLEMENT_ID not in store.get_entitlements(DEMO_CUSTOMER_ID):
        store.put_entitlement(
            Entitlement(
                customer_id=DEMO_CUSTOMER_ID,
                entitlement_id=DEMO_ENTITLEMENT_ID,
                quota_minor=DEMO_QUOTA_MINOR,
                policy="hard",
                status="active",
                updated_at=now,
                plan="demo",
            )
        )
    _, secret = issue_api_key(store, DEMO_CUSTOMER_ID, now, live=False)
    return Demo(DEMO_CUSTOMER_ID, DEMO_ENTITLEMENT_ID, secret)


def print_banner(runtime: Runtime, url: str, demo: Demo | None) -> None:
    token_note = " (generated, kept in the data dir)" if runtime.admin_token_generated else ""
    lines = [
        f"Vexa Billing is serving on {url}",
        f"  data dir:    {runtime.settings.data_dir}",
        f"  admin token: {runtime.admin_token}{token_note}",
        f"  JWKS:        {url}/.well-known/jwks.json",
        "  API key for a customer:",
        f"    curl -s -X POST {url}/v1/customers/CUSTOMER_ID/api-keys "
        f"-H 'Authorization: Bearer {runtime.admin_token}'",
    ]
    if demo is not None:
        lines += [
            f"  demo customer {demo.customer_id}, entitlement {demo.entitlement_id} "
            "(quota 1000.00 USD, hard)",
            f"  demo API key: {demo.api_key}",
            "  post a billing event:",
            f"    curl -s -X POST {url}/v1/events -H 'Authorization: Bearer {demo.api_key}' "
            "-H 'Content-Type: application/json' -d '{\"idempotent_key\": \"demo-1\", "
            f"\"customer_id\": \"{demo.customer_id}\", \"entitlement_id\": "
            f"\"{demo.entitlement_id}\", \"amount\": \"0.25\", \"currency\": \"USD\", "
            "\"usage_description\": \"one API call\", \"timestamp\": \"'$(date -u "
            "+%Y-%m-%dT%H:%M:%SZ)'\"}'",
        ]
    lines.append("Press Ctrl+C to stop (drains in-flight requests first).")
    print("\n".join(lines), flush=True)
