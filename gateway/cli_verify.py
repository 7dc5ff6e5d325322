"""`billing verify`: check a JSON-lines export of receipts offline against a
JWKS, or (`--evidence`) a dispute evidence bundle."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

from gateway.cli_args import add_api_key_argument, add_progress_argument
from ledger.limits import evidence_bytes_max, jwks_bytes_max, log_document_bytes_max

fetch_timeout_s = 10.0
count_chunk_bytes = 1 << 20


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
        "--jwks",
        help="JWKS file or http(s) URL (e.g. .../.well-known/jwks.json); required for an "
        "export; for --evidence, the keys to trust instead of the bundle's own",
    )
    parser.add_argument(
        "--evidence",
        metavar="FILE",
        help="check a dispute evidence bundle (billing evidence, GET .../evidence) instead",
    )
    parser.add_argument(
        "--known-head",
        metavar="sha256:HEX|FILE",
        help="the latest receipt_hash you hold (or a file holding it, such as the .head "
        "file `billing export` writes): detects receipts cut off the end",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="FILE_OR_URL",
        help="a checkpoint you hold (GET /v1/log/checkpoint JSON, or its JWS; a file such as "
        "the .checkpoint file `billing export` writes, or an http(s) URL): every receipt must "
        "be in it; receipts proved against another checkpoint need the service (--url)",
    )
    parser.add_argument(
        "--url",
        help="service URL for consistency proofs (default: the --checkpoint URL's service)",
    )
    add_api_key_argument(parser, what_for="API key for --checkpoint URLs and --url")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes for hashes and signatures (default: up to 2)",
    )
    add_progress_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import crypto
    from gateway.cli import CommandError
    from gateway.progress import progress_shown, receipt_progress

    if args.evidence:
        return _verify_evidence(args.evidence, args.jwks)
    if not args.jwks:
        raise CommandError("--jwks is required to verify an export")
    if args.workers < 1:
        raise CommandError("--workers must be at least 1")
    known_head = _known_head(args.known_head)
    jwks_document = load_jwks(args.jwks)
    try:
        keys = crypto.TrustedKeys(jwks_document)
    except crypto.JWKSError as error:
        raise CommandError(f"{args.jwks} is not a usable JWKS: {error}") from None
    try:
        anchor = _anchor(args, keys) if args.checkpoint else None
    except crypto.CheckpointError as error:
        # An integrity failure (exit 1), not bad input: the checkpoint is not the log's.
        print(f"FAILED at --checkpoint {args.checkpoint}: {error.reason}: {error.detail}")
        return 1
    stream, total_lines = _open_input(args.file, count_lines=progress_shown(args.progress))
    started_s = time.perf_counter()
    with stream, receipt_progress(args.progress) as progress:
        task = progress.add_task("verified", total=total_lines)
        # A file goes by path: a large one is read in ranges by the worker processes.
        source = _lines(stream, args.file) if args.file == "-" else pathlib.Path(args.file)
        try:
            report = crypto.verify_jsonl(
                source,
                keys,
                known_head,
                workers=args.workers,
                on_verified=lambda count: progress.advance(task, count),
                anchor=anchor,
            )
        except OSError as error:
            raise CommandError(f"cannot read {args.file}: {error.strerror}") from None
    elapsed_s = time.perf_counter() - started_s
    return _print_summary(report, elapsed_s)


def _known_head(value: str | None) -> str | None:
    """The --known-head value, read from a file unless it is the hash itself."""
    from gateway.cli import CommandError

    if value is None:
        return None
    if not value.startswith("sha256:"):
        try:
            with open(value, encoding="ascii") as head_file:
                value = head_file.read(128).strip()
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"cannot read --known-head file {value}: {error}") from None
    if not _is_hash(value):
        raise CommandError("--known-head must be 'sha256:' followed by 64 lowercase hex digits")
    return value


def _is_hash(value: str) -> bool:
    digits = value.removeprefix("sha256:")
    return (
        value.startswith("sha256:") and len(digits) == 64 and set(digits) <= set("0123456789abcdef")
    )


def _fetch(source: str, what: str, bytes_max: int, token: str | None = None) -> bytes:
    """The bytes of a file or an http(s) URL (with a timeout and a size bound)."""
    import urllib.error
    import urllib.request

    from gateway.cli import CommandError

    if not source.startswith(("http://", "https://")):
        return _read_file(source, what, bytes_max)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(source, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=fetch_timeout_s) as response:
            data: bytes = response.read(bytes_max + 1)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise CommandError(f"cannot fetch {what} from {source}: {reason}") from None
    if len(data) > bytes_max:
        raise CommandError(f"{what} at {source} is larger than {bytes_max} bytes")
    return data


def _read_file(path: str, what: str, bytes_max: int) -> bytes:
    """A file's bytes, refused past bytes_max (read no further than one byte over)."""
    from gateway.cli import CommandError

    try:
        with open(path, "rb") as source_file:
            data = source_file.read(bytes_max + 1)
    except OSError as error:
        raise CommandError(f"cannot read {what} file {path}: {error.strerror or error}") from None
    if len(data) > bytes_max:
        raise CommandError(f"{what} at {path} is larger than {bytes_max} bytes")
    return data


def load_jwks(source: str) -> Any:
    import json

    from gateway.cli import CommandError

    data = _fetch(source, "JWKS", jwks_bytes_max)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise CommandError(f"JWKS at {source} is not JSON") from None


def _anchor(args: argparse.Namespace, keys: Any) -> Any:
    """The --checkpoint as a CheckpointAnchor, with consistency proofs from the service."""
    import crypto
    from gateway.cli import CommandError

    source: str = args.checkpoint
    jws = checkpoint_jws(_fetch(source, "checkpoint", log_document_bytes_max, args.api_key))
    if jws is None:
        raise CommandError(f"{source} holds neither a checkpoint JSON nor a checkpoint JWS")
    service = args.url or _service_of(source)
    consistency = _consistency_source(service, args.api_key) if service else None
    # Raises CheckpointError when the checkpoint itself does not verify.
    return crypto.CheckpointAnchor(jws, keys, consistency)


def checkpoint_jws(data: bytes) -> str | None:
    """The JWS of a checkpoint document: {"checkpoint": JWS, ...} or the bare JWS."""
    import json

    text = data.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            return None
        value = document.get("checkpoint") if isinstance(document, dict) else None
        text = value if isinstance(value, str) else ""
    return text if text.count(".") == 2 and text.isascii() and " " not in text else None


def _service_of(source: str) -> str | None:
    """The service URL behind a checkpoint URL (None for a file)."""
    import urllib.parse

    if not source.startswith(("http://", "https://")):
        return None
    url = urllib.parse.urlsplit(source)
    path = url.path
    for suffix in ("/v1/log/checkpoint", "/v1/log/checkpoint/"):
        if path.endswith(suffix):
            return f"{url.scheme}://{url.netloc}{path.removesuffix(suffix)}"
    return f"{url.scheme}://{url.netloc}"


def _consistency_source(service: str, api_key: str | None) -> Any:
    """GET /v1/log/consistency as a crypto.ConsistencySource (errors as LogError);
    a partial, not a closure, so it pickles to spawned worker processes."""
    import functools

    return functools.partial(_consistency, service, api_key)


def _consistency(service: str, api_key: str | None, first: int, second: int) -> Any:
    import json
    import urllib.parse

    import crypto
    from gateway.cli import CommandError

    query = urllib.parse.urlencode({"first": first, "second": second})
    url = f"{service.rstrip('/')}/v1/log/consistency?{query}"
    try:
        answer = json.loads(_fetch(url, "consistency proof", log_document_bytes_max, api_key))
        return crypto.ConsistencyAnswer(
            str(answer["first"]["checkpoint"]),
            str(answer["second"]["checkpoint"]),
            [bytes.fromhex(node) for node in answer["proof"]],
        )
    except CommandError as error:
        raise crypto.LogError("unavailable", str(error)) from None
    except (ValueError, KeyError, TypeError) as error:
        raise crypto.LogError("unavailable", f"{url} answered no proof: {error}") from None


def _open_input(path: str, count_lines: bool) -> tuple[IO[bytes], int | None]:
    """The input and its line count, the progress bar's total (None for stdin,
    or with no bar to show: counting read the file twice, ~1.3 us a line)."""
    from gateway.cli import CommandError

    if path == "-":
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb"), None
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by the caller's with
        if not count_lines:
            return stream, None
        total_lines = sum(
            chunk.count(b"\n") for chunk in iter(lambda: stream.read(count_chunk_bytes), b"")
        )
        stream.seek(0)
        return stream, total_lines
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
    if failure is None and report.verified == 0:
        # Nothing verified is not a verified chain (an empty or failed export).
        print("billing verify: the input holds no receipts", file=sys.stderr)
        return 1
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


def _verify_evidence(path: str, jwks_source: str | None) -> int:
    """Exit 0 if every check of the bundle holds, 1 if one fails, 2 on bad input."""
    import crypto

    data = _read_file(path, "evidence", evidence_bytes_max)
    trusted = load_jwks(jwks_source) if jwks_source else None
    report = crypto.check_evidence(data, trusted)
    for check in report.checks:
        mark = "ok  " if check.ok else "FAIL"
        print(f"{mark} {check.name}: {check.detail}")
    print("evidence holds" if report.valid else "evidence DOES NOT hold")
    return 0 if report.valid else 1
