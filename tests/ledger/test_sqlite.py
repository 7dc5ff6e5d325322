"""SqliteLedger beyond the contract: durability, one process, threads, schema."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ledger._sqlite_schema import MIGRATIONS
from ledger.errors import AlreadyExists, StoreLocked, StoreUnavailable
from ledger.sqlite import SqliteLedger
from tests.contract._chain import Chain, customer, entitlement, outbox_message

SUBPROCESS_TIMEOUT_S = 60


def _seeded(path: Path) -> tuple[SqliteLedger, Chain]:
    store = SqliteLedger.open(path)
    store.create_customer(customer("cus_a"))
    store.put_entitlement(entitlement("cus_a", quota_minor=None))
    return store, Chain("cus_a")


def test_everything_committed_is_there_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    store, chain = _seeded(path)
    store.commit_batch([chain.next(), chain.next()], [outbox_message("m1", "cus_a")])
    store.close()

    reopened = SqliteLedger.open(path)
    try:
        assert reopened.get_account_head("cus_a") == (2, chain.last_hash, 200)
        assert reopened.list_receipts("cus_a", 0, 10) == chain.made
        assert reopened.get_entitlements("cus_a")["usage"].used_minor == 200
        assert reopened.outbox_backlog() == {"receipts": 1}
        reopened.commit_batch([chain.next()], [])  # the chain continues
        assert reopened.get_account_head("cus_a") == (3, chain.last_hash, 300)
    finally:
        reopened.close()


def test_the_file_is_durable_wal_with_full_sync(tmp_path: Path) -> None:
    store, _ = _seeded(tmp_path / "ledger.sqlite3")
    try:
        assert store._writer is not None
        assert store._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()


def test_a_second_process_gets_store_locked(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    store, _ = _seeded(path)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from ledger.errors import StoreLocked\n"
        "from ledger.sqlite import SqliteLedger\n"
        "try:\n"
        "    SqliteLedger.open(Path(sys.argv[1]))\n"
        "except StoreLocked as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    finally:
        store.close()
    assert result.returncode == 3, result.stderr
    assert str(path) in result.stdout
    assert "another process" in result.stdout


def test_one_open_store_per_file_and_close_releases_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    store = SqliteLedger.open(path)
    with pytest.raises(StoreLocked, match=r"ledger\.sqlite3"):
        SqliteLedger.open(path)
    store.close()
    store.close()  # idempotent
    SqliteLedger.open(path).close()


def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store, chain = _seeded(tmp_path / "ledger.sqlite3")
    store.get_customer("cus_a")  # this thread has a reader now
    store.close()
    with pytest.raises(StoreUnavailable):
        store.get_customer("cus_a")
    with pytest.raises(StoreUnavailable):
        store.commit_batch([chain.next()], [])
    with pytest.raises(StoreUnavailable):
        store.check_writable()


def test_reopening_migrates_idempotently_and_stores_no_float(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    SqliteLedger.open(path).close()
    SqliteLedger.open(path).close()
    conn = sqlite3.connect(path)
    try:
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        tables = [row[0] for row in conn.execute(query)]
        types = {
            row[2].upper()
            for table in tables
            for row in conn.execute(f"PRAGMA table_info({table})")
        }
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    assert {"customers", "api_keys", "accounts", "entitlements", "receipts"} <= set(tables)
    assert {"signing_keys", "webhook_events", "outbox"} <= set(tables)
    assert {"log_tiles", "log_checkpoints"} <= set(tables)
    assert types <= {"TEXT", "INTEGER", "BLOB"}
    assert version == len(MIGRATIONS)


def test_readers_on_many_threads_while_one_thread_commits(tmp_path: Path) -> None:
    store, chain = _seeded(tmp_path / "ledger.sqlite3")
    errors: list[BaseException] = []
    stop = threading.Event()
    seen_heads: list[int] = []

    def read() -> None:
        try:
            while not stop.is_set():
                head = store.get_account_head("cus_a")
                assert head is not None
                receipts = store.list_receipts("cus_a", 0, 1000)
                # A reader sees whole commits: never a head ahead of the receipts.
                assert len(receipts) >= head[0]
                seen_heads.append(head[0])
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    try:
        for _ in range(50):
            store.commit_batch([chain.next(), chain.next()], [])
    finally:
        stop.set()
        for thread in readers:
            thread.join(timeout=10)
    try:
        assert not errors, errors
        assert seen_heads and max(seen_heads) <= 100
        assert store.get_account_head("cus_a") == (100, chain.last_hash, 10_000)
    finally:
        store.close()


def _open_files_under(directory: Path) -> int:
    """File descriptors of this process open on files in `directory`."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if Path(os.readlink(fd)).parent == directory:
                count += 1
        except OSError:
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_many_live_reader_threads_share_a_few_connections(tmp_path: Path) -> None:
    """A thousand live account actors each read now and then; each holding its
    own connection (two files: database and WAL) ran into the open-files limit
    and made every new thread's first read slower than the last."""
    store, chain = _seeded(tmp_path / "ledger.sqlite3")
    store.commit_batch([chain.next()], [])
    threads_n = 200
    all_read = threading.Barrier(threads_n + 1)
    release = threading.Event()
    one_at_a_time = threading.Lock()
    heads: list[tuple[int, str, int] | None] = []

    def account_thread() -> None:
        with one_at_a_time:
            heads.append(store.get_account_head("cus_a"))
        all_read.wait(timeout=30)
        release.wait(timeout=30)  # stays alive, like an idle account actor

    threads = [threading.Thread(target=account_thread) for _ in range(threads_n)]
    try:
        baseline = _open_files_under(tmp_path)
        for thread in threads:
            thread.start()
        all_read.wait(timeout=30)
        assert heads == [(1, chain.last_hash, 100)] * threads_n
        assert _open_files_under(tmp_path) <= baseline + 4
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=10)
        store.close()
    assert _open_files_under(tmp_path) == 0


def test_check_writable_passes_on_an_open_store(tmp_path: Path) -> None:
    store = SqliteLedger.open(tmp_path / "ledger.sqlite3")
    try:
        store.check_writable()
    finally:
        store.close()


def test_a_failed_write_leaves_the_store_usable(tmp_path: Path) -> None:
    store, chain = _seeded(tmp_path / "ledger.sqlite3")
    try:
        with pytest.raises(AlreadyExists):
            store.create_customer(customer("cus_a"))
        store.commit_batch([chain.next()], [])
        assert store.get_account_head("cus_a") == (1, chain.last_hash, 100)
    finally:
        store.close()


def test_a_read_only_reader_in_another_process_sees_commits_and_cannot_write(
    tmp_path: Path,
) -> None:
    """The background audit's process reads the file the gateway serves: it
    must not need the one-process lock, must see the last commit (WAL), and
    must be refused any write."""
    path = tmp_path / "ledger.sqlite3"
    store, chain = _seeded(path)
    store.commit_batch([chain.next(), chain.next()], [])
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from ledger.errors import StoreUnavailable\n"
        "from ledger.sqlite import SqliteLedger\n"
        "reader = SqliteLedger.open_read_only(Path(sys.argv[1]))\n"
        "print('head', reader.get_account_head('cus_a'))\n"
        "try:\n"
        "    reader.check_writable()\n"
        "except StoreUnavailable as exc:\n"
        "    print('refused', exc)\n"
        "reader.close()\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=False,
        )
        store.commit_batch([chain.next()], [])  # the writer still writes
    finally:
        store.close()
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(("head", "refused"))]
    assert lines[0] == "head " + str((2, chain.made[1].receipt_hash, 200))
    assert lines[1].startswith("refused") and "read-only" in lines[1]


def test_a_read_only_open_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        SqliteLedger.open_read_only(tmp_path / "absent.sqlite3")
    assert not (tmp_path / "absent.sqlite3").exists()
