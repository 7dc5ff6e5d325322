"""`billing verify`: check a JSON-lines export of receipts offline against a JWKS."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

from ledger.limits import jwks_bytes_max

jwks_fetch_timeout_s = 10.0
progress_interval_s = 0.2
progress_bar_chars = 30


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="verify signed, hash-chained receipts (JSON lines) against a JWKS, offline",
        description=(
            "Verify every receipt's hash and signature and the chain linking them. "
            "Exit 0 if all verify, 1 on the first failure, 2 on bad input."
        ),
    )
    parser.add_argument(
        "file", nargs="?", default="-", help="JSON-lines export, one receipt per line (- = stdin)"
    )
    parser.add_argument(
        "--jwks", required=True, help="JWKS file or http(s) URL (e.g. .../.well-known/jwks.json)"
    )
    parser.add_argument(
        "--known-head",
        metavar="sha256:HEX",
        help="the latest receipt_hash you hold: detects receipts cut off the end",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes for hashes and signatures (default: up to 2)",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr (auto: when stderr is a terminal)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import crypto
    from gateway.cli import CommandError

    if args.workers < 1:
        raise CommandError("--workers must be at least 1")
    known_head = args.known_head
    if known_head is not None and not _is_hash(known_head):
        raise CommandError("--known-head must be 'sha256:' followed by 64 lowercase hex digits")
    jwks_document = _load_jwks(args.jwks)
    try:
        keys = crypto.TrustedKeys(jwks_document)
    except crypto.JWKSError as error:
        raise CommandError(f"{args.jwks} is not a usable JWKS: {error}") from None
    stream, total_bytes = _open_input(args.file)
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    progress = _Progress(total_bytes if show else None, enabled=show)
    started_s = time.perf_counter()
    try:
        with stream:
            report = crypto.verify_jsonl(
                progress.track(_lines(stream, args.file)), keys, known_head, workers=args.workers
            )
    finally:
        progress.close()
    elapsed_s = time.perf_counter() - started_s
    return _print_summary(report, elapsed_s)


def _is_hash(value: str) -> bool:
    digits = value.removeprefix("sha256:")
    return (
        value.startswith("sha256:") and len(digits) == 64 and set(digits) <= set("0123456789abcdef")
    )


def _load_jwks(source: str) -> Any:
    import json

    from gateway.cli import CommandError

    if source.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(source, timeout=jwks_fetch_timeout_s) as response:
                data = response.read(jwks_bytes_max + 1)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise CommandError(f"cannot fetch JWKS from {source}: {reason}") from None
    else:
        try:
            with open(source, "rb") as jwks_file:
                data = jwks_file.read(jwks_bytes_max + 1)
        except OSError as error:
            raise CommandError(f"cannot read JWKS file {source}: {error.strerror}") from None
    if len(data) > jwks_bytes_max:
        raise CommandError(f"JWKS at {source} is larger than {jwks_bytes_max} bytes")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise CommandError(f"JWKS at {source} is not JSON") from None


def _open_input(path: str) -> tuple[IO[bytes], int | None]:
    from gateway.cli import CommandError

    if path == "-":
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb"), None
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by the caller's with
        return stream, os.fstat(stream.fileno()).st_size
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}") from None


def _lines(stream: IO[bytes], name: str) -> Iterator[bytes]:
    from gateway.cli import CommandError

    try:
        yield from stream
    except OSError as error:
        raise CommandError(f"cannot read {name}: {error.strerror}") from None


def _print_summary(report: Any, elapsed_s: float) -> int:
    from gateway.cli import CommandError

    rate = f"{report.verified / elapsed_s:,.0f} receipts/s" if elapsed_s > 0 else ""
    span = ""
    if report.verified:
        span = (
            f" for customer {report.customer_id}, seq {report.first_seq}..{report.last_seq},"
            f" head {report.head_hash}"
        )
    failure = report.failure
    if failure is not None and failure.reason == "not_json":
        raise CommandError(f"line {failure.index + 1}: {failure.detail}")
    print(f"verified {report.verified:,} receipts{span} ({elapsed_s:.2f} s, {rate})")
    if failure is None:
        if report.verified and not report.starts_at_genesis:
            print("note: the export does not start at the genesis receipt (seq 1)")
        return 0
    where = f"line {failure.index + 1}"
    if failure.reason == "truncated":
        where = f"after line {failure.index}"
    receipt = f" (receipt {failure.receipt_id})" if failure.receipt_id else ""
    print(f"FAILED at {where}{receipt}: {failure.reason}: {failure.detail}")
    return 1


class _Progress:
    """A small stderr progress bar driven by bytes read (no dependency)."""

    def __init__(self, total_bytes: int | None, *, enabled: bool) -> None:
        self.total_bytes = total_bytes
        self.enabled = enabled
        self.done_bytes = 0
        self.lines = 0
        self.started_s = time.monotonic()
        self.shown_s = 0.0

    def track(self, lines: Iterator[bytes]) -> Iterator[bytes]:
        for line in lines:
            self.done_bytes += len(line)
            self.lines += 1
            if self.enabled and self.lines % 1024 == 0:
                self._draw()
            yield line

    def _draw(self) -> None:
        now_s = time.monotonic()
        if now_s - self.shown_s < progress_interval_s:
            return
        self.shown_s = now_s
        rate = self.lines / max(now_s - self.started_s, 1e-9)
        if self.total_bytes:
            fraction = min(self.done_bytes / self.total_bytes, 1.0)
            filled = int(fraction * progress_bar_chars)
            bar = "#" * filled + "." * (progress_bar_chars - filled)
            text = f"\r[{bar}] {fraction:4.0%} {self.lines:,} lines {rate:,.0f}/s"
        else:
            text = f"\r{self.lines:,} lines {rate:,.0f}/s"
        sys.stderr.write(text)
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.shown_s:
            sys.stderr.write("\n")
            sys.stderr.flush()
