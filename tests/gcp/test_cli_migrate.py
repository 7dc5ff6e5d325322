"""`billing migrate` against the Spanner emulator."""

from __future__ import annotations

import pytest

from gateway.cli import main
from ledger.spanner_schema import MIGRATIONS
from tests.gcp._data import unique

pytestmark = pytest.mark.emulator


def test_migrate_creates_then_is_idempotent(
    spanner_emulator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"spanner://projects/vexa-test/instances/{unique('cli')}/databases/ledger"
    assert main(["migrate", "--store", url]) == 2
    assert "does not exist (pass --create" in capsys.readouterr().err

    assert main(["migrate", "--store", url, "--create"]) == 0
    out = capsys.readouterr().out
    assert "creating instance" in out and "creating database" in out
    assert all(f"applying migration {m.version}:" in out for m in MIGRATIONS)

    assert main(["migrate", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "schema already current" in out and "applying" not in out


def test_migrate_rejects_other_stores(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--store", "sqlite:ledger.db"]) == 2
    assert "spanner://" in capsys.readouterr().err
    assert main(["migrate", "--store", "spanner://projects/p/instances/i"]) == 2
    assert "expected projects/X/instances/X/databases/X" in capsys.readouterr().err
