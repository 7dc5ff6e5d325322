"""The web app's tables on Cloud Spanner (see ledger.web_store): share links,
and reads of API keys and daily usage, with the same answers as SQLite's."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final

from google.api_core import exceptions as gexc

from ledger import limits
from ledger._spanner_base import (
    API_KEY_COLS,
    INT,
    STR,
    SpannerBase,
    api_key_from_row,
    one,
)
from ledger._spanner_codec import read_key
from ledger.errors import AlreadyExists, NotFound
from ledger.limits import api_keys_listed_max, share_links_listed_max
from ledger.model import ApiKey
from ledger.web_store import ShareLink, UsageDay

__all__ = ["SpannerWeb"]

_LINK_COLS: Final = tuple(field.name for field in dataclasses.fields(ShareLink))
_LINK_SELECT: Final = f"SELECT {', '.join(_LINK_COLS)} FROM ShareLinks"


def _link(row: Sequence[Any]) -> ShareLink:
    return ShareLink(*row)


class SpannerWeb(SpannerBase):
    def list_api_keys(self, customer_id: str) -> list[ApiKey]:
        rows = self._query(
            f"SELECT {', '.join(API_KEY_COLS)} FROM ApiKeys@{{FORCE_INDEX=ApiKeysByCustomer}} "
            "WHERE customer_id = @c ORDER BY created_at DESC, key_id LIMIT @n",
            {"c": customer_id, "n": api_keys_listed_max},
            {"c": STR, "n": INT},
        )
        return [api_key_from_row(row) for row in rows]

    def create_share_link(self, link: ShareLink) -> None:
        def work(txn: Any) -> None:
            # Each read is drained before the next: the first one begins the
            # transaction, and the client holds the second until it has.
            by_id = read_key(txn, "ShareLinks", ("link_id",), link.link_id)
            by_token = read_key(
                txn, "ShareLinks", ("token_hash",), link.token_hash, index="ShareLinksByToken"
            )
            if by_id or by_token:
                raise AlreadyExists(f"share link {link.link_id} already exists")
            txn.insert("ShareLinks", _LINK_COLS, [tuple(getattr(link, c) for c in _LINK_COLS)])

        try:
            self._transact(work)
        except gexc.AlreadyExists as error:  # inserted by another writer meanwhile
            raise AlreadyExists(f"share link {link.link_id} already exists") from error

    def resolve_share_link(self, token_hash: str) -> ShareLink | None:
        row = one(
            self._query(
                f"{_LINK_SELECT}@{{FORCE_INDEX=ShareLinksByToken}} WHERE token_hash = @h",
                {"h": token_hash},
                {"h": STR},
            )
        )
        return None if row is None else _link(row)

    def list_share_links(self, customer_id: str) -> list[ShareLink]:
        rows = self._query(
            f"{_LINK_SELECT}@{{FORCE_INDEX=ShareLinksByCustomer}} WHERE customer_id = @c "
            "ORDER BY created_at DESC, link_id LIMIT @n",
            {"c": customer_id, "n": share_links_listed_max},
            {"c": STR, "n": INT},
        )
        return [_link(row) for row in rows]

    def revoke_share_link(self, customer_id: str, link_id: str, revoked_at: str) -> None:
        if self._revoke_once("ShareLinks", "link_id", link_id, customer_id, revoked_at) == 0:
            raise NotFound(f"share link {link_id} of customer {customer_id} not found")

    def usage_by_day(self, customer_id: str, since_day: str) -> list[UsageDay]:
        # recorded_at is the fixed RFC 3339 format: its first 10 chars are the
        # UTC day. The customer is the key's first part: a range scan.
        rows = self._query(
            "SELECT SUBSTR(recorded_at, 1, 10) AS day, entitlement_id, COUNT(*), "
            "SUM(amount_minor) FROM Receipts WHERE customer_id = @c AND recorded_at >= @s "
            "GROUP BY day, entitlement_id ORDER BY day, entitlement_id LIMIT @n",
            {"c": customer_id, "s": since_day, "n": limits.spanner_usage_rows_max},
            {"c": STR, "s": STR, "n": INT},
        )
        return [UsageDay(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]
