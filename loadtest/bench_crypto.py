"""Receipt crypto benchmark (not a test): `python -m loadtest.bench_crypto [--receipts N]`.

Prints signs/s per alg (RS256 on one and two threads), verifies/s, and the
throughput of `billing verify` run as a real subprocess over a generated
JSON-lines export. Numbers depend on what else runs on the machine: run it a
few times.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import orjson

from crypto import (
    GENESIS_HASH,
    KeyRing,
    SigningKey,
    TrustedKeys,
    receipt_hash,
    seal_receipt,
    verify_receipt,
)

sign_duration_s = 2.0
payload_bytes = b'{"amount_minor":125,"currency":"EUR","customer_id":"cus_1"}' * 8


def _signs_per_s(key: SigningKey, threads: int) -> float:
    def worker() -> int:
        count, deadline = 0, time.perf_counter() + sign_duration_s
        while time.perf_counter() < deadline:
            key.sign_detached(payload_bytes)
            count += 1
        return count

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(lambda _: worker(), range(threads)))
    return total / (time.perf_counter() - started)


def _core(seq: int, previous_hash: str) -> dict[str, object]:
    return {
        "receipt_id": f"rcp_{seq:08d}",
        "customer_id": "cus_bench",
        "seq": seq,
        "idempotency_key": f"idem-{seq}",
        "entitlement_id": "ent_api_calls",
        "amount_minor": 125,
        "currency": "EUR",
        "usage_description": "1,000 API calls — bench",
        "event_timestamp": "2025-03-01T12:00:00Z",
        "recorded_at": "2025-03-01T12:00:00.123456Z",
        "balance_after_minor": 10**12 - 125 * seq,
        "quota_remaining_minor": None,
        "previous_receipt_hash": previous_hash,
    }


def _write_export(path: pathlib.Path, key: SigningKey, count: int) -> None:
    # Hashes chain sequentially; signatures do not, so sign on two threads.
    payloads: list[dict[str, object]] = []
    previous_hash = GENESIS_HASH
    with path.open("wb") as export, concurrent.futures.ThreadPoolExecutor(2) as pool:
        for seq in range(1, count + 1):
            core = _core(seq, previous_hash)
            payloads.append(core)
            previous_hash = receipt_hash(core)
            if len(payloads) == 2048 or seq == count:
                for receipt in pool.map(lambda core: seal_receipt(core, key), payloads):
                    export.write(orjson.dumps(receipt) + b"\n")
                payloads = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--receipts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="billing verify runs")
    args = parser.parse_args()

    rs256 = SigningKey.generate("RS256")
    print(f"RS256 sign, 1 thread : {_signs_per_s(rs256, 1):8,.0f} /s")
    print(f"RS256 sign, 2 threads: {_signs_per_s(rs256, 2):8,.0f} /s")
    for alg in ("ES256", "EdDSA"):
        print(f"{alg:5} sign, 1 thread : {_signs_per_s(SigningKey.generate(alg), 1):8,.0f} /s")
    for key in (rs256, SigningKey.generate("ES256"), SigningKey.generate("EdDSA")):
        receipt = seal_receipt(_core(1, GENESIS_HASH), key)
        jwks = TrustedKeys(KeyRing(key).jwks())
        count, started = 2000, time.perf_counter()
        for _ in range(count):
            verify_receipt(receipt, jwks)
        rate = count / (time.perf_counter() - started)
        print(f"{key.alg:5} verify_receipt: {rate:8,.0f} /s")

    with tempfile.TemporaryDirectory() as temp_dir:
        export_path = pathlib.Path(temp_dir) / "receipts.jsonl"
        jwks_path = pathlib.Path(temp_dir) / "jwks.json"
        jwks_path.write_text(json.dumps(KeyRing(rs256).jwks()))
        started = time.perf_counter()
        _write_export(export_path, rs256, args.receipts)
        print(
            f"generated {args.receipts:,} RS256 receipts in {time.perf_counter() - started:.1f} s"
        )
        billing = pathlib.Path(sys.executable).with_name("billing")
        for workers in (1, 2):
            for run in range(args.runs):
                started = time.perf_counter()
                done = subprocess.run(
                    [
                        str(billing),
                        "verify",
                        str(export_path),
                        "--jwks",
                        str(jwks_path),
                        "--workers",
                        str(workers),
                        "--progress",
                        "never",
                    ],
                    capture_output=True,
                    check=False,
                    timeout=600,
                )
                elapsed_s = time.perf_counter() - started
                status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
                print(
                    f"billing verify --workers {workers} run {run + 1}: "
                    f"{args.receipts / elapsed_s:8,.0f} receipts/s "
                    f"({elapsed_s:.2f} s wall, {status})"
                )


if __name__ == "__main__":
    main()
