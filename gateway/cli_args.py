"""Arguments several `billing` commands share, declared once."""

from __future__ import annotations

import argparse

from gateway.environment import cli_default


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """`--progress auto|always|never`: the rich bar on stderr (gateway.progress)."""
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr (auto: when stderr is a terminal)",
    )


def add_service_url_argument(parser: argparse.ArgumentParser) -> None:
    """`--url`: the running service the command talks HTTP to."""
    parser.add_argument(
        "--url",
        default=cli_default("BILLING_URL", "http://127.0.0.1:8080"),
        help="service URL (default $BILLING_URL or http://127.0.0.1:8080)",
    )


def add_api_key_argument(parser: argparse.ArgumentParser, *, what_for: str) -> None:
    """`--api-key`: a customer's key, from $BILLING_API_KEY when not given."""
    parser.add_argument(
        "--api-key",
        default=cli_default("BILLING_API_KEY"),
        help=f"{what_for} (default $BILLING_API_KEY)",
    )
