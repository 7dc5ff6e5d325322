"""Firestore receipt read model (the ReceiptReadModel port).

One document per receipt in one collection, keyed by `receipt_id`, holding
every StoredReceipt field natively (ints as integers, the receipt JSON as
bytes). Upserts are idempotent: a receipt is immutable, so writing it again
writes the same document.

Listing a customer's receipts filters on `customer_id` and orders by `seq`;
production Firestore needs the composite index (customer_id ASC, seq ASC) on
the collection (the emulator needs none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import structlog
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from ledger._gcp_client import TRANSIENT_ERRORS, Lifecycle
from ledger._gcp_receipts import RECEIPT_FIELDS, receipt_from_fields
from ledger.errors import StoreUnavailable, check_invariant
from ledger.gcp_urls import parse_firestore_url
from ledger.limits import firestore_batch_writes_max, receipts_page_max
from ledger.model import StoredReceipt

__all__ = ["FirestoreReadModel"]

log = structlog.get_logger(__name__)

request_timeout_s: Final = 30.0


def _document(receipt: StoredReceipt) -> dict[str, Any]:
    return {name: getattr(receipt, name) for name in RECEIPT_FIELDS}


def _receipt(data: dict[str, Any] | None) -> StoredReceipt:
    check_invariant(data is not None, "receipt document without data")
    return receipt_from_fields(data or {})


class FirestoreReadModel:
    """ReceiptReadModel on Firestore.

    `FirestoreReadModel.open("firestore://projects/P[/databases/D][?collection=C]")`
    or `FirestoreReadModel(client, collection="receipts")`.
    """

    def __init__(self, client: Any, *, collection: str = "receipts") -> None:
        self._client = client
        self._collection = client.collection(collection)
        self._life = Lifecycle("Firestore read model")

    @classmethod
    def open(cls, url: str) -> FirestoreReadModel:
        parsed = parse_firestore_url(url)
        client = firestore.Client(project=parsed.project, database=parsed.database)
        log.info("firestore.opened", project=parsed.project, collection=parsed.collection)
        return cls(client, collection=parsed.collection)

    def upsert_receipts(self, receipts: Sequence[StoredReceipt]) -> None:
        self._life.check_open()
        # One document per receipt_id: the last copy in the batch wins, and
        # all copies are the same immutable receipt anyway.
        unique = {r.receipt_id: r for r in receipts}
        items = list(unique.values())
        try:
            for start in range(0, len(items), firestore_batch_writes_max):
                batch = self._client.batch()
                for receipt in items[start : start + firestore_batch_writes_max]:
                    batch.set(self._collection.document(receipt.receipt_id), _document(receipt))
                batch.commit(timeout=request_timeout_s)
        except TRANSIENT_ERRORS as error:
            raise StoreUnavailable(f"firestore: {error}") from error
        log.debug("firestore.upserted", receipts=len(items))

    def get_receipt(self, receipt_id: str) -> StoredReceipt | None:
        self._life.check_open()
        try:
            snapshot = self._collection.document(receipt_id).get(timeout=request_timeout_s)
        except TRANSIENT_ERRORS as error:
            raise StoreUnavailable(f"firestore: {error}") from error
        if not snapshot.exists:
            return None
        receipt = _receipt(snapshot.to_dict())
        check_invariant(receipt.receipt_id == receipt_id, "document id and receipt_id differ")
        return receipt

    def list_receipts(self, customer_id: str, after_seq: int, limit: int) -> list[StoredReceipt]:
        self._life.check_open()
        page = max(0, min(int(limit), receipts_page_max))
        if page == 0:
            return []
        query = (
            self._collection.where(filter=FieldFilter("customer_id", "==", customer_id))
            .where(filter=FieldFilter("seq", ">", int(after_seq)))
            .order_by("seq")
            .limit(page)
        )
        try:
            snapshots = query.get(timeout=request_timeout_s)
        except TRANSIENT_ERRORS as error:
            raise StoreUnavailable(f"firestore: {error}") from error
        return [_receipt(snapshot.to_dict()) for snapshot in snapshots]

    def close(self) -> None:
        self._life.close(self._client.close, "firestore.close_failed")
