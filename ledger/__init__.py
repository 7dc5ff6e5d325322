"""Storage ports and adapters, and the data model of the ledger."""

from crypto.receipt import GENESIS_HASH
from ledger.errors import (
    AlreadyExists,
    ChainConflict,
    LedgerError,
    LogConflict,
    NotFound,
    StoreLocked,
    StoreUnavailable,
)
from ledger.model import (
    AccountState,
    ApiKey,
    Customer,
    Entitlement,
    LogAppend,
    LogCheckpoint,
    OutboxMessage,
    SigningKeyRecord,
    StoredReceipt,
    WebhookEvent,
)
from ledger.ports import (
    CommitFeed,
    LedgerStore,
    LogReader,
    ReceiptArchive,
    ReceiptBroadcast,
    ReceiptReadModel,
    ReceiptWrite,
)

__all__ = [
    "GENESIS_HASH",
    "AccountState",
    "AlreadyExists",
    "ApiKey",
    "ChainConflict",
    "CommitFeed",
    "Customer",
    "Entitlement",
    "LedgerError",
    "LedgerStore",
    "LogAppend",
    "LogCheckpoint",
    "LogConflict",
    "LogReader",
    "NotFound",
    "OutboxMessage",
    "ReceiptArchive",
    "ReceiptBroadcast",
    "ReceiptReadModel",
    "ReceiptWrite",
    "SigningKeyRecord",
    "StoreLocked",
    "StoreUnavailable",
    "StoredReceipt",
    "WebhookEvent",
]
