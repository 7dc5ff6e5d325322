"""`billing export`: a customer's whole receipt chain, as JSON lines, over HTTP.

Reads the head first (GET /v1/balance: seq and last_receipt_hash), then pages
through GET /v1/receipts until that seq, and writes the head next to the
export, where `billing verify --known-head` reads it: a page cut short, or a
list that stops early, then fails verification instead of passing unseen.
The log head read right after the balance (so it covers every receipt up to
that seq) is written next to it too, and every page is proved against that
one checkpoint: `billing verify --checkpoint OUTPUT.checkpoint` then checks
the whole export against it offline.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import IO, Any

from gateway.cli_args import (
    add_api_key_argument,
    add_progress_argument,
    add_service_url_argument,
)

export_page_receipts = 1000  # the API's receipts_page_max


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a customer's whole receipt chain as JSON lines, with its head",
        description=(
            "Page through the customer's receipts with its API key and write one receipt "
            "per line. The head seen at the start is printed and written to OUTPUT.head, "
            "for `billing verify OUTPUT --known-head OUTPUT.head`, and the log checkpoint "
            "every receipt is proved against to OUTPUT.checkpoint (for --checkpoint)."
        ),
    )
    parser.add_argument("output", help="JSON-lines file to write (OUTPUT.head gets the head)")
    add_service_url_argument(parser)
    add_api_key_argument(parser, what_for="the customer's API key")
    add_progress_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from gateway.cli import CommandError
    from gateway.progress import receipt_progress

    if not args.api_key:
        raise CommandError("no API key: pass --api-key or set BILLING_API_KEY")
    balance = _get(args, "/v1/balance")
    head_seq, head = int(balance["seq"]), str(balance["last_receipt_hash"])
    # Read after the balance: every receipt up to head_seq is under it.
    checkpoint = _get(args, "/v1/log/checkpoint") if head_seq else None
    tree_size = None if checkpoint is None else int(checkpoint["tree_size"])
    try:
        with open(args.output, "wb") as out, receipt_progress(args.progress) as progress:
            task = progress.add_task("exported", total=head_seq)
            advance = lambda n: progress.advance(task, n)  # noqa: E731
            last_seq = _write_pages(args, out, head_seq, tree_size, advance)
        with open(args.output + ".head", "w", encoding="ascii") as head_file:
            head_file.write(head + "\n")
        if checkpoint is not None:
            with open(args.output + ".checkpoint", "w", encoding="utf-8") as checkpoint_file:
                json.dump(checkpoint, checkpoint_file, indent=2)
                checkpoint_file.write("\n")
    except OSError as error:
        raise CommandError(f"cannot write {args.output}: {error.strerror}") from None
    if last_seq < head_seq:
        print(
            f"billing export: the list ended at seq {last_seq} before the head's seq {head_seq}",
            file=sys.stderr,
        )
        return 1
    print(f"exported {head_seq:,} receipts of customer {balance['customer_id']} to {args.output}")
    print(f"head {head} (seq {head_seq}), written to {args.output}.head")
    if tree_size is not None:
        print(f"log checkpoint of {tree_size:,} leaves, written to {args.output}.checkpoint")
    return 0


def _write_pages(
    args: argparse.Namespace, out: IO[bytes], head_seq: int, tree_size: int | None, advance: Any
) -> int:
    """Write every receipt up to seq `head_seq`, proved against the checkpoint
    of `tree_size` leaves; returns the last seq written."""
    after_seq = 0
    while after_seq < head_seq:
        params: dict[str, int] = {"after_seq": after_seq, "limit": export_page_receipts}
        if tree_size is not None:
            params["tree_size"] = tree_size
        query = urllib.parse.urlencode(params)
        page = _get(args, f"/v1/receipts?{query}")
        receipts = [r for r in page["data"] if int(r["seq"]) <= head_seq]
        for receipt in receipts:
            out.write(json.dumps(receipt, ensure_ascii=False).encode() + b"\n")
        advance(len(receipts))
        if not page["data"] or not page["has_more"]:
            return int(receipts[-1]["seq"]) if receipts else after_seq
        after_seq = int(page["next_after_seq"])
    return after_seq


def _get(args: argparse.Namespace, path: str) -> Any:
    from gateway.cli_admin import http_json

    return http_json(args.url, args.api_key, "GET", path)
