"""A JSON-lines export FILE verified in byte ranges, by worker processes that read it.

Lines from a pipe go to workers from the parent (crypto._jsonl): worth it
for receipts with an RSA signature each, not for checkpoint-form receipts,
which cost about what shipping one costs (~6 us of CPU). A regular file
needs no shipping: each worker opens it, reads only its range (cut on line
boundaries), checks every receipt and links them as `walk_chain` does, and
answers a `ChainPart` of a few hundred bytes. The parent joins the parts in
file order with the same `ChainWalk` (the first failure in file order wins;
the ranges after it stop early and are not read), so the verdict is the one
the lines give read one by one, line index and reason included.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import stat
import threading
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event
from typing import IO, Final, NamedTuple

from crypto._anchor import CheckpointAnchor, anchored
from crypto._chain import ChainPart, ChainReport, ChainWalk, Checked, checked_line
from crypto._trusted import TrustedKeys

# Ranges per worker: more than one, so a worker that falls behind (a busy
# machine) leaves the others work, the progress bar moves more than once,
# and a failure early in the file stops the rest sooner.
ranges_per_worker: Final = 4
# Smaller files are read line by line (crypto._jsonl): starting two forked
# workers costs ~20 ms of CPU and ~10 ms of wall time, and a checkpoint-form
# file of 8 MiB (~3,400 lines, ~45 ms in one process) is where ranges start
# to win (40 vs 44 ms; at 2 MiB 19 vs 11 ms). Receipt-form files below it
# still get worker processes, ~25% slower than ranges (loadtest/README.md).
split_bytes_min: Final = 8 << 20
# No range smaller (several per worker otherwise, up to `ranges_per_worker`).
range_bytes_min: Final = 1 << 20
# A worker looks whether an earlier range failed (and it is not needed) this often.
stop_check_lines: Final = 1024


class Verification(NamedTuple):
    """One `verify_jsonl` call's settings, whichever way its lines are read."""

    keys: TrustedKeys
    known_head: str | None
    workers: int
    on_verified: Callable[[int], None] | None
    anchor: CheckpointAnchor | None


def worker_context() -> multiprocessing.context.BaseContext:
    # fork is cheap and safe while this is the only thread; otherwise spawn.
    return multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")


class _RangeWorker(NamedTuple):
    keys: TrustedKeys
    anchor: CheckpointAnchor | None
    known_head: str | None
    stop: Event


_worker: _RangeWorker | None = None  # set once per worker process


def _init_worker(worker: _RangeWorker) -> None:
    global _worker
    _worker = worker


def file_ranges(stream: IO[bytes], workers: int) -> list[tuple[int, int | None]]:
    """[start, end) byte offsets, each cut just after a newline; the last runs
    to the end of the file as it is when read (None), as reading it whole would.
    Fewer than two unless there are workers to share them and the file is
    regular and large enough (smaller inputs cost more to split than they gain)."""
    if workers < 2:
        return []
    status = os.fstat(stream.fileno())
    if not stat.S_ISREG(status.st_mode):
        return []
    size = status.st_size
    if size < split_bytes_min:
        return []
    count = min(workers * ranges_per_worker, size // range_bytes_min)
    starts = [0]
    for cut in (size * k // count for k in range(1, count)):
        # From the byte before the cut: a cut that falls on a line start stays there.
        stream.seek(max(cut, starts[-1] + 1) - 1)
        stream.readline()
        if stream.tell() < size:
            starts.append(stream.tell())
    stream.seek(0)
    ends: list[int | None] = [*starts[1:], None]
    return list(zip(starts, ends, strict=True))


def verify_ranges(
    path: str, ranges: list[tuple[int, int | None]], run: Verification
) -> ChainReport:
    context = worker_context()
    stop = context.Event()
    walk = ChainWalk(run.known_head)
    with concurrent.futures.ProcessPoolExecutor(
        min(run.workers, len(ranges)),
        mp_context=context,
        initializer=_init_worker,
        initargs=(_RangeWorker(run.keys, run.anchor, run.known_head, stop),),
    ) as executor:
        parts = [executor.submit(_verify_range, path, start, end) for start, end in ranges]
        try:
            for future in parts:
                # No timeout: a range takes as long as its size; a worker that
                # dies raises BrokenProcessPool here.
                part = future.result()
                if part is None:
                    raise RuntimeError("a range stopped before the verdict was known")
                verified_before = walk.verified  # every line before this range verified
                failure = walk.add_part(verified_before, part)
                if run.on_verified is not None and walk.verified > verified_before:
                    run.on_verified(walk.verified - verified_before)
                if failure is not None:
                    return walk.report(failure)
            return walk.end()
        finally:
            # The verdict is known (or an error raised): later ranges are not needed.
            stop.set()
            for future in parts:
                future.cancel()


def _verify_range(path: str, start: int, end: int | None) -> ChainPart | None:
    """In a worker: the receipts of [start, end) checked and linked, as a ChainPart;
    None if stopped because the verdict no longer needs it."""
    worker = _worker
    if worker is None:
        raise RuntimeError("worker process started without its keys")
    walk = ChainWalk(worker.known_head)
    with open(path, "rb") as stream:
        stream.seek(start)
        checked: Iterator[Checked] = (
            checked_line(line, worker.keys) for line in _range_lines(stream, start, end)
        )
        if worker.anchor is not None:
            checked = anchored(checked, worker.anchor)
        for index, item in enumerate(checked):
            failure = walk.add(index, item)
            if failure is not None:
                return walk.part(failure)
            if index % stop_check_lines == 0 and worker.stop.is_set():
                return None  # an earlier range failed: this one will not be read
    return walk.part(None)


def _range_lines(stream: IO[bytes], start: int, end: int | None) -> Iterator[bytes]:
    """The lines from `start` (a line start) to `end` (a line start, or the file's end)."""
    remaining_bytes = None if end is None else end - start
    for line in stream:
        yield line
        if remaining_bytes is not None:
            remaining_bytes -= len(line)
            if remaining_bytes <= 0:
                return
