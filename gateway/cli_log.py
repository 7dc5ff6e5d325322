"""`billing log audit`: the log monitor, on the store itself (see ledger/log_audit.py)."""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path
from typing import Any, cast

from gateway.cli_args import add_progress_argument
from gateway.environment import cli_default

STATE_DIR_NAME = "vexa-billing"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "log", help="the receipt log: audit a store's whole log (monitor)"
    )
    commands = parser.add_subparsers(dest="log_command", metavar="LOG_COMMAND", required=True)
    audit = commands.add_parser(
        "audit",
        help="rebuild the receipt log from a store and check every checkpoint, tile and chain",
        description=(
            "Read the whole receipt log from the store: check every stored checkpoint's "
            "signature, rebuild the Merkle tree from the receipts in log order (each "
            "checkpoint's root must be the rebuilt one, so each extends the one before), "
            "compare the stored tiles, and re-check every customer's chain. The last "
            "verified checkpoint is remembered in --state; a later log that is smaller "
            "(rollback) or has another root at that size (fork) fails. "
            "Exit 0 if all holds, 1 on the first failure, 2 on bad input."
        ),
    )
    audit.add_argument(
        "--store",
        required=True,
        metavar="URL",
        help="sqlite:PATH or spanner://projects/P/instances/I/databases/D",
    )
    audit.add_argument(
        "--jwks",
        metavar="FILE_OR_URL",
        help="trust these keys (default: the signing keys recorded in the store)",
    )
    audit.add_argument(
        "--state",
        metavar="FILE",
        help="the last verified checkpoint, read and updated (default: one file per log "
        "origin in the user's data directory)",
    )
    add_progress_argument(audit)
    audit.set_defaults(handler=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    from gateway.progress import receipt_progress
    from ledger import LogReader
    from ledger.log_audit import audit_log, log_origin

    store = _open(args.store)
    reader = cast(LogReader, store)  # every store adapter is also the log's reader
    try:
        keys = _trusted_keys(args.jwks, store)
        state_path = Path(args.state) if args.state else _default_state(log_origin(reader, keys))
        last = _read_state(state_path)
        head = reader.log_head()
        started_s = time.perf_counter()
        with receipt_progress(args.progress) as progress:
            task = progress.add_task("leaves", total=0 if head is None else head.tree_size)
            report = audit_log(
                reader, keys, last, on_leaves=lambda count: progress.advance(task, count)
            )
        elapsed_s = time.perf_counter() - started_s
    finally:
        store.close()
    return _print_report(report, state_path, elapsed_s)


def _open(url: str) -> Any:
    from gateway.cli import CommandError, open_store

    if url.startswith("sqlite:") and not Path(url.removeprefix("sqlite:")).is_file():
        raise CommandError(f"no ledger file at {url.removeprefix('sqlite:')}")  # not a new one
    return open_store(url)


def _trusted_keys(jwks_source: str | None, store: Any) -> Any:
    import crypto
    from gateway.cli import CommandError
    from gateway.cli_verify import load_jwks
    from ledger.log_audit import stored_jwks

    document = load_jwks(jwks_source) if jwks_source else stored_jwks(store.signing_keys())
    try:
        return crypto.TrustedKeys(document)
    except crypto.JWKSError as error:
        where = jwks_source or "the store's signing keys"
        raise CommandError(f"{where}: not a usable JWKS: {error}") from None


def _default_state(origin: str | None) -> Path:
    """One state file per log origin, in the user's data directory (XDG)."""
    base = cli_default("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    name = hashlib.sha256((origin or "").encode()).hexdigest()[:16]
    return Path(base) / STATE_DIR_NAME / "log-audit" / f"{name}.json"


def _read_state(path: Path) -> Any:
    from gateway.cli import CommandError
    from ledger.log_audit import AuditState

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise CommandError(f"cannot read --state {path}: {error.strerror}") from None
    try:
        return AuditState.from_json(data)
    except ValueError as error:
        raise CommandError(f"--state {path}: {error}") from None


def _write_state(path: Path, data: bytes) -> None:
    """Atomically: a crash leaves the old state or the new, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as state_file:
        state_file.write(data)
        state_file.flush()
        os.fsync(state_file.fileno())
    os.replace(temporary, path)


def _print_report(report: Any, state_path: Path, elapsed_s: float) -> int:
    from gateway.cli import CommandError

    rate = f"{report.leaves / elapsed_s:,.0f} leaves/s" if elapsed_s > 0 else ""
    print(
        f"audited {report.leaves:,} leaves, {report.checkpoints:,} checkpoints, "
        f"{report.customers:,} customers ({elapsed_s:.2f} s, {rate})"
    )
    failure = report.failure
    if failure is not None:
        print(f"FAILED at {failure.where()}: {failure.reason}: {failure.detail}")
        return 1
    state = report.state()
    if state is None:
        print("the log is empty: nothing to remember")
        return 0
    try:
        _write_state(state_path, state.to_json())
    except OSError as error:
        raise CommandError(f"cannot write --state {state_path}: {error.strerror}") from None
    print(f"ok: checkpoint of {state.tree_size:,} leaves remembered in {state_path}")
    return 0
