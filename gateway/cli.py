"""`billing` command line: one subcommand per module, registered here.

Each `gateway/cli_*.py` exposes `register(subparsers)`; heavy imports happen
inside the command handlers so `billing --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

# Order is the order shown in `billing --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "gateway.cli_serve",
    "gateway.cli_admin",
    "gateway.cli_export",
    "gateway.cli_verify",
    "gateway.cli_log",
    "gateway.cli_restore",
    "gateway.cli_migrate",
)


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def open_store(url: str) -> Any:
    """The ledger store at `url` for a command: a bad URL, or a store that
    will not open (locked by a running service, unreachable), is one line."""
    from gateway.storage import StorageConfigError
    from gateway.storage import open_store as open_configured
    from ledger.errors import LedgerError

    try:
        return open_configured(url)
    except StorageConfigError as error:
        raise CommandError(str(error)) from None
    except LedgerError as error:
        raise CommandError(f"cannot open {url}: {error}") from None


def _version() -> str:
    """The installed package's version (pyproject.toml), not a copy of it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vexa-billing")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="billing",
        description="Vexa Billing: usage billing with signed, hash-chained receipts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a command still being built is simply absent
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except CommandError as error:
        print(f"billing {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    # Run as `python -m gateway.cli`, this file is `__main__`, and the commands
    # raise `gateway.cli.CommandError`, another class than this copy's: call
    # the imported module's main, or every one-line error is a traceback.
    from gateway import cli as _imported

    sys.exit(_imported.main())
