"""The web app's tables on SQLite (see ledger.web_store): share links, and
reads of API keys and daily usage."""

from __future__ import annotations

from typing import Final

from ledger._sqlite_base import SqliteBase, transaction
from ledger._sqlite_rows import API_KEY_COLUMNS, Row, api_key_from_row
from ledger.errors import AlreadyExists
from ledger.limits import api_keys_listed_max, share_links_listed_max, usage_days_max
from ledger.model import ApiKey
from ledger.web_store import ShareLink, UsageDay

_LINK_COLUMNS: Final = "link_id, token_hash, customer_id, receipt_id, created_at, revoked_at"


def _link(row: Row) -> ShareLink:
    return ShareLink(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]),
        None if row[5] is None else str(row[5]),
    )


class SqliteWeb(SqliteBase):
    def list_api_keys(self, customer_id: str) -> list[ApiKey]:
        rows = self._all(
            f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE customer_id = ? "
            "ORDER BY created_at DESC, key_id LIMIT ?",
            (customer_id, api_keys_listed_max),
        )
        return [api_key_from_row(row) for row in rows]

    def create_share_link(self, link: ShareLink) -> None:
        with self._writing() as conn, transaction(conn):
            found = conn.execute(
                "SELECT 1 FROM share_links WHERE link_id = ? OR token_hash = ?",
                (link.link_id, link.token_hash),
            ).fetchone()
            if found is not None:
                raise AlreadyExists(f"share link {link.link_id} already exists")
            conn.execute(
                f"INSERT INTO share_links ({_LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (link.link_id, link.token_hash, link.customer_id, link.receipt_id,
                 link.created_at, link.revoked_at),
            )

    def resolve_share_link(self, token_hash: str) -> ShareLink | None:
        row = self._one(
            f"SELECT {_LINK_COLUMNS} FROM share_links WHERE token_hash = ?", (token_hash,)
        )
        return None if row is None else _link(row)

    def list_share_links(self, customer_id: str) -> list[ShareLink]:
        rows = self._all(
            f"SELECT {_LINK_COLUMNS} FROM share_links WHERE customer_id = ? "
            "ORDER BY created_at DESC, link_id LIMIT ?",
            (customer_id, share_links_listed_max),
        )
        return [_link(row) for row in rows]

    def revoke_share_link(self, customer_id: str, link_id: str, revoked_at: str) -> None:
        self._update_one(
            "UPDATE share_links SET revoked_at = coalesce(revoked_at, ?) "
            "WHERE link_id = ? AND customer_id = ?",
            (revoked_at, link_id, customer_id),
            f"share link {link_id} of customer {customer_id}",
        )

    def usage_by_day(self, customer_id: str, since_day: str) -> list[UsageDay]:
        rows = self._all(
            "SELECT substr(recorded_at, 1, 10) AS day, entitlement_id, COUNT(*), "
            "SUM(amount_minor) FROM receipts WHERE customer_id = ? AND recorded_at >= ? "
            "GROUP BY day, entitlement_id ORDER BY day, entitlement_id LIMIT ?",
            (customer_id, since_day, usage_days_max * 16),
        )
        return [UsageDay(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]
