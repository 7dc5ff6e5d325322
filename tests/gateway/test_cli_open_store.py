"""`billing log audit` and `billing restore` open their --store the same way:
a URL that names no store is one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crypto import KeyRing
from gateway.cli import main
from tests.crypto.conftest import session_key


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    return line


def test_log_audit_of_an_unknown_store_url_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["log", "audit", "--store", "mysql://ledger"]) == 2
    assert _error_line(capsys).startswith("billing log: unknown store URL 'mysql://ledger'")


def test_restore_into_an_unknown_store_url_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(KeyRing(session_key("EdDSA")).jwks()))
    archive = tmp_path / "archive"
    archive.mkdir()
    args = ["restore", "--from", str(archive), "--store", "mysql://ledger", "--jwks", str(jwks)]
    assert main(args) == 2
    assert _error_line(capsys).startswith("billing restore: unknown store URL 'mysql://ledger'")
