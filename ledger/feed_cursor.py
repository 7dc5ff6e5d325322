"""Where a follower of the commit feed (the embedded archive) got to.

A small JSON file next to what the follower writes: the last position it
made durable and the receipt id found there (for a follower of the log's
checkpoints: the tree size and the root hash there). It is saved only after the
follower's own writes are synced, so it never runs ahead of them; it may lag
behind (a crash, or a rename not yet on disk), which costs a re-delivery
that the follower absorbs (idempotent by receipt id), never a gap.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import structlog

from ledger.ports import CommitFeed

log = structlog.get_logger(__name__)


class FeedCursor:
    def __init__(self, path: Path, id_field: str = "receipt_id") -> None:
        self.path = Path(path)
        self._id_field = id_field

    def save(self, position: int, name: str) -> None:
        """Replace the cursor atomically (a reader sees the old or the new one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps({"position": position, self._id_field: name}))
        os.replace(partial, self.path)

    def start(self, feed: CommitFeed) -> int:
        """The position to follow from: the saved one if the feed still has
        the same receipt there, else 0 (everything is delivered again)."""
        return self.start_at(feed.receipt_id_at)

    def start_at(self, id_at: Callable[[int], str | None]) -> int:
        """As `start`, for any feed that names what is at a position."""
        saved = self._load()
        if saved is None:
            return 0
        position, name = saved
        if id_at(position) == name:
            return position
        log.warning(
            "ledger.feed_cursor.mismatch",
            path=str(self.path),
            position=position,
            hint="the ledger was rebuilt or replaced; following it again from the start",
        )
        return 0

    def _load(self) -> tuple[int, str] | None:
        try:
            record = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning("ledger.feed_cursor.unreadable", path=str(self.path), error=repr(error))
            with contextlib.suppress(OSError):
                self.path.unlink()
            return None
        position = record.get("position") if isinstance(record, dict) else None
        receipt_id = record.get(self._id_field) if isinstance(record, dict) else None
        if type(position) is not int or position < 1 or not isinstance(receipt_id, str):
            log.warning("ledger.feed_cursor.invalid", path=str(self.path))
            return None
        return position, receipt_id
