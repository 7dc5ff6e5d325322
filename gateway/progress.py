"""One progress bar for the CLI commands that walk a whole chain (`billing
export`, `billing verify`): rich's, on stderr, counting receipts.

Imported inside the command handlers only, so `billing --help` stays fast."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _RateColumn(ProgressColumn):
    """Receipts per second (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} receipts/s" if speed else "")


def progress_shown(mode: str) -> bool:
    """Whether `--progress mode` shows the bar (auto: when stderr is a terminal)."""
    return mode == "always" or (mode == "auto" and sys.stderr.isatty())


def receipt_progress(mode: str) -> Progress:
    """A Progress counting receipts; `mode` is auto|always|never (auto: only
    when stderr is a terminal). Use as a context manager."""
    show = progress_shown(mode)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not show,
    )
