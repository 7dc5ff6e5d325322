"""execute_values: a batch goes in as few multi-row statements as the variable
limit allows, and reports the rows it changed."""

from __future__ import annotations

import sqlite3

from ledger._sqlite_rows import execute_values


def _table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, s TEXT)")
    return conn


def test_rows_over_the_variable_limit_are_split_and_all_written() -> None:
    conn = _table()
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 10)  # 3 rows of 3 per statement
    rows = [(f"k{i:02d}", i, f"s{i}") for i in range(25)]
    assert execute_values(conn, "INSERT INTO t (k, n, s)", rows) == 25
    assert conn.execute("SELECT k, n, s FROM t ORDER BY k").fetchall() == rows


def test_update_from_values_counts_only_matching_rows() -> None:
    conn = _table()
    execute_values(conn, "INSERT INTO t (k, n, s)", [("a", 1, "x"), ("b", 2, "x")])
    changed = execute_values(
        conn,
        "UPDATE t SET n = t.n + v.column1 FROM (",
        [(10, "a"), (20, "b"), (30, "missing")],
        ") AS v WHERE t.k = v.column2",
    )
    assert changed == 2
    assert conn.execute("SELECT k, n FROM t ORDER BY k").fetchall() == [("a", 11), ("b", 22)]


def test_nothing_to_write_runs_no_statement() -> None:
    conn = _table()
    assert execute_values(conn, "INSERT INTO t (k, n, s)", []) == 0
