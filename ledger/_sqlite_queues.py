"""Signing keys, webhook events and the outbox of the SQLite adapter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ledger._sqlite_base import SqliteBase, transaction
from ledger._sqlite_rows import (
    OUTBOX_COLUMNS,
    SIGNING_KEY_COLUMNS,
    WEBHOOK_COLUMNS,
    execute_values,
    outbox_from_row,
    outbox_params,
    placeholders,
    record_params,
    signing_key_from_row,
    webhook_from_row,
    webhook_params,
)
from ledger.model import OutboxMessage, SigningKeyRecord, WebhookEvent

INSERT_OUTBOX: Final = f"INSERT INTO outbox ({OUTBOX_COLUMNS}, due_at)"  # + VALUES
# Due messages of a topic in commit order, except those behind a not-yet-due
# message of the same ordering key (a retry postponed) so each key stays in order.
_PENDING_OUTBOX: Final = f"""
    WITH blocked AS (
        SELECT ordering_key, MIN(position) AS position FROM outbox
        WHERE topic = ? AND due_at > ? GROUP BY ordering_key
    )
    SELECT {", ".join("o." + c.strip() for c in OUTBOX_COLUMNS.split(","))}
    FROM outbox AS o LEFT JOIN blocked AS b ON b.ordering_key = o.ordering_key
    WHERE o.topic = ? AND o.due_at <= ? AND (b.position IS NULL OR o.position < b.position)
    ORDER BY o.position LIMIT ?
"""


class SqliteQueues(SqliteBase):
    # -- signing keys -------------------------------------------------------
    def record_signing_key(self, key: SigningKeyRecord) -> None:
        with self._writing() as conn, transaction(conn):
            conn.execute(
                f"INSERT INTO signing_keys ({SIGNING_KEY_COLUMNS}) "
                f"VALUES ({placeholders(SIGNING_KEY_COLUMNS)}) ON CONFLICT (kid) DO NOTHING",
                record_params(key),
            )

    def signing_keys(self) -> list[SigningKeyRecord]:
        rows = self._all(
            f"SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys ORDER BY created_at, kid", ()
        )
        return [signing_key_from_row(row) for row in rows]

    # -- webhook events -----------------------------------------------------
    def record_webhook_event(self, event: WebhookEvent) -> bool:
        with self._writing() as conn, transaction(conn):
            cursor = conn.execute(
                f"INSERT INTO webhook_events ({WEBHOOK_COLUMNS}, due_at) "
                f"VALUES ({placeholders(WEBHOOK_COLUMNS, 1)}) ON CONFLICT (event_id) DO NOTHING",
                webhook_params(event),
            )
            return cursor.rowcount == 1

    def pending_webhook_events(self, now: str, limit: int) -> list[WebhookEvent]:
        rows = self._all(
            f"SELECT {WEBHOOK_COLUMNS} FROM webhook_events "
            "WHERE processed_at IS NULL AND due_at <= ? ORDER BY due_at, position LIMIT ?",
            (now, limit),
        )
        return [webhook_from_row(row) for row in rows]

    def mark_webhook_processed(self, event_id: str, processed_at: str) -> None:
        self._update_one(
            "UPDATE webhook_events SET processed_at = coalesce(processed_at, ?) "
            "WHERE event_id = ?",
            (processed_at, event_id),
            f"webhook event {event_id}",
        )

    def mark_webhook_failed(self, event_id: str, error: str, next_attempt_at: str) -> None:
        self._update_one(
            "UPDATE webhook_events SET attempts = attempts + 1, last_error = ?, "
            "next_attempt_at = ?, due_at = ? WHERE event_id = ?",
            (error, next_attempt_at, next_attempt_at, event_id),
            f"webhook event {event_id}",
        )

    # -- outbox ---------------------------------------------------------------
    def enqueue_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        if not messages:
            return
        with self._writing() as conn, transaction(conn):
            execute_values(conn, INSERT_OUTBOX, [outbox_params(m) for m in messages])

    def pending_outbox(self, topic: str, now: str, limit: int) -> list[OutboxMessage]:
        rows = self._all(_PENDING_OUTBOX, (topic, now, topic, now, limit))
        return [outbox_from_row(row) for row in rows]

    def outbox_delivered(self, message_ids: Sequence[str]) -> None:
        """Forget delivered messages; unknown ids are ignored (at-least-once)."""
        if not message_ids:
            return
        with self._writing() as conn, transaction(conn):
            execute_values(
                conn,
                "DELETE FROM outbox WHERE message_id IN (SELECT column1 FROM (",
                [(mid,) for mid in message_ids],
                "))",
            )

    def outbox_retry_later(self, message_id: str, error: str, next_attempt_at: str) -> None:
        """Postpone a message (and, by ordering, the ones after it on its key).
        A message already delivered is ignored."""
        with self._writing() as conn, transaction(conn):
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = ?, due_at = ? WHERE message_id = ?",
                (error, next_attempt_at, next_attempt_at, message_id),
            )

    def outbox_backlog(self) -> dict[str, int]:
        rows = self._all("SELECT topic, COUNT(*) FROM outbox GROUP BY topic", ())
        return {row[0]: row[1] for row in rows}

    def outbox_oldest(self) -> dict[str, str]:
        rows = self._all("SELECT topic, MIN(created_at) FROM outbox GROUP BY topic", ())
        return {row[0]: row[1] for row in rows}
