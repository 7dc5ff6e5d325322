"""What the web app reads and writes beyond the LedgerStore port: a
customer's API keys listed, receipt share links, and usage per day.

A separate port so a store that does not serve the web app is not forced
to grow it: the web app checks `isinstance(store, WebAppStore)` and says
what it cannot show. Both ledger adapters (SQLite, Spanner) implement it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ledger.model import ApiKey


@dataclass(frozen=True, slots=True)
class ShareLink:
    """A revocable link to one receipt. Only the SHA-256 of its token is
    stored: the link is shown once, when it is made."""

    link_id: str
    token_hash: str
    customer_id: str
    receipt_id: str
    created_at: str
    revoked_at: str | None = None


@dataclass(frozen=True, slots=True)
class UsageDay:
    """What one entitlement charged on one UTC day."""

    day: str  # YYYY-MM-DD
    entitlement_id: str
    receipts: int
    amount_minor: int


@runtime_checkable
class WebAppStore(Protocol):
    def list_api_keys(self, customer_id: str) -> list[ApiKey]:
        """The customer's keys, newest first, revoked ones included."""
        ...

    def create_share_link(self, link: ShareLink) -> None: ...

    def resolve_share_link(self, token_hash: str) -> ShareLink | None: ...

    def list_share_links(self, customer_id: str) -> list[ShareLink]:
        """Newest first, revoked ones included."""
        ...

    def revoke_share_link(self, customer_id: str, link_id: str, revoked_at: str) -> None:
        """NotFound unless the customer has this link; revoking twice keeps the first time."""
        ...

    def usage_by_day(self, customer_id: str, since_day: str) -> list[UsageDay]:
        """Charges per day and entitlement from `since_day` (recorded_at, UTC), oldest first."""
        ...
