"""The environment as a settings module may read it: only the names its table
declares.

Each module that reads variables (gateway/settings.py, gateway/stripe/settings.py,
gateway/web/_settings.py, the `billing` CLI) declares them in one table and
reads through `DeclaredEnvironment`, so a variable read but not declared fails
the first test that builds those settings. The README's Settings section names
exactly the union of the tables (tests/gateway/test_settings_documented.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Final

# The `billing` CLI's defaults for its flags (gateway/cli_*.py).
CLI_VARIABLES: Final = frozenset(
    {"BILLING_URL", "BILLING_API_KEY", "BILLING_ADMIN_TOKEN", "BILLING_DATA_DIR", "XDG_DATA_HOME"}
)
# Read outside the gateway: ledger/spanner_schema.py asks the same variable the
# Google client library reads whether it talks to the Spanner emulator.
LEDGER_VARIABLES: Final = frozenset({"SPANNER_EMULATOR_HOST"})


class UndeclaredVariable(RuntimeError):
    """A programming error: a variable read that its module's table does not
    name (so the README would not document it). Not a KeyError on purpose:
    `Mapping.get` would swallow that and answer the default."""


class DeclaredEnvironment(Mapping[str, str]):
    """A read-only view of `environ` limited to `names`."""

    def __init__(self, environ: Mapping[str, str], names: frozenset[str]) -> None:
        self._environ = environ
        self._names = names

    def __getitem__(self, name: str) -> str:
        if name not in self._names:
            raise UndeclaredVariable(f"{name} is read but not declared in its settings table")
        return self._environ[name]

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._names if name in self._environ)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def cli_default(name: str, default: str | None = None) -> str | None:
    """A CLI flag's default from the environment (the variable must be declared)."""
    return DeclaredEnvironment(os.environ, CLI_VARIABLES).get(name, default)


def all_variables() -> frozenset[str]:
    """Every variable the service and the CLI read: what the README documents."""
    from gateway.settings import SERVICE_VARIABLES
    from gateway.stripe import settings as stripe_settings
    from gateway.web._settings import WEB_VARIABLES

    return (
        SERVICE_VARIABLES
        | stripe_settings.STRIPE_VARIABLES
        | WEB_VARIABLES
        | CLI_VARIABLES
        | LEDGER_VARIABLES
    )
