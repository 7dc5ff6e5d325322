"""Outbound webhooks on SQLite (see ledger.webhook_store): endpoints, alert
thresholds, and the events with their delivery record. The events
themselves are inserted by `commit_batch` (`INSERT_EVENTS`)."""

from __future__ import annotations

import sqlite3
from typing import Final

import orjson

from ledger._sqlite_base import SqliteBase, transaction
from ledger._sqlite_rows import Row
from ledger.errors import NotFound
from ledger.webhook_store import (
    EVENT_DELIVERED,
    DeliveryAttempt,
    EventPage,
    OutboundEvent,
    TooManyEndpoints,
    WebhookEndpoint,
)

_ENDPOINT_COLUMNS: Final = (
    "endpoint_id, customer_id, url, secret, created_at, previous_secret, "
    "previous_secret_expires_at"
)
_EVENT_COLUMNS: Final = (
    "event_id, customer_id, event_type, created_at, body, entitlement_id, period_start, "
    "threshold_pct, status, attempts, last_attempt_at, last_error, delivered_at, delivered_to"
)
INSERT_EVENTS: Final = f"INSERT INTO outbound_events ({_EVENT_COLUMNS})"  # + VALUES


def event_params(event: OutboundEvent) -> Row:
    return (
        event.event_id, event.customer_id, event.event_type, event.created_at, event.body,
        event.entitlement_id, event.period_start, event.threshold_pct, event.status,
        event.attempts, event.last_attempt_at, event.last_error, event.delivered_at,
        orjson.dumps(list(event.delivered_to)).decode(),
    )


def _event(row: Row) -> OutboundEvent:
    return OutboundEvent(
        event_id=str(row[0]), customer_id=str(row[1]), event_type=str(row[2]),
        created_at=str(row[3]), body=bytes(row[4]), entitlement_id=str(row[5]),
        period_start=str(row[6]), threshold_pct=int(row[7]), status=str(row[8]),
        attempts=int(row[9]), last_attempt_at=row[10], last_error=row[11],
        delivered_at=row[12], delivered_to=tuple(orjson.loads(row[13])),
    )


def _endpoint(row: Row) -> WebhookEndpoint:
    return WebhookEndpoint(str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]),
                           row[5], row[6])


def events_already_fired(conn: sqlite3.Connection, events: list[Row]) -> set[str]:
    """Customers of a failed batch with an event that is already stored
    (`commit_batch`'s diagnosis; the account actor reloads what fired)."""
    customers: set[str] = set()
    for params in events:
        found = conn.execute(
            "SELECT 1 FROM outbound_events WHERE event_id = ? OR (customer_id = ? AND "
            "entitlement_id = ? AND period_start = ? AND threshold_pct = ?)",
            (params[0], params[1], params[5], params[6], params[7]),
        ).fetchall()
        if found:
            customers.add(str(params[1]))
    return customers


class SqliteWebhooks(SqliteBase):
    def create_webhook_endpoint(self, endpoint: WebhookEndpoint, per_customer_max: int) -> None:
        with self._writing() as conn, transaction(conn):
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM webhook_endpoints WHERE customer_id = ?",
                (endpoint.customer_id,),
            ).fetchone()
            if count >= per_customer_max:
                raise TooManyEndpoints(f"at most {per_customer_max} webhook endpoints")
            conn.execute(
                f"INSERT INTO webhook_endpoints ({_ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (endpoint.endpoint_id, endpoint.customer_id, endpoint.url, endpoint.secret,
                 endpoint.created_at, endpoint.previous_secret,
                 endpoint.previous_secret_expires_at),
            )

    def list_webhook_endpoints(self, customer_id: str) -> list[WebhookEndpoint]:
        rows = self._all(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE customer_id = ? "
            "ORDER BY created_at, endpoint_id",
            (customer_id,),
        )
        return [_endpoint(row) for row in rows]

    def delete_webhook_endpoint(self, customer_id: str, endpoint_id: str) -> None:
        with self._writing() as conn, transaction(conn):
            deleted = conn.execute(
                "DELETE FROM webhook_endpoints WHERE endpoint_id = ? AND customer_id = ?",
                (endpoint_id, customer_id),
            ).rowcount
            if deleted != 1:
                raise NotFound(f"webhook endpoint {endpoint_id} not found")

    def rotate_webhook_secret(
        self, customer_id: str, endpoint_id: str, secret: str, previous_expires_at: str
    ) -> WebhookEndpoint:
        self._update_one(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = ?, "
            "previous_secret_expires_at = ? WHERE endpoint_id = ? AND customer_id = ?",
            (secret, previous_expires_at, endpoint_id, customer_id),
            f"webhook endpoint {endpoint_id}",
        )
        row = self._one(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = ?",
            (endpoint_id,),
        )
        if row is None:  # deleted in between
            raise NotFound(f"webhook endpoint {endpoint_id} not found")
        return _endpoint(row)

    def alert_thresholds(self, customer_id: str) -> dict[str, tuple[int, ...]]:
        rows = self._all(
            "SELECT entitlement_id, thresholds_pct FROM alert_thresholds WHERE customer_id = ?",
            (customer_id,),
        )
        return {str(row[0]): tuple(int(p) for p in orjson.loads(row[1])) for row in rows}

    def set_alert_thresholds(
        self, customer_id: str, entitlement_id: str, thresholds_pct: tuple[int, ...],
        updated_at: str,
    ) -> None:
        with self._writing() as conn, transaction(conn):
            conn.execute(
                "INSERT INTO alert_thresholds VALUES (?, ?, ?, ?) ON CONFLICT "
                "(customer_id, entitlement_id) DO UPDATE SET "
                "thresholds_pct = excluded.thresholds_pct, updated_at = excluded.updated_at",
                (customer_id, entitlement_id, orjson.dumps(list(thresholds_pct)).decode(),
                 updated_at),
            )

    def fired_thresholds(self, customer_id: str) -> set[tuple[str, str, int]]:
        rows = self._all(
            "SELECT entitlement_id, period_start, threshold_pct FROM outbound_events "
            "WHERE customer_id = ?",
            (customer_id,),
        )
        return {(str(row[0]), str(row[1]), int(row[2])) for row in rows}

    def get_outbound_event(self, event_id: str) -> OutboundEvent | None:
        row = self._one(
            f"SELECT {_EVENT_COLUMNS} FROM outbound_events WHERE event_id = ?", (event_id,)
        )
        return None if row is None else _event(row)

    def list_outbound_events(
        self, customer_id: str, *, starting_after: str | None, ending_before: str | None,
        limit: int,
    ) -> EventPage:
        select = f"SELECT {_EVENT_COLUMNS} FROM outbound_events WHERE customer_id = ?"
        cursor = starting_after or ending_before
        if cursor is None:
            rows = self._all(f"{select} ORDER BY position DESC LIMIT ?", (customer_id, limit + 1))
            return EventPage([_event(r) for r in rows[:limit]], len(rows) > limit)
        found = self._one(
            "SELECT position FROM outbound_events WHERE event_id = ? AND customer_id = ?",
            (cursor, customer_id),
        )
        if found is None:
            raise NotFound(f"no such event: {cursor}")
        if starting_after is not None:  # older than the cursor
            rows = self._all(f"{select} AND position < ? ORDER BY position DESC LIMIT ?",
                             (customer_id, found[0], limit + 1))
            return EventPage([_event(r) for r in rows[:limit]], len(rows) > limit)
        rows = self._all(f"{select} AND position > ? ORDER BY position ASC LIMIT ?",
                         (customer_id, found[0], limit + 1))
        return EventPage([_event(r) for r in reversed(rows[:limit])], len(rows) > limit)

    def record_delivery(self, event_id: str, attempt: DeliveryAttempt) -> None:
        delivered_at = attempt.attempted_at if attempt.status == EVENT_DELIVERED else None
        with self._writing() as conn, transaction(conn):
            conn.execute(
                "UPDATE outbound_events SET attempts = attempts + 1, status = ?, "
                "last_attempt_at = ?, last_error = ?, delivered_to = ?, "
                "delivered_at = coalesce(delivered_at, ?) WHERE event_id = ?",
                (attempt.status, attempt.attempted_at, attempt.error,
                 orjson.dumps(list(attempt.delivered_to)).decode(), delivered_at, event_id),
            )
