"""Verify a JSON-lines export of receipts, fast, on every core.

A large regular file (`split_bytes_min`, 8 MiB, or more) is split into byte
ranges that worker processes read, check and link themselves, answering one
small summary each (crypto._jsonl_ranges): nothing per line crosses a
process boundary, so both receipt forms use every worker. On one quiet
2-CPU machine (`loadtest.bench_log_audit`, 10,000 receipts) that took the
receipt form from 45,954 to 59,446 receipts/s (36 to 29 us of CPU each, no
shipping) and the checkpoint form from 75,461 to 108,116 (12 to 16-19 us:
two forked workers cost ~20-30 ms of CPU whatever the size; at 50,000
receipts 75,440 to 135,051 receipts/s, 13.2 to 14.6 us).

Other input (stdin, a small file) is read here: batches of lines go to
worker processes (parse + JCS + hash + signature) while the link checks
stay here, in line order. Lines cheaper to check than to ship (receipts
without a signature of their own) stay here (`_worth_shipping`). Threads do
not help: parsing and the field checks hold the GIL for about as long as the
signature check runs without it. Memory is bounded by the batches in flight
(or one line per worker), not the file.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import Final

from crypto._anchor import CheckpointAnchor, anchored
from crypto._chain import ChainReport, Checked, check_known_head, checked_line, walk_chain
from crypto._check import Link
from crypto._jsonl_ranges import Verification, file_ranges, verify_ranges, worker_context
from crypto._jws import VerificationResult
from crypto._trusted import TrustedKeys, trusted_keys

batch_lines_max: Final = 1024
batches_ahead_per_worker: Final = 3

# A failure travels between processes as (reason, detail, receipt_id); an ok
# receipt as its Link. Smaller to pickle than the dataclasses.
_Wire = Link | tuple[str, str, str | None]

_worker_keys: TrustedKeys | None = None  # set once per worker process


def _init_worker(jwks_document: dict[str, object]) -> None:
    global _worker_keys
    _worker_keys = TrustedKeys(jwks_document)


def _to_wire(checked: Checked) -> _Wire:
    result, link, receipt_id = checked
    if link is not None:
        return link
    return str(result.reason), result.detail, receipt_id


def _from_wire(wire: _Wire) -> Checked:
    if isinstance(wire, Link):
        return VerificationResult(True), wire, None
    reason, detail, receipt_id = wire
    return VerificationResult(False, reason, detail), None, receipt_id


def _worth_shipping(lines: list[bytes]) -> bool:
    """Whether most lines carry their own signature, the one check that costs more
    than shipping a line to a worker and its answer back (~6 us of CPU: ~4 here,
    ~2 there). Receipt form (an RSA verify each, ~25 us a line) gains from two
    workers; checkpoint form (~12 us, its inclusion path mostly proven already)
    ran 1.7x slower in a pool than here (`loadtest.bench_log_audit`). Timing the
    first lines instead misjudged: their CPU time doubled on a busy machine.
    A wrong guess costs time, never a verdict."""
    signed = sum(1 for line in lines if b'"signature"' in line)
    return 2 * signed > len(lines)


def _check_batch(lines: list[bytes]) -> list[_Wire]:
    keys = _worker_keys
    if keys is None:
        raise RuntimeError("worker process started without its JWKS")
    return [_to_wire(checked_line(line, keys)) for line in lines]


def _checked_lines(
    lines: Iterator[bytes], keys: TrustedKeys, workers: int
) -> Generator[Checked, None, None]:
    first_batch = list(itertools.islice(lines, batch_lines_max))
    if workers <= 1 or len(first_batch) < batch_lines_max or not _worth_shipping(first_batch):
        # Small input, or lines too cheap to ship: a pool costs more than it saves.
        for line in itertools.chain(first_batch, lines):
            yield checked_line(line, keys)
        return
    executor = concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=worker_context(),
        initializer=_init_worker,
        initargs=(keys.document,),
    )
    pending: collections.deque[concurrent.futures.Future[list[_Wire]]] = collections.deque()
    batches = itertools.chain(
        [first_batch], iter(lambda: list(itertools.islice(lines, batch_lines_max)), [])
    )
    try:
        while True:
            for batch in itertools.islice(
                batches, workers * batches_ahead_per_worker - len(pending)
            ):
                pending.append(executor.submit(_check_batch, batch))
            if not pending:
                return
            for wire in pending.popleft().result():
                yield _from_wire(wire)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def verify_jsonl(
    source: Iterable[bytes] | os.PathLike[str],
    jwks: Mapping[str, object] | TrustedKeys,
    known_head: str | None = None,
    *,
    workers: int = 1,
    on_verified: Callable[[int], None] | None = None,
    anchor: CheckpointAnchor | None = None,
) -> ChainReport:
    """verify_chain over JSON lines (one receipt object per line), in parallel.

    `source`: the lines, or the path of a file of them; a regular file of
    `split_bytes_min` or more is verified in byte ranges by the workers
    themselves (crypto._jsonl_ranges), with the same verdict. A failure's
    index is the 0-based line index; a line that is not JSON fails with
    reason "not_json". Stops reading at the first failure. `on_verified(n)`:
    n more receipts verified and linked, for a progress bar (lines read run
    ahead of them by the batches in flight; in ranges, called as each range
    joins). With `anchor`, every receipt must
    also be in the anchor's checkpoint (crypto._anchor). OSError when the
    file cannot be read.
    """
    check_known_head(known_head)
    run = Verification(trusted_keys(jwks), known_head, workers, on_verified, anchor)
    if not isinstance(source, os.PathLike):
        return _verify_lines(iter(source), run)
    with open(source, "rb") as stream:
        ranges = file_ranges(stream, workers)
        if len(ranges) < 2:
            return _verify_lines(stream, run)
    return verify_ranges(os.fspath(source), ranges, run)


def _verify_lines(lines: Iterator[bytes], run: Verification) -> ChainReport:
    checked = _checked_lines(lines, run.keys, run.workers)
    try:
        stream: Iterator[Checked] = checked
        if run.anchor is not None:
            stream = anchored(stream, run.anchor)
        if run.on_verified is not None:
            stream = _reporting(stream, run.on_verified)
        return walk_chain(stream, run.known_head)
    finally:
        checked.close()


def _reporting(
    checked: Iterator[Checked], on_verified: Callable[[int], None]
) -> Generator[Checked, None, None]:
    unreported = 0
    for item in checked:
        yield item
        # walk_chain asked for the next one: this one verified and linked.
        unreported += 1
        if unreported == batch_lines_max:
            on_verified(unreported)
            unreported = 0
    if unreported:
        on_verified(unreported)
