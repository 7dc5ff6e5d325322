"""Log audit and verify benchmark (not a test): `python -m loadtest.bench_log_audit`.

Builds a SQLite ledger of `--receipts` real receipts (valid cores, hashed,
chained) through the ledger API and the service's own LogAppender (one signed
checkpoint per commit of `--batch` receipts), then prints in one run:
- `billing log audit` leaves/s over the whole log (the function the CLI runs);
- `billing verify` receipts/s (the CLI itself, default workers) on one
  customer's first `--verify-receipts` receipts in both forms: receipt form
  (a JWS signature each) and checkpoint form (an inclusion proof against one
  signed checkpoint), and the ratio (issue 16's target: at least 3x), in
  receipts/s and in CPU per receipt (the CLI's own and its workers').
Numbers depend on what else runs on the machine: run it a few times.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog

from actors.receipt_log import LogAppender
from crypto import GENESIS_HASH, SigningKey, TrustedKeys, receipt_hash
from crypto._check import _check_signature, link_of
from crypto._path_cache import ProvenNodes
from crypto._receipt_log import _log_fields, _verified_checkpoint, receipt_leaf
from crypto.receipt import core_bytes, hash_of_core_bytes
from gateway.cli import main as billing
from ledger import Customer, Entitlement, SigningKeyRecord, StoredReceipt
from ledger.log_audit import audit_log, stored_jwks
from ledger.log_proofs import LogProofs
from ledger.ports import ReceiptWrite
from ledger.sqlite import SqliteLedger

T0 = "2026-01-01T00:00:00.000000Z"
ORIGIN = "bench.example/receipts"


class Chains:
    """Real receipt chains: customer 0 (the one verified) gets one receipt in
    `verified_every`; the others share the rest."""

    def __init__(self, customers: int, verified_every: int = 2) -> None:
        self.ids = [f"cus_{i:06d}" for i in range(customers)]
        self.verified_every = verified_every
        self.heads = {cid: (0, GENESIS_HASH, 0) for cid in self.ids}
        self.count = 0

    def next_receipt(self) -> StoredReceipt:
        self.count += 1
        mine = (self.count - 1) % self.verified_every == 0
        customer_id = self.ids[0] if mine else self.ids[1 + self.count % (len(self.ids) - 1)]
        seq, last_hash, balance = self.heads[customer_id]
        core = {
            "receipt_id": "rcpt_" + os.urandom(16).hex(),
            "customer_id": customer_id,
            "seq": seq + 1,
            "idempotency_key": f"key-{self.count}",
            "entitlement_id": "usage",
            "amount_minor": 25,
            "currency": "USD",
            "usage_description": "one API call",
            "event_timestamp": T0,
            "recorded_at": T0,
            "balance_after_minor": balance + 25,
            "quota_remaining_minor": None,
            "previous_receipt_hash": last_hash,
        }
        digest = receipt_hash(core)
        self.heads[customer_id] = (seq + 1, digest, balance + 25)
        return StoredReceipt(
            customer_id=customer_id,
            seq=seq + 1,
            receipt_id=str(core["receipt_id"]),
            idempotency_key=str(core["idempotency_key"]),
            request_fingerprint=digest[7:39],
            entitlement_id="usage",
            amount_minor=25,
            currency="USD",
            receipt_hash=digest,
            previous_receipt_hash=last_hash,
            balance_after_minor=balance + 25,
            recorded_at=T0,
            receipt_json=orjson.dumps({**core, "receipt_hash": digest}),
        )


def build(
    store: SqliteLedger, key: SigningKey, receipts: int, customers: int, batch: int,
    verified_every: int = 2,
) -> None:
    chains = Chains(customers, verified_every)
    for cid in chains.ids:
        store.create_customer(Customer(cid, f"{cid}@example.com", "USD", T0))
        store.put_entitlement(Entitlement(cid, "usage", None, "soft", "active", T0))
    jwk = orjson.dumps(key.public_jwk()).decode()
    store.record_signing_key(SigningKeyRecord(key.kid, key.alg, jwk, T0))
    appender = LogAppender(store, lambda: key, ORIGIN, lambda: T0)
    while chains.count < receipts:
        page = [chains.next_receipt() for _ in range(min(batch, receipts - chains.count))]
        page.sort(key=lambda receipt: receipt.customer_id)  # chain order per customer
        prepared = appender.prepare(page)
        writes = [ReceiptWrite(receipt) for receipt in prepared.receipts]
        store.commit_batch(writes, [], prepared.log_append)
        appender.adopt(prepared)


def write_exports(store: SqliteLedger, key: SigningKey, count: int, folder: Path) -> None:
    """Customer 0's first `count` receipts in receipt form and in checkpoint form."""
    proofs = LogProofs(store)
    head = proofs.head()
    assert head is not None
    receipts: list[StoredReceipt] = []
    while len(receipts) < count:
        page = store.list_receipts("cus_000000", len(receipts), min(1_000, count - len(receipts)))
        if not page:
            break
        receipts += page
    with open(folder / "receipt.jsonl", "wb") as signed, open(folder / "log.jsonl", "wb") as logged:
        for receipt in receipts:
            document = orjson.loads(receipt.receipt_json)
            signature = key.sign_detached(core_bytes(document))
            signed.write(orjson.dumps({**document, "signature": signature}) + b"\n")
            assert receipt.log_index is not None
            proof = proofs.inclusion(receipt.log_index, head).to_json()
            logged.write(orjson.dumps({**document, "log": proof}) + b"\n")
    (folder / "jwks.json").write_text(json.dumps({"keys": [key.public_jwk()]}))


def _cpu_s() -> float:
    """CPU seconds of this process and of its children that ended (verify's workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def time_verify(folder: Path, name: str) -> tuple[float, float, int]:
    """Wall and CPU seconds of one `billing verify` run, and the receipts it read."""
    argv = ["verify", str(folder / name), "--jwks", str(folder / "jwks.json")]
    output = io.StringIO()
    started_s, started_cpu_s = time.perf_counter(), _cpu_s()
    with contextlib.redirect_stdout(output):
        status = billing([*argv, "--progress", "never"])
    elapsed_s, cpu_s = time.perf_counter() - started_s, _cpu_s() - started_cpu_s
    if status != 0:
        raise SystemExit(f"billing verify {name} failed: {output.getvalue()}")
    return elapsed_s, cpu_s, sum(1 for _ in open(folder / name, "rb"))


def _us_per_item(check: Callable[[Any], object], items: Sequence[Any]) -> float:
    started_s = time.process_time()
    for item in items:
        check(item)
    return (time.process_time() - started_s) * 1e6 / len(items)


def print_cpu_per_part(folder: Path, lines_max: int = 5_000) -> None:
    """CPU per receipt of each step `billing verify` takes, in this process,
    with the service's own functions: where each form spends its time."""
    keys = TrustedKeys(json.loads((folder / "jwks.json").read_text()))
    with open(folder / "receipt.jsonl", "rb") as signed, open(folder / "log.jsonl", "rb") as logged:
        signed_lines = list(itertools.islice(signed, lines_max))
        logged_lines = list(itertools.islice(logged, lines_max))
    signed_docs = [orjson.loads(line) for line in signed_lines]
    logged_docs = [orjson.loads(line) for line in logged_lines]
    payloads = [core_bytes(document) for document in signed_docs]
    leaves = [receipt_leaf(document["receipt_hash"]) for document in logged_docs]
    first = _log_fields(logged_docs[0]["log"])
    root = _verified_checkpoint(first[3], keys, keys.checkpoints).root_hash
    proven = ProvenNodes()
    parts = {
        "parse, receipt form line": _us_per_item(orjson.loads, signed_lines),
        "parse, checkpoint form line": _us_per_item(orjson.loads, logged_lines),
        "core fields checked + JCS": _us_per_item(core_bytes, signed_docs),
        "SHA-256 of the core": _us_per_item(hash_of_core_bytes, payloads),
        "receipt form: JWS signature (RS256)": _us_per_item(
            lambda i: _check_signature(signed_docs[i]["signature"], payloads[i], keys),
            range(len(signed_docs)),
        ),
        "checkpoint form: log block fields + checkpoint (cached)": _us_per_item(
            lambda d: _verified_checkpoint(_log_fields(d["log"])[3], keys, keys.checkpoints),
            logged_docs,
        ),
        "checkpoint form: leaf hash": _us_per_item(
            lambda d: receipt_leaf(d["receipt_hash"]), logged_docs
        ),
        "checkpoint form: inclusion path (proven-node cache)": _us_per_item(
            lambda i: proven.proves(leaves[i], logged_docs[i]["log"]["index"],
                                    logged_docs[i]["log"]["tree_size"],
                                    logged_docs[i]["log"]["inclusion"], root),
            range(len(logged_docs)),
        ),
        "chain link fields": _us_per_item(link_of, signed_docs),
    }
    print(f"CPU per receipt by part (us, this process, first {len(signed_docs):,} receipts):")
    for name, us in parts.items():
        print(f"  {name:<56} {us:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--batch", type=int, default=512, help="receipts per commit")
    parser.add_argument("--verify-receipts", type=int, default=10_000)
    parser.add_argument(
        "--verified-every", type=int, default=2,
        help="the verified customer gets one receipt in N (sparser: longer inclusion walks)",
    )
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    key = SigningKey.generate()
    with tempfile.TemporaryDirectory(prefix="bench_log_audit_") as tmp:
        folder = Path(tmp)
        store = SqliteLedger.open(folder / "ledger.sqlite3")
        try:
            started = time.perf_counter()
            build(store, key, args.receipts, args.customers, args.batch, args.verified_every)
            built_s = time.perf_counter() - started
            print(f"built {args.receipts:,} receipts in {built_s:.1f} s ({args.batch} per commit)")
            keys = TrustedKeys(stored_jwks(store.signing_keys()))
            started = time.perf_counter()
            report = audit_log(store, keys)
            audit_s = time.perf_counter() - started
            assert report.ok and report.leaves == args.receipts, report.failure
            write_exports(store, key, args.verify_receipts, folder)
        finally:
            store.close()
        print(
            f"billing log audit: {report.leaves:,} leaves, {report.checkpoints:,} checkpoints "
            f"in {audit_s:.2f} s: {report.leaves / audit_s:,.0f} leaves/s"
        )
        rates, cpu_us = {}, {}
        for form, name in (("receipt", "receipt.jsonl"), ("checkpoint", "log.jsonl")):
            elapsed_s, cpu_s, count = time_verify(folder, name)
            rates[form], cpu_us[form] = count / elapsed_s, cpu_s * 1e6 / count
            print(
                f"billing verify, {form} form: {count:,} receipts: {rates[form]:,.0f} receipts/s,"
                f" {cpu_us[form]:.1f} us CPU per receipt (with its worker processes)"
            )
        print(
            f"checkpoint form / receipt form: {rates['checkpoint'] / rates['receipt']:.1f}x"
            f" receipts/s, {cpu_us['receipt'] / cpu_us['checkpoint']:.1f}x less CPU per receipt"
        )
        print_cpu_per_part(folder)


if __name__ == "__main__":
    main()
