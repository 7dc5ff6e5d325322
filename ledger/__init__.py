"""Storage ports and adapters, and the data model of the ledger."""

from crypto.receipt import GENESIS_HASH
from ledger.errors import (
    AlreadyExists,
    ChainConflict,
    LedgerError,
    NotFound,
    StoreLocked,
    StoreUnavailable,
)
from ledger.model import (
    AccountState,
    ApiKey,
    Customer,
    Entitlement,
    OutboxMessage,
    SigningKeyRecord,
    StoredReceipt,
    WebhookEvent,
)
from ledger.ports import (
    CommitFeed,
    LedgerStore,
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
