"""The SQLite schema as an ordered list of migrations.

`PRAGMA user_version` records how many migrations a file has; opening a file
applies the missing ones in one transaction, so opening is idempotent and an
old file is upgraded in place. Append new migrations; never edit old ones.

No REAL column anywhere: money is INTEGER minor units, timestamps are TEXT in
the fixed format of `ledger.clock` so they compare as strings.
"""

from __future__ import annotations

import sqlite3
from typing import Final

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the initial schema.
    """
    CREATE TABLE customers (
        customer_id        TEXT PRIMARY KEY,
        email              TEXT NOT NULL,
        currency           TEXT NOT NULL,
        created_at         TEXT NOT NULL,
        stripe_customer_id TEXT
    );
    CREATE INDEX customers_by_email ON customers (email);
    CREATE INDEX customers_by_stripe_id ON customers (stripe_customer_id);

    CREATE TABLE api_keys (
        key_id      TEXT PRIMARY KEY,
        key_hash    TEXT NOT NULL UNIQUE,
        customer_id TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        revoked_at  TEXT
    );

    CREATE TABLE accounts (
        customer_id       TEXT PRIMARY KEY,
        seq               INTEGER NOT NULL,
        last_receipt_hash TEXT NOT NULL,
        balance_minor     INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE entitlements (
        customer_id          TEXT NOT NULL,
        entitlement_id       TEXT NOT NULL,
        quota_minor          INTEGER,
        policy               TEXT NOT NULL,
        status               TEXT NOT NULL,
        updated_at           TEXT NOT NULL,
        plan                 TEXT,
        max_bots             INTEGER,
        period_start         TEXT,
        period_end           TEXT,
        trial_end            TEXT,
        cancel_at_period_end INTEGER NOT NULL,
        used_minor           INTEGER NOT NULL,
        PRIMARY KEY (customer_id, entitlement_id)
    ) WITHOUT ROWID;

    CREATE TABLE receipts (
        customer_id           TEXT NOT NULL,
        seq                   INTEGER NOT NULL,
        receipt_id            TEXT NOT NULL UNIQUE,
        idempotency_key       TEXT NOT NULL,
        request_fingerprint   TEXT NOT NULL,
        entitlement_id        TEXT NOT NULL,
        amount_minor          INTEGER NOT NULL,
        currency              TEXT NOT NULL,
        receipt_hash          TEXT NOT NULL,
        previous_receipt_hash TEXT NOT NULL,
        balance_after_minor   INTEGER NOT NULL,
        recorded_at           TEXT NOT NULL,
        receipt_json          BLOB NOT NULL,
        PRIMARY KEY (customer_id, seq),
        UNIQUE (customer_id, idempotency_key)
    );

    CREATE TABLE signing_keys (
        kid             TEXT PRIMARY KEY,
        alg             TEXT NOT NULL,
        public_jwk_json TEXT NOT NULL,
        created_at      TEXT NOT NULL
    );

    -- processed_at NULL = pending, due_at = next_attempt_at, else received_at.
    CREATE TABLE webhook_events (
        position        INTEGER PRIMARY KEY,
        event_id        TEXT NOT NULL UNIQUE,
        event_type      TEXT NOT NULL,
        payload         BLOB NOT NULL,
        received_at     TEXT NOT NULL,
        processed_at    TEXT,
        attempts        INTEGER NOT NULL,
        next_attempt_at TEXT,
        last_error      TEXT,
        due_at          TEXT NOT NULL
    );
    CREATE INDEX webhook_events_pending ON webhook_events (due_at)
        WHERE processed_at IS NULL;

    -- position (the rowid) is the commit order: in order per ordering_key.
    -- Delivered messages are deleted. due_at = next_attempt_at, else created_at.
    CREATE TABLE outbox (
        position        INTEGER PRIMARY KEY,
        message_id      TEXT NOT NULL UNIQUE,
        topic           TEXT NOT NULL,
        ordering_key    TEXT NOT NULL,
        payload         BLOB NOT NULL,
        created_at      TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        next_attempt_at TEXT,
        last_error      TEXT,
        due_at          TEXT NOT NULL
    );
    CREATE INDEX outbox_by_topic ON outbox (topic, position);
    CREATE INDEX outbox_by_due ON outbox (topic, due_at);
    """,
    # 2: the receipt log (RFC 9162 Merkle tree over every receipt in commit
    # order): each receipt's leaf index, the tree's nodes as C2SP tlog-tiles
    # (a partial tile at the right edge is rewritten as it grows), and one
    # signed checkpoint per commit; the newest checkpoint is the log head.
    """
    ALTER TABLE receipts ADD COLUMN log_index INTEGER;
    CREATE UNIQUE INDEX receipts_by_log_index ON receipts (log_index);

    CREATE TABLE log_tiles (
        level      INTEGER NOT NULL,
        tile_index INTEGER NOT NULL,
        hashes     BLOB NOT NULL,
        PRIMARY KEY (level, tile_index)
    ) WITHOUT ROWID;

    CREATE TABLE log_checkpoints (
        tree_size INTEGER PRIMARY KEY,
        root_hash BLOB NOT NULL,
        timestamp TEXT NOT NULL,
        jws       TEXT NOT NULL
    );
    """,
    # 3: receipt share links (the web app): a revocable, unguessable link to
    # one receipt; only the SHA-256 of the token is kept.
    """
    CREATE TABLE share_links (
        link_id     TEXT PRIMARY KEY,
        token_hash  TEXT NOT NULL UNIQUE,
        customer_id TEXT NOT NULL,
        receipt_id  TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        revoked_at  TEXT
    );
    CREATE INDEX share_links_by_customer ON share_links (customer_id, created_at);
    """,
    # 4: integrity halts. An open incident (cleared_at NULL) stops charges on
    # every gateway of this store until an operator clears it with a reason;
    # cleared incidents stay, as the record of who lifted what and why.
    """
    CREATE TABLE integrity_halts (
        incident_id  TEXT PRIMARY KEY,
        opened_at    TEXT NOT NULL,
        reason       TEXT NOT NULL,
        detail       TEXT NOT NULL,
        source       TEXT NOT NULL,
        customer_id  TEXT,
        receipt_id   TEXT,
        cleared_at   TEXT,
        clear_reason TEXT
    );
    CREATE INDEX integrity_halts_open ON integrity_halts (opened_at)
        WHERE cleared_at IS NULL;
    CREATE INDEX integrity_halts_by_time ON integrity_halts (opened_at);
    """,
    # 5: who asked for each charge (dispute evidence), written in the commit
    # of its receipt; outside the signed receipt, never served to others.
    """
    CREATE TABLE charge_requests (
        receipt_id     TEXT PRIMARY KEY,
        api_key_id     TEXT NOT NULL,
        client_address TEXT NOT NULL,
        user_agent     TEXT NOT NULL,
        received_at    TEXT NOT NULL,
        request_id     TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 6: outbound webhooks (threshold alerts). A customer's endpoints (the
    # secret is kept: it signs every delivery); thresholds set per
    # entitlement; and the events, written in the commit of the receipt that
    # crossed the threshold, at most one per (entitlement, period, threshold),
    # with their delivery record. position orders a customer's events.
    """
    CREATE TABLE webhook_endpoints (
        endpoint_id                TEXT PRIMARY KEY,
        customer_id                TEXT NOT NULL,
        url                        TEXT NOT NULL,
        secret                     TEXT NOT NULL,
        created_at                 TEXT NOT NULL,
        previous_secret            TEXT,
        previous_secret_expires_at TEXT
    );
    CREATE INDEX webhook_endpoints_by_customer ON webhook_endpoints (customer_id, created_at);

    CREATE TABLE alert_thresholds (
        customer_id    TEXT NOT NULL,
        entitlement_id TEXT NOT NULL,
        thresholds_pct TEXT NOT NULL,
        updated_at     TEXT NOT NULL,
        PRIMARY KEY (customer_id, entitlement_id)
    ) WITHOUT ROWID;

    CREATE TABLE outbound_events (
        position        INTEGER PRIMARY KEY,
        event_id        TEXT NOT NULL UNIQUE,
        customer_id     TEXT NOT NULL,
        event_type      TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        body            BLOB NOT NULL,
        entitlement_id  TEXT NOT NULL,
        period_start    TEXT NOT NULL,
        threshold_pct   INTEGER NOT NULL,
        status          TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        last_attempt_at TEXT,
        last_error      TEXT,
        delivered_at    TEXT,
        delivered_to    TEXT NOT NULL
    );
    CREATE UNIQUE INDEX outbound_events_once
        ON outbound_events (customer_id, entitlement_id, period_start, threshold_pct);
    CREATE INDEX outbound_events_by_customer ON outbound_events (customer_id, position);
    """,
    # 7: our answers to Stripe disputes, one row per dispute: the uploaded
    # evidence file first, then the time Stripe took the evidence. A row with
    # submitted_at set means "answered": a replayed webhook stops there.
    # (The Spanner adapter has no such table yet: see gateway/storage.py.)
    """
    CREATE TABLE dispute_submissions (
        dispute_id     TEXT PRIMARY KEY,
        invoice_id     TEXT NOT NULL,
        customer_id    TEXT NOT NULL,
        file_id        TEXT NOT NULL,
        receipt_count  INTEGER NOT NULL,
        recorded_at    TEXT NOT NULL,
        submitted_at   TEXT,
        dispute_status TEXT
    ) WITHOUT ROWID;
    """,
    # 8: charges refused for a final reason, kept under their idempotency
    # keys so that a retry replays the refusal (ledger.model.StoredRefusal).
    """
    CREATE TABLE idempotency_refusals (
        customer_id         TEXT NOT NULL,
        idempotency_key     TEXT NOT NULL,
        request_fingerprint TEXT NOT NULL,
        code                TEXT NOT NULL,
        message             TEXT NOT NULL,
        param               TEXT,
        recorded_at         TEXT NOT NULL,
        PRIMARY KEY (customer_id, idempotency_key)
    ) WITHOUT ROWID;
    """,
)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply missing migrations in one IMMEDIATE transaction; returns the version.

    `conn` must be in autocommit mode (isolation_level=None).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        for index in range(int(version), len(MIGRATIONS)):
            for statement in _statements(MIGRATIONS[index]):
                conn.execute(statement)
            # PRAGMA does not take parameters; the value is our own integer.
            conn.execute(f"PRAGMA user_version = {index + 1:d}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our transaction first; split instead (the
    # schema has no ';' inside literals).
    return [part.strip() for part in script.split(";") if part.strip()]
