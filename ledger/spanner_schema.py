"""The Cloud Spanner schema, as numbered migrations, applied idempotently.

`MIGRATIONS` only ever grows: a shipped migration is never edited, a change is
a new entry. `apply_migrations` records each applied version in
`SchemaMigrations`, and before running a statement it checks whether the
object already exists, so a run interrupted between the DDL and the version
row is simply finished by the next run.

Column conventions: money INT64 minor units; timestamps STRING in the one
fixed format of `ledger.clock` (so string order is time order); ids STRING.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from ledger.clock import utc_now_rfc3339
from ledger.errors import StoreUnavailable
from ledger.gcp_urls import SpannerUrl

__all__ = [
    "MIGRATIONS",
    "Migration",
    "apply_migrations",
    "ensure_database",
    "pending_versions",
]

log = structlog.get_logger(__name__)

ddl_timeout_s: Final = 300.0
admin_timeout_s: Final = 120.0
# The emulator's instance config; real instances are created by Terraform.
EMULATOR_INSTANCE_CONFIG: Final = "emulator-config"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "ledger of record: customers, accounts, receipts, keys, entitlements, "
        "signing keys, webhook events, outbox",
        (
            """CREATE TABLE Customers (
                customer_id STRING(64) NOT NULL,
                email STRING(320) NOT NULL,
                currency STRING(3) NOT NULL,
                created_at STRING(32) NOT NULL,
                stripe_customer_id STRING(255),
            ) PRIMARY KEY (customer_id)""",
            "CREATE INDEX CustomersByEmail ON Customers(email)",
            "CREATE INDEX CustomersByStripeId ON Customers(stripe_customer_id)",
            # The chain head, compare-and-set on seq by every writer.
            """CREATE TABLE Accounts (
                customer_id STRING(64) NOT NULL,
                seq INT64 NOT NULL,
                last_receipt_hash STRING(128) NOT NULL,
                balance_minor INT64 NOT NULL,
            ) PRIMARY KEY (customer_id)""",
            """CREATE TABLE Receipts (
                customer_id STRING(64) NOT NULL,
                seq INT64 NOT NULL,
                receipt_id STRING(128) NOT NULL,
                idempotency_key STRING(255) NOT NULL,
                request_fingerprint STRING(255) NOT NULL,
                entitlement_id STRING(64) NOT NULL,
                amount_minor INT64 NOT NULL,
                currency STRING(3) NOT NULL,
                receipt_hash STRING(128) NOT NULL,
                previous_receipt_hash STRING(128) NOT NULL,
                balance_after_minor INT64 NOT NULL,
                recorded_at STRING(32) NOT NULL,
                receipt_json BYTES(MAX) NOT NULL,
            ) PRIMARY KEY (customer_id, seq)""",
            "CREATE UNIQUE INDEX ReceiptsById ON Receipts(receipt_id)",
            # One idempotency key per customer, forever: the database enforces
            # it even if a writer's own check were wrong.
            "CREATE UNIQUE INDEX ReceiptsByKey ON Receipts(customer_id, idempotency_key)",
            """CREATE TABLE ApiKeys (
                key_id STRING(128) NOT NULL,
                key_hash STRING(128) NOT NULL,
                customer_id STRING(64) NOT NULL,
                created_at STRING(32) NOT NULL,
                revoked_at STRING(32),
            ) PRIMARY KEY (key_id)""",
            "CREATE UNIQUE INDEX ApiKeysByHash ON ApiKeys(key_hash)",
            """CREATE TABLE Entitlements (
                customer_id STRING(64) NOT NULL,
                entitlement_id STRING(64) NOT NULL,
                quota_minor INT64,
                policy STRING(16) NOT NULL,
                status STRING(64) NOT NULL,
                updated_at STRING(32) NOT NULL,
                plan STRING(255),
                max_bots INT64,
                period_start STRING(32),
                period_end STRING(32),
                trial_end STRING(32),
                cancel_at_period_end BOOL NOT NULL,
                used_minor INT64 NOT NULL,
            ) PRIMARY KEY (customer_id, entitlement_id)""",
            """CREATE TABLE SigningKeys (
                kid STRING(255) NOT NULL,
                alg STRING(32) NOT NULL,
                public_jwk_json STRING(MAX) NOT NULL,
                created_at STRING(32) NOT NULL,
            ) PRIMARY KEY (kid)""",
            """CREATE TABLE WebhookEvents (
                event_id STRING(255) NOT NULL,
                event_type STRING(255) NOT NULL,
                payload BYTES(MAX) NOT NULL,
                received_at STRING(32) NOT NULL,
                processed_at STRING(32),
                attempts INT64 NOT NULL,
                next_attempt_at STRING(32),
                last_error STRING(MAX),
            ) PRIMARY KEY (event_id)""",
            "CREATE INDEX WebhookEventsByReceived ON WebhookEvents(processed_at, received_at)",
            # Insertion order = (commit timestamp, position in the batch): true
            # commit order across writers, unlike created_at from many clocks.
            """CREATE TABLE Outbox (
                message_id STRING(128) NOT NULL,
                topic STRING(128) NOT NULL,
                ordering_key STRING(128) NOT NULL,
                payload BYTES(MAX) NOT NULL,
                created_at STRING(32) NOT NULL,
                attempts INT64 NOT NULL,
                next_attempt_at STRING(32),
                last_error STRING(MAX),
                committed_at TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
                position INT64 NOT NULL,
            ) PRIMARY KEY (message_id)""",
            "CREATE INDEX OutboxByTopic ON Outbox(topic, committed_at, position)",
        ),
    ),
    Migration(
        2,
        "receipt log: leaf index per receipt, C2SP tiles, signed checkpoints, log head",
        (
            # NULL for receipts committed before the log existed.
            "ALTER TABLE Receipts ADD COLUMN log_index INT64",
            "CREATE UNIQUE NULL_FILTERED INDEX ReceiptsByLogIndex ON Receipts(log_index)",
            # C2SP tlog-tiles: up to 256 hashes of 32 bytes; a partial tile at
            # the right edge is rewritten as it grows.
            """CREATE TABLE LogTiles (
                level INT64 NOT NULL,
                tile_index INT64 NOT NULL,
                hashes BYTES(MAX) NOT NULL,
            ) PRIMARY KEY (level, tile_index)""",
            """CREATE TABLE LogCheckpoints (
                tree_size INT64 NOT NULL,
                root_hash BYTES(32) NOT NULL,
                timestamp STRING(32) NOT NULL,
                jws STRING(MAX) NOT NULL,
            ) PRIMARY KEY (tree_size)""",
            # One row (head_id 0): the size every appending writer reads and
            # rewrites in its transaction, so two gateways serialise on it.
            """CREATE TABLE LogHead (
                head_id INT64 NOT NULL,
                tree_size INT64 NOT NULL,
            ) PRIMARY KEY (head_id)""",
        ),
    ),
    Migration(
        3,
        "integrity halts, charge request records, share links and API keys by customer",
        (
            # An open incident (cleared_at NULL) stops charges on every gateway
            # of the database until an operator clears it with a reason;
            # cleared incidents stay, as the record of who lifted what and why.
            """CREATE TABLE IntegrityHalts (
                incident_id STRING(128) NOT NULL,
                opened_at STRING(32) NOT NULL,
                reason STRING(128) NOT NULL,
                detail STRING(MAX) NOT NULL,
                source STRING(64) NOT NULL,
                customer_id STRING(64),
                receipt_id STRING(128),
                cleared_at STRING(32),
                clear_reason STRING(MAX),
            ) PRIMARY KEY (incident_id)""",
            "CREATE INDEX IntegrityHaltsByTime ON IntegrityHalts(opened_at)",
            # Who asked for each charge (dispute evidence), written in the
            # transaction of its receipt; outside the signed receipt.
            """CREATE TABLE ChargeRequests (
                receipt_id STRING(128) NOT NULL,
                api_key_id STRING(128) NOT NULL,
                client_address STRING(MAX) NOT NULL,
                user_agent STRING(MAX) NOT NULL,
                received_at STRING(32) NOT NULL,
                request_id STRING(MAX) NOT NULL,
            ) PRIMARY KEY (receipt_id)""",
            # The web app: a revocable link to one receipt; only the SHA-256
            # of its token is kept.
            """CREATE TABLE ShareLinks (
                link_id STRING(128) NOT NULL,
                token_hash STRING(128) NOT NULL,
                customer_id STRING(64) NOT NULL,
                receipt_id STRING(128) NOT NULL,
                created_at STRING(32) NOT NULL,
                revoked_at STRING(32),
            ) PRIMARY KEY (link_id)""",
            "CREATE UNIQUE INDEX ShareLinksByToken ON ShareLinks(token_hash)",
            "CREATE INDEX ShareLinksByCustomer ON ShareLinks(customer_id, created_at)",
            # The dashboard lists a customer's keys.
            "CREATE INDEX ApiKeysByCustomer ON ApiKeys(customer_id, created_at)",
        ),
    ),
    Migration(
        4,
        "charges refused for a final reason, kept under their idempotency keys",
        (
            # A retry under a refused key replays the refusal; a customer's key
            # names a receipt or a refusal, never both (checked by the writer's
            # transaction against ReceiptsByKey and this table).
            """CREATE TABLE IdempotencyRefusals (
                customer_id STRING(64) NOT NULL,
                idempotency_key STRING(255) NOT NULL,
                request_fingerprint STRING(255) NOT NULL,
                code STRING(64) NOT NULL,
                message STRING(MAX) NOT NULL,
                param STRING(255),
                recorded_at STRING(32) NOT NULL,
            ) PRIMARY KEY (customer_id, idempotency_key)""",
        ),
    ),
    Migration(
        5,
        "dispute submissions: our answer to each Stripe dispute, once",
        (
            # Written when the evidence file is uploaded (its id kept for any
            # retry), updated in place once Stripe takes the evidence.
            """CREATE TABLE DisputeSubmissions (
                dispute_id STRING(255) NOT NULL,
                invoice_id STRING(255) NOT NULL,
                customer_id STRING(64) NOT NULL,
                file_id STRING(255) NOT NULL,
                receipt_count INT64 NOT NULL,
                recorded_at STRING(32) NOT NULL,
                submitted_at STRING(32),
                dispute_status STRING(64),
            ) PRIMARY KEY (dispute_id)""",
        ),
    ),
)

_VERSION_TABLE: Final = "SchemaMigrations"
_VERSION_DDL: Final = f"""CREATE TABLE {_VERSION_TABLE} (
    version INT64 NOT NULL,
    description STRING(MAX) NOT NULL,
    applied_at STRING(32) NOT NULL,
) PRIMARY KEY (version)"""

_CREATE_RE: Final = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?(?:NULL_FILTERED\s+)?(TABLE|INDEX)\s+(\w+)", re.IGNORECASE
)
_ADD_COLUMN_RE: Final = re.compile(
    r"^\s*ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(\w+)", re.IGNORECASE
)


def _check_migrations(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"spanner_schema: versions must be 1..n in order, got {versions}")


_check_migrations(MIGRATIONS)


def _existing_objects(database: Any) -> set[tuple[str, str]]:
    """(kind, name) of every user table, index and column ("Table.column"),
    upper-cased kind."""
    found: set[tuple[str, str]] = set()
    with database.snapshot(multi_use=True) as snapshot:
        for (name,) in snapshot.execute_sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ''",
            timeout=admin_timeout_s,
        ):
            found.add(("TABLE", str(name)))
        for (name,) in snapshot.execute_sql(
            "SELECT index_name FROM information_schema.indexes "
            "WHERE table_schema = '' AND index_type = 'INDEX'",
            timeout=admin_timeout_s,
        ):
            found.add(("INDEX", str(name)))
        for table, column in snapshot.execute_sql(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = ''",
            timeout=admin_timeout_s,
        ):
            found.add(("COLUMN", f"{table}.{column}"))
    return found


def _object_of(statement: str) -> tuple[str, str] | None:
    """The (kind, name) a statement creates, None for one that creates none."""
    created = _CREATE_RE.match(statement)
    if created:
        return created.group(1).upper(), created.group(2)
    added = _ADD_COLUMN_RE.match(statement)
    if added:
        return "COLUMN", f"{added.group(1)}.{added.group(2)}"
    return None


def _missing(statements: Sequence[str], existing: set[tuple[str, str]]) -> list[str]:
    todo = []
    for statement in statements:
        if _object_of(statement) in existing:
            continue
        todo.append(statement)
    return todo


def _update_ddl(database: Any, statements: list[str]) -> None:
    if statements:
        database.update_ddl(statements).result(timeout=ddl_timeout_s)


def _applied_versions(database: Any) -> set[int]:
    with database.snapshot() as snapshot:
        rows = snapshot.execute_sql(
            f"SELECT version FROM {_VERSION_TABLE}", timeout=admin_timeout_s
        )
        return {int(version) for (version,) in rows}


def pending_versions(database: Any) -> list[int]:
    """Versions not yet recorded in the database (all of them on a fresh one)."""
    if ("TABLE", _VERSION_TABLE) not in _existing_objects(database):
        return [m.version for m in MIGRATIONS]
    applied = _applied_versions(database)
    return [m.version for m in MIGRATIONS if m.version not in applied]


def apply_migrations(
    database: Any,
    migrations: Sequence[Migration] = MIGRATIONS,
    progress: Callable[[str], None] | None = None,
) -> list[int]:
    """Bring `database` (a `google.cloud.spanner_v1.Database`) up to date.

    Returns the versions applied by this call; [] when already current.
    """
    say = progress or (lambda _message: None)
    _update_ddl(database, _missing([_VERSION_DDL], _existing_objects(database)))
    applied = _applied_versions(database)
    done: list[int] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        say(f"applying migration {migration.version}: {migration.description}")
        statements = _missing(migration.statements, _existing_objects(database))
        _update_ddl(database, statements)
        with database.batch() as batch:
            batch.insert_or_update(
                _VERSION_TABLE,
                ("version", "description", "applied_at"),
                [(migration.version, migration.description, utc_now_rfc3339())],
            )
        log.info(
            "spanner.migration_applied",
            version=migration.version,
            statements=len(statements),
        )
        done.append(migration.version)
    return done


def ensure_database(
    client: Any,
    url: SpannerUrl,
    *,
    create: bool,
    progress: Callable[[str], None] | None = None,
) -> Any:
    """The url's database, creating instance and database first if `create`.

    `client` is a `google.cloud.spanner.Client` for `url.project`. Without
    `create`, a missing instance or database raises StoreUnavailable.
    Instance creation uses the emulator's config: production instances are
    provisioned by Terraform, never from here.
    """
    from google.api_core import exceptions as gexc

    say = progress or (lambda _message: None)

    def exists(get: Callable[..., Any], name: str) -> bool:
        # The high-level exists() takes no timeout; the admin call does.
        try:
            get(name=name, timeout=admin_timeout_s)
        except gexc.NotFound:
            return False
        except gexc.GoogleAPICallError as error:
            raise StoreUnavailable(f"cannot reach Spanner for {url}: {error}") from error
        return True

    instance = client.instance(url.instance)
    instance_path = f"projects/{url.project}/instances/{url.instance}"
    if not exists(client.instance_admin_api.get_instance, instance_path):
        if not create:
            raise StoreUnavailable(f"Spanner instance {url.instance!r} does not exist")
        # The same variable the client library read when it was built.
        if not os.environ.get("SPANNER_EMULATOR_HOST"):
            raise StoreUnavailable(
                f"Spanner instance {url.instance!r} does not exist; instances are "
                "created here only on the emulator (production: Terraform)"
            )
        say(f"creating instance {url.instance}")
        instance = client.instance(
            url.instance,
            configuration_name=f"projects/{url.project}/instanceConfigs/{EMULATOR_INSTANCE_CONFIG}",
            display_name=url.instance,
            node_count=1,
        )
        with contextlib.suppress(gexc.AlreadyExists):  # created concurrently: fine
            instance.create().result(timeout=admin_timeout_s)
    database = instance.database(url.database)
    if not exists(client.database_admin_api.get_database, url.database_path):
        if not create:
            raise StoreUnavailable(f"Spanner database {url.database!r} does not exist")
        say(f"creating database {url.database}")
        with contextlib.suppress(gexc.AlreadyExists):
            database.create().result(timeout=admin_timeout_s)
    return database
