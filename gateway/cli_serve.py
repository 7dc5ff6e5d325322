"""`billing serve`: run the service."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the billing service",
        description=(
            "Start the supervision tree and the HTTP gateway. Every flag can also be "
            "set from the environment (BILLING_HOST, BILLING_PORT, BILLING_DATA_DIR, "
            "BILLING_STORE); SIGTERM drains in-flight requests and exits 0."
        ),
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8080; 0 picks a free one)")
    parser.add_argument("--data-dir", help="where the SQLite ledger, keys and archive live")
    parser.add_argument(
        "--store",
        help="ledger of record: sqlite:PATH (default: DATA_DIR/ledger.sqlite3) or "
        "spanner://projects/P/instances/I/databases/D",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode: create a demo customer with an API key and print a curl line",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.cli import CommandError
    from gateway.logs import configure_logging
    from gateway.settings import SettingsError, from_environment

    try:
        settings = from_environment(
            os.environ,
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            store_url=args.store,
            dev=args.dev,
        )
    except SettingsError as error:
        raise CommandError(str(error)) from None
    configure_logging(settings.log_level, settings.trace_project)
    from gateway.compose import ListenError, build_runtime, run_server
    from gateway.devmode import print_banner, seed_demo
    from gateway.gc_tuning import tune_gc_for_serving
    from gateway.open_files import raise_for_serving
    from ledger import LedgerError

    try:
        runtime = build_runtime(settings, os.environ)
    except (LedgerError, OSError, ValueError) as error:  # incl. Stripe SettingsError
        raise CommandError(str(error)) from None
    demo = seed_demo(runtime) if settings.dev else None

    def on_ready(url: str) -> None:
        print_banner(runtime, url, demo)
        sys.stdout.flush()

    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.Runner()
    raise_for_serving()
    tune_gc_for_serving()
    with runner:
        try:
            runner.run(run_server(runtime, on_ready))
        except ListenError as error:  # the tree is already stopped
            raise CommandError(str(error)) from None
    return 0

