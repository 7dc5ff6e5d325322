"""Arguments several `billing` commands share, declared once."""

from __future__ import annotations

import argparse


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """`--progress auto|always|never`: the rich bar on stderr (gateway.progress)."""
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr (auto: when stderr is a terminal)",
    )
