"""FileArchive beyond the contract."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from ledger import local
from ledger.errors import InvariantViolation, StoreUnavailable
from ledger.local import FileArchive
from ledger.model import StoredReceipt
from tests.contract._chain import Chain, log_checkpoint


def test_archive_survives_a_new_instance_and_stays_idempotent(tmp_path: Path) -> None:
    chain = Chain("cus_a")
    receipts = [chain.next().receipt for _ in range(3)]
    first = FileArchive(tmp_path)
    first.append(receipts[:2])
    first.close()

    second = FileArchive(tmp_path)
    second.append(receipts)  # ids already on disk are not written again
    assert second.read_customer("cus_a") == receipts
    lines = (tmp_path / "cus_a.jsonl").read_bytes().splitlines()
    assert len(lines) == 3


def test_archive_drops_a_torn_last_line_before_appending(tmp_path: Path) -> None:
    chain = Chain("cus_a")
    receipts = [chain.next().receipt for _ in range(2)]
    archive = FileArchive(tmp_path)
    archive.append(receipts[:1])
    with (tmp_path / "cus_a.jsonl").open("ab") as handle:
        handle.write(b'{"customer_id":"cus_a","se')  # a crash mid-append

    fresh = FileArchive(tmp_path)
    assert fresh.read_customer("cus_a") == receipts[:1]
    fresh.append(receipts)
    assert fresh.read_customer("cus_a") == receipts


def _receipts_of_many_customers(count: int) -> list[StoredReceipt]:
    return [Chain(f"cus_{i}").next().receipt for i in range(count)]


@pytest.mark.parametrize("syncfs", ["linux", "absent"])
def test_archive_append_over_many_customers_is_synced_and_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncfs: str
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync
    if syncfs == "absent":
        monkeypatch.setattr(local, "_syncfs", None)
    else:
        assert local._syncfs is not None, "Linux libc has syncfs"
        real_syncfs = local._syncfs
        monkeypatch.setattr(local, "_syncfs", lambda fd: synced.append("fs") or real_syncfs(fd))
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append("file") or real_fsync(fd))

    receipts = _receipts_of_many_customers(40)
    FileArchive(tmp_path).append(receipts)

    # One call for the whole pass where syncfs exists, else one per file and
    # one for the directory.
    assert synced == (["fs"] if syncfs == "linux" else ["file"] * 41)
    fresh = FileArchive(tmp_path)
    assert [fresh.read_customer(r.customer_id) for r in receipts] == [[r] for r in receipts]


def test_a_failed_sync_is_reported_and_the_next_append_writes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receipts = _receipts_of_many_customers(3)
    archive = FileArchive(tmp_path)

    def failing_sync(root: Path, fds: list[int]) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(local, "_sync", failing_sync)
    with pytest.raises(StoreUnavailable):
        archive.append(receipts)
    monkeypatch.undo()
    # The files may hold the lines or not; what the archive says it has must
    # come from the disk, and each receipt ends up there exactly once.
    archive.append(receipts)
    for receipt in receipts:
        assert FileArchive(tmp_path).read_customer(receipt.customer_id) == [receipt]
        lines = (tmp_path / f"{receipt.customer_id}.jsonl").read_bytes().splitlines()
        assert len(lines) == 1


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_failed_append_leaves_no_file_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that keeps failing must not leak a descriptor per file per pass."""
    archive = FileArchive(tmp_path)

    def failing_sync(root: Path, fds: list[int]) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(local, "_sync", failing_sync)
    open_before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            archive.append(_receipts_of_many_customers(20))
    assert len(os.listdir("/proc/self/fd")) == open_before


def test_after_a_failed_sync_the_retry_syncs_the_files_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failed pass left its lines in the files, maybe only in memory: the
    retry finds nothing new to write but must not report them durable unsynced."""
    receipts = _receipts_of_many_customers(3)
    archive = FileArchive(tmp_path)
    real_sync = local._sync
    synced: list[int] = []

    def failing_sync(root: Path, fds: list[int]) -> None:
        raise OSError(5, "Input/output error")

    def recording_sync(root: Path, fds: list[int]) -> None:
        synced.append(len(fds))
        real_sync(root, fds)

    monkeypatch.setattr(local, "_sync", failing_sync)
    with pytest.raises(StoreUnavailable):
        archive.append(receipts)
    monkeypatch.setattr(local, "_sync", recording_sync)
    archive.append(receipts)
    assert synced == [3]
    archive.append(receipts)  # synced now: a repeat writes and syncs nothing
    assert synced == [3]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_pass_over_more_customers_than_open_files_allowed_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay pass may hold up to 2,000 receipts of as many customers; with
    every file open until one sync, a pass overran the usual 1,024 open files."""
    monkeypatch.setattr(local, "archive_files_per_sync_max", 16)
    receipts = _receipts_of_many_customers(120)
    archive = FileArchive(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_now = len(list(Path("/proc/self/fd").iterdir()))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 40, hard))
    try:
        archive.append(receipts)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for receipt in receipts:
        assert archive.read_customer(receipt.customer_id) == [receipt]


def test_checkpoints_survive_a_new_instance_and_a_torn_line(tmp_path: Path) -> None:
    first = FileArchive(tmp_path)
    first.append_checkpoints([log_checkpoint(1), log_checkpoint(2)])
    first.close()
    (checkpoint_file,) = (tmp_path / local.CHECKPOINT_DIR).iterdir()
    with checkpoint_file.open("ab") as handle:
        handle.write(b'{"jws":"e30.')  # a crash mid-append

    second = FileArchive(tmp_path)
    assert second.read_checkpoints(0, 10) == [log_checkpoint(1), log_checkpoint(2)]
    second.append_checkpoints([log_checkpoint(n) for n in (1, 2, 3)])
    assert second.read_checkpoints(0, 10) == [log_checkpoint(n) for n in (1, 2, 3)]
    assert len(checkpoint_file.read_bytes().splitlines()) == 3  # on disk once each


def test_old_checkpoint_files_are_forgotten_yet_still_idempotent(tmp_path: Path) -> None:
    archive = FileArchive(tmp_path)
    far_apart = [1, 2**16, 2**17, 2**18]  # four files: more than are remembered
    archive.append_checkpoints([log_checkpoint(n) for n in far_apart])
    archive.append_checkpoints([log_checkpoint(n) for n in far_apart])  # at least once
    assert archive.read_checkpoints(0, 10) == [log_checkpoint(n) for n in far_apart]
    files = sorted((tmp_path / local.CHECKPOINT_DIR).iterdir())
    assert [len(f.read_bytes().splitlines()) for f in files] == [1, 1, 1, 1]


def test_the_ids_kept_in_memory_are_bounded_and_a_dropped_customer_stays_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "archive_customers_cached_max", 2)
    chains = [Chain(f"cus_{n}") for n in range(4)]
    archive = FileArchive(tmp_path)
    first = [chain.next().receipt for chain in chains]
    archive.append(first)
    assert list(archive._known_ids) == ["cus_2", "cus_3"]
    assert set(archive._file_names) == {"cus_2", "cus_3"}
    # cus_0 was dropped from memory: delivered again, it is read from its file.
    archive.append([first[0], chains[0].next().receipt])
    assert [r.seq for r in archive.read_customer("cus_0")] == [1, 2]
    assert len(archive._known_ids) == 2


def _rewritten(line: bytes, **changes: object) -> bytes:
    record = orjson.loads(line)
    record.update(changes)
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def _one_char(field: str, at: int) -> Callable[[bytes], bytes]:
    """The edit that changes one character of `field`'s value in a line."""

    def edit(line: bytes) -> bytes:
        text = orjson.loads(line)[field]
        return _rewritten(line, **{field: text[:at] + ("A" if text[at] != "A" else "B")
                                   + text[at + 1 :]})

    return edit


_LINE_EDITS: dict[str, tuple[Callable[[bytes], bytes], bool]] = {
    # name: (the edit, whether the line still holds the same receipt)
    "one byte of the signed receipt": (_one_char("receipt_json", 8), False),
    "one byte of an index column": (_one_char("idempotency_key", 0), False),
    "another leaf": (lambda line: _rewritten(line, log_index=7), False),
    "keys in another order": (
        lambda line: orjson.dumps(dict(reversed(orjson.loads(line).items()))),
        True,
    ),
    "base64 split by a newline": (
        lambda line: _rewritten(line, receipt_json=orjson.loads(line)["receipt_json"][:4] + "\n"
                                + orjson.loads(line)["receipt_json"][4:]),
        True,
    ),
    "an integer written as a float": (lambda line: line.replace(b'"seq":2', b'"seq":2.0'), False),
}


@pytest.mark.parametrize("edit, same", _LINE_EDITS.values(), ids=list(_LINE_EDITS))
def test_a_line_changed_on_disk_reads_back_as_changed_whatever_the_caller_knows(
    tmp_path: Path, edit: Callable[[bytes], bytes], same: bool
) -> None:
    """The audit passes the ledger's receipts as `known` and compares what
    comes back: a known receipt is never answered for a line that does not
    decode to it (and one that does still reads as that receipt)."""
    chain = Chain("cus_a")
    receipts = [chain.next().receipt for _ in range(3)]
    archive = FileArchive(tmp_path)
    archive.append(receipts)
    path = tmp_path / "cus_a.jsonl"
    lines = path.read_bytes().splitlines()
    lines[1] = edit(lines[1])
    path.write_bytes(b"\n".join(lines) + b"\n")

    try:
        plain: list[StoredReceipt] | type[Exception] = archive.read_customer("cus_a")
    except InvariantViolation:
        plain = InvariantViolation
    if plain is InvariantViolation:
        with pytest.raises(InvariantViolation):
            archive.read_customer("cus_a", receipts)
        return
    read = archive.read_customer("cus_a", receipts)
    assert read == plain
    assert (read[1] == receipts[1]) is same
    assert read[0] is receipts[0]  # the line not changed was not decoded


def test_a_later_line_for_a_known_receipt_is_the_one_read(tmp_path: Path) -> None:
    """Two lines with one receipt_id: the last one counts, known or not."""
    chain = Chain("cus_a")
    receipts = [chain.next().receipt for _ in range(2)]
    archive = FileArchive(tmp_path)
    archive.append(receipts)
    path = tmp_path / "cus_a.jsonl"
    first = path.read_bytes().splitlines()[0]
    with path.open("ab") as handle:
        handle.write(_rewritten(first, receipt_json="e30=") + b"\n")  # b"{}"

    read = archive.read_customer("cus_a", receipts)

    assert [r.receipt_json for r in read] == [b"{}", receipts[1].receipt_json]
