"""`billing migrate`: create or upgrade the Cloud Spanner ledger schema.

SQLite needs no command: it migrates itself when opened. Spanner schema
changes are long-running operations shared by every gateway, so they run
once, from here (a deploy step), never implicitly at service start.
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="create or upgrade the Cloud Spanner ledger schema (idempotent)",
        description=(
            "Apply every pending schema migration to a Cloud Spanner database. "
            "Safe to run again: applied migrations are skipped, and a run that "
            "was interrupted is finished."
        ),
    )
    parser.add_argument(
        "--store",
        required=True,
        metavar="URL",
        help="spanner://projects/P/instances/I/databases/D",
    )
    parser.add_argument(
        "--create",
        action="store_true",
        help=(
            "create the database if it is missing (and the instance, on the "
            "emulator only: SPANNER_EMULATOR_HOST)"
        ),
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from gateway.cli import CommandError
    from ledger.errors import StoreUnavailable
    from ledger.gcp_urls import UrlError, parse_spanner_url

    store_url: str = args.store
    if not store_url.startswith("spanner://"):
        raise CommandError(
            f"--store must be a spanner:// URL, got {store_url!r} (SQLite migrates itself on open)"
        )
    try:
        url = parse_spanner_url(store_url)
    except UrlError as error:
        raise CommandError(str(error)) from error

    from google.api_core import exceptions as gexc
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import spanner

    from ledger.spanner_schema import apply_migrations, ensure_database

    def say(message: str) -> None:
        print(f"migrate: {message}", flush=True)

    started = time.monotonic()
    say(f"connecting to {url}")
    try:
        client = spanner.Client(project=url.project)
        database = ensure_database(client, url, create=args.create, progress=say)
        applied = apply_migrations(database, progress=say)
    except StoreUnavailable as error:
        hint = "" if args.create else " (pass --create to create it)"
        missing = "does not exist" in str(error)
        raise CommandError(f"{error}{hint if missing else ''}") from error
    except (gexc.GoogleAPICallError, gexc.RetryError) as error:
        raise CommandError(f"Spanner refused: {error}") from error
    except DefaultCredentialsError as error:
        raise CommandError(
            f"no Google Cloud credentials ({error}); for the emulator set SPANNER_EMULATOR_HOST"
        ) from error
    except TimeoutError as error:
        raise CommandError(f"timed out talking to Spanner: {error}") from error
    elapsed_s = time.monotonic() - started
    if applied:
        say(f"applied migrations {applied} in {elapsed_s:.1f}s; schema is current")
    else:
        say(f"schema already current ({elapsed_s:.1f}s)")
    return 0
