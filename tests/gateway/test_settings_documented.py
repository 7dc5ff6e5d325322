"""The README documents every setting the code reads, and only those.

Each settings module reads through its own table of names; running each
reader against a recording environment shows what it really asks for, and
the README's Settings tables must name exactly the union."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway import cli_log
from gateway.cli import build_parser
from gateway.environment import (
    CLI_VARIABLES,
    DeclaredEnvironment,
    UndeclaredVariable,
    all_variables,
)
from gateway.settings import SERVICE_VARIABLES, from_environment
from gateway.stripe import settings as stripe_settings
from gateway.web._settings import WEB_VARIABLES, load_web_settings

README = Path(__file__).resolve().parents[2] / "README.md"
_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|", re.MULTILINE)


class Recording(Mapping[str, str]):
    """An environment that remembers every name looked up in it."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values = values or {}
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def _documented() -> list[str]:
    text = README.read_text()
    section = text[text.index("\n## Settings\n") :]
    section = section[: section.index("\n## ", 1)]
    return _ROW.findall(section)


def test_each_reader_reads_exactly_its_table(tmp_path: Path) -> None:
    service = Recording()
    from_environment(service)
    assert service.asked == SERVICE_VARIABLES
    stripe = Recording()
    stripe_settings.load(None, stripe)
    assert stripe.asked == stripe_settings.STRIPE_VARIABLES
    web = Recording()
    load_web_settings(None, web, tmp_path, dev=True)
    assert web.asked == WEB_VARIABLES


def test_the_cli_reads_exactly_its_table(monkeypatch: pytest.MonkeyPatch) -> None:
    cli = Recording({"XDG_DATA_HOME": "/state"})
    # Only the CLI's own reads: argparse and gettext read COLUMNS, LANGUAGE...
    monkeypatch.setattr("gateway.environment.os", SimpleNamespace(environ=cli))
    build_parser()
    assert cli_log._default_state(None).is_relative_to("/state")
    assert cli.asked == CLI_VARIABLES


def test_a_variable_read_without_being_declared_fails_loudly() -> None:
    environ = DeclaredEnvironment({"BILLING_HOST": "::1", "HOME": "/root"}, SERVICE_VARIABLES)
    assert environ.get("BILLING_HOST") == "::1"
    assert dict(environ) == {"BILLING_HOST": "::1"}
    with pytest.raises(UndeclaredVariable):
        environ.get("BILLING_HOTS")


def test_the_readme_documents_every_variable_read_and_no_other() -> None:
    documented = _documented()
    assert len(documented) == len(set(documented)), "a variable is documented twice"
    read = all_variables()
    assert sorted(read - set(documented)) == [], "read but not in README.md's Settings"
    assert sorted(set(documented) - read) == [], "in README.md's Settings but never read"


def test_settings_nothing_needed_are_no_longer_read() -> None:
    """Issue 21: nothing set these; the batch size and answer timeout stay defaults."""
    defaults = from_environment({})
    settings = from_environment(
        {"BILLING_COMMIT_BATCH_MAX": "7", "BILLING_REQUEST_TIMEOUT_MS": "5"}
    )
    assert settings.commit_batch_receipts_max == defaults.commit_batch_receipts_max
    assert settings.request_timeout_ms == defaults.request_timeout_ms
    assert from_environment({"BILLING_ACCOUNT_IDLE_S": "3"}).account_idle_s == 3.0
