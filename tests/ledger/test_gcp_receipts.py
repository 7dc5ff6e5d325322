"""The one receipt codec of the Google Cloud copies (Spanner rows, Firestore
documents, Pub/Sub attributes, Cloud Storage metadata, outbox payloads): a
receipt read back equals the one written, with or without its leaf index,
and copies written before the receipt log read back without one."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from ledger._gcp_receipts import (
    receipt_from_fields,
    receipt_from_row,
    receipt_from_text_fields,
    receipt_row,
    receipt_text_fields,
)
from ledger.errors import InvariantViolation, LedgerError
from ledger.model import StoredReceipt
from ledger.receipt_codec import decode_stored_receipt, encode_stored_receipt
from tests.contract._chain import Chain


def _receipts() -> list[StoredReceipt]:
    chain = Chain("cus_a")
    first, second = chain.next().receipt, chain.next().receipt
    return [
        first,
        dataclasses.replace(second, log_index=0),
        dataclasses.replace(first, log_index=7),
    ]


@pytest.mark.parametrize("receipt", _receipts(), ids=["no_leaf", "leaf_0", "leaf_7"])
def test_every_copy_reads_back_the_receipt_written(receipt: StoredReceipt) -> None:
    assert receipt_from_row(receipt_row(receipt)) == receipt
    document = {f.name: getattr(receipt, f.name) for f in dataclasses.fields(receipt)}
    assert receipt_from_fields(document) == receipt
    text = receipt_text_fields(receipt)
    assert all(isinstance(value, str) for value in text.values())
    assert receipt_from_text_fields(text, receipt.receipt_json) == receipt
    assert decode_stored_receipt(encode_stored_receipt(receipt)) == receipt


def test_an_empty_leaf_index_is_left_out_of_text_fields() -> None:
    unindexed, indexed, _ = _receipts()
    assert "log_index" not in receipt_text_fields(unindexed)
    assert receipt_text_fields(indexed)["log_index"] == "0"
    text = {**receipt_text_fields(unindexed), "log_index": ""}
    assert receipt_from_text_fields(text, unindexed.receipt_json).log_index is None


def test_copies_from_before_the_log_read_back_without_a_leaf_index() -> None:
    unindexed = _receipts()[0]
    document = {f.name: getattr(unindexed, f.name) for f in dataclasses.fields(unindexed)}
    del document["log_index"]
    assert receipt_from_fields(document) == unindexed
    payload = orjson.loads(encode_stored_receipt(unindexed))
    del payload["log_index"]
    assert decode_stored_receipt(orjson.dumps(payload)) == unindexed


@pytest.mark.parametrize("bad", [-1, True, "3", 1.0])
def test_a_wrong_leaf_index_is_refused(bad: object) -> None:
    row = list(receipt_row(_receipts()[1]))
    row[-1] = bad
    with pytest.raises(InvariantViolation, match="log_index"):
        receipt_from_row(row)


def test_wrong_text_fields_are_refused() -> None:
    indexed = _receipts()[1]
    text = {**receipt_text_fields(indexed), "log_index": "seven"}
    with pytest.raises(InvariantViolation, match="log_index"):
        receipt_from_text_fields(text, indexed.receipt_json)
    del text["receipt_id"]
    with pytest.raises(InvariantViolation, match="receipt_id"):
        receipt_from_text_fields(text, indexed.receipt_json)
    with pytest.raises(LedgerError, match="not a stored receipt"):
        decode_stored_receipt(orjson.dumps({"receipt_json": "{}"}))
