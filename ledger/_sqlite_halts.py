"""Integrity halts on SQLite (the IntegrityHalts port): one row per incident,
cleared in place, never deleted."""

from __future__ import annotations

from typing import Final

from ledger._sqlite_base import SqliteBase, transaction
from ledger._sqlite_rows import Row, placeholders, record_params
from ledger.errors import NotFound
from ledger.model import HaltIncident, halt_clear_reason, halts_listed

_COLUMNS: Final = (
    "incident_id, opened_at, reason, detail, source, customer_id, receipt_id, "
    "cleared_at, clear_reason"
)
_SELECT: Final = f"SELECT {_COLUMNS} FROM integrity_halts"


def _incident(row: Row) -> HaltIncident:
    return HaltIncident(*row)


class SqliteHalts(SqliteBase):
    def record_halt(self, incident: HaltIncident) -> HaltIncident:
        stored = incident.as_recorded()
        with self._writing() as conn, transaction(conn):
            same = conn.execute(
                f"{_SELECT} WHERE cleared_at IS NULL AND reason = ? "
                "AND customer_id IS ? AND receipt_id IS ? ORDER BY opened_at LIMIT 1",
                (incident.reason, incident.customer_id, incident.receipt_id),
            ).fetchone()
            if same is not None:
                return _incident(same)
            conn.execute(
                f"INSERT INTO integrity_halts ({_COLUMNS}) VALUES ({placeholders(_COLUMNS)})",
                record_params(stored),  # the dataclass's fields are in column order
            )
        return stored

    def open_halts(self) -> list[HaltIncident]:
        rows = self._all(f"{_SELECT} WHERE cleared_at IS NULL ORDER BY opened_at", ())
        return [_incident(row) for row in rows]

    def recent_halts(self, limit: int) -> list[HaltIncident]:
        rows = self._all(
            f"{_SELECT} ORDER BY opened_at DESC, incident_id DESC LIMIT ?",
            (halts_listed(limit),),
        )
        return [_incident(row) for row in rows]

    def clear_halt(self, incident_id: str, reason: str, cleared_at: str) -> HaltIncident:
        with self._writing() as conn, transaction(conn):
            conn.execute(
                "UPDATE integrity_halts SET cleared_at = ?, clear_reason = ? "
                "WHERE incident_id = ? AND cleared_at IS NULL",
                (cleared_at, halt_clear_reason(reason), incident_id),
            )
            row = conn.execute(f"{_SELECT} WHERE incident_id = ?", (incident_id,)).fetchone()
        if row is None:
            raise NotFound(f"integrity incident {incident_id} not found")
        return _incident(row)
