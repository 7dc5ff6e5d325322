"""`billing restore`: rebuild an empty ledger from the archive (ledger/restore.py)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from gateway.cli_args import add_progress_argument

NOT_RESTORED = (
    "not in the archive, so not restored: API keys, customer emails and Stripe ids, "
    "entitlement quotas, plans and status (recreated as status 'restored', not "
    "chargeable), request records, webhook events, the outbox"
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "restore",
        help="rebuild an empty ledger from the archive, verifying every receipt and checkpoint",
        description=(
            "Stream the archived receipts back in log order and check each one (hash, "
            "signature in receipt mode, its customer's chain and balance); rebuild the "
            "receipt log leaf by leaf: at each archived checkpoint the rebuilt root must be "
            "the signed one, and its signature must verify against --jwks. Each checkpoint's "
            "receipts are written with that checkpoint, as signed. Receipts archived after "
            "the newest checkpoint that covers them are left out (counted). "
            "Exit 0 when restored, 1 at the first inconsistency (its reason and where), "
            "2 on bad input or a target that is not empty."
        ),
    )
    parser.add_argument(
        "--from",
        dest="archive",
        required=True,
        metavar="ARCHIVE",
        help="the archive: a directory (the embedded archive) or gs://BUCKET[/PREFIX]",
    )
    parser.add_argument(
        "--store",
        required=True,
        metavar="URL",
        help="the EMPTY target: sqlite:PATH (created) or spanner://projects/P/instances/I/"
        "databases/D (migrated, empty)",
    )
    parser.add_argument(
        "--jwks",
        required=True,
        metavar="FILE_OR_URL",
        help="the public keys you trust (the service's published JWKS, kept apart from the "
        "archive: keys that come with an altered archive prove nothing)",
    )
    parser.add_argument(
        "--tree-size",
        type=int,
        metavar="N",
        help="stop at the archived checkpoint of N leaves (accepting the loss of what the "
        "archive holds after a hole)",
    )
    add_progress_argument(parser)
    parser.set_defaults(handler=run_restore)


def run_restore(args: argparse.Namespace) -> int:
    from gateway.cli import CommandError, open_store
    from gateway.cli_verify import load_jwks
    from gateway.progress import receipt_progress
    from ledger.clock import utc_now_rfc3339
    from ledger.errors import LedgerError
    from ledger.restore import TargetNotEmpty, restore_ledger

    if args.tree_size is not None and args.tree_size < 1:
        raise CommandError("--tree-size must be a positive number of leaves")
    jwks = load_jwks(args.jwks)
    archive = _open_archive(args.archive)
    try:
        store = open_store(args.store)
        try:
            started_s = time.perf_counter()
            with receipt_progress(args.progress) as progress:
                task = progress.add_task("restoring receipts", total=None)
                report = restore_ledger(
                    archive,
                    store,
                    jwks,
                    now_rfc3339=utc_now_rfc3339(),
                    tree_size_max=args.tree_size,
                    on_receipts=lambda count: progress.advance(task, count),
                )
            elapsed_s = time.perf_counter() - started_s
        except TargetNotEmpty as error:
            raise CommandError(f"{args.store}: {error}") from None
        except ValueError as error:  # JWKSError: keys that cannot verify anything
            raise CommandError(f"--jwks {args.jwks}: not a usable JWKS: {error}") from None
        except LedgerError as error:
            raise CommandError(f"restore stopped by the store or the archive: {error}") from None
        finally:
            store.close()
    finally:
        archive.close()
    return _print_report(report, elapsed_s)


def _open_archive(source: str) -> Any:
    from pathlib import Path

    from gateway.cli import CommandError
    from ledger.errors import LedgerError
    from ledger.readers import open_archive

    if not source.startswith("gs://") and not Path(source).is_dir():
        raise CommandError(f"no archive directory at {source}")
    try:
        return open_archive(source)
    except (LedgerError, ValueError) as error:
        raise CommandError(f"cannot open the archive {source}: {error}") from None


def _print_report(report: Any, elapsed_s: float) -> int:
    rate = f", {report.receipts / elapsed_s:,.0f} receipts/s" if elapsed_s > 0 else ""
    print(
        f"restored {report.receipts:,} receipts of {report.customers:,} customers and "
        f"{report.checkpoints:,} checkpoints ({elapsed_s:.2f} s{rate})"
    )
    failure = report.failure
    if failure is not None:
        print(f"FAILED at {failure.where()}: {failure.reason}: {failure.detail}")
        print("the target holds what was restored before the failure: do not serve it")
        return 1
    head = report.head
    if head is not None:
        print(f"log head: {head.tree_size:,} leaves, root sha256:{head.root_hash.hex()}")
    if report.left_out:
        print(
            f"left out: {report.left_out:,} archived receipts after the newest checkpoint "
            "that signs them (no signature vouches for them)"
        )
    if report.checkpoints_ahead:
        print(
            f"not restored: {report.checkpoints_ahead:,} archived checkpoints after the head "
            "(their receipts are not all in the archive)"
        )
    print(NOT_RESTORED)
    return 0
