"""Where a follower of the commit feed (the embedded archive) got to.

A small JSON file next to what the follower writes: the last position it
made durable and the receipt id found there. It is saved only after the
follower's own writes are synced, so it never runs ahead of them; it may lag
behind (a crash, or a rename not yet on disk), which costs a re-delivery
that the follower absorbs (idempotent by receipt id), never a gap.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import structlog

from ledger.ports import CommitFeed

log = structlog.get_logger(__name__)


class FeedCursor:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def save(self, position: int, receipt_id: str) -> None:
        """Replace the cursor atomically (a reader sees the old or the new one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps({"position": position, "receipt_id": receipt_id}))
        os.replace(partial, self.path)

    def start(self, feed: CommitFeed) -> int:
        """The position to follow from: the saved one if the feed still has
        the same receipt there, else 0 (everything is delivered again)."""
        saved = self._load()
        if saved is None:
            return 0
        position, receipt_id = saved
        if feed.receipt_id_at(position) == receipt_id:
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
        receipt_id = record.get("receipt_id") if isinstance(record, dict) else None
        if type(position) is not int or position < 1 or not isinstance(receipt_id, str):
            log.warning("ledger.feed_cursor.invalid", path=str(self.path))
            return None
        return position, receipt_id
