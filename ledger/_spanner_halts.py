"""Integrity halts on Cloud Spanner (the IntegrityHalts port): one row per
incident in `IntegrityHalts`, cleared in place, never deleted.

Every gateway on the database reads the open incidents each second, so a
halt recorded by one reaches all of them. Recording is one read-write
transaction that reads the open incidents and inserts only if none has the
same reason, customer and receipt: two gateways finding the same damage at
once conflict on that read, Spanner aborts one, and its retry sees the
other's incident.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final

from ledger._spanner_base import INT, SpannerBase, one
from ledger._spanner_codec import read_key, request_timeout_s
from ledger.errors import NotFound
from ledger.model import HaltIncident, halts_listed

__all__ = ["SpannerHalts"]

_COLS: Final = tuple(field.name for field in dataclasses.fields(HaltIncident))
_SELECT: Final = f"SELECT {', '.join(_COLS)} FROM IntegrityHalts"
# Oldest first; the id breaks ties so that every gateway lists them alike.
_OPEN: Final = f"{_SELECT} WHERE cleared_at IS NULL ORDER BY opened_at, incident_id"


def _incident(row: Sequence[Any]) -> HaltIncident:
    return HaltIncident(*row)


def _row(incident: HaltIncident) -> tuple[Any, ...]:
    return tuple(getattr(incident, name) for name in _COLS)


class SpannerHalts(SpannerBase):
    def record_halt(self, incident: HaltIncident) -> HaltIncident:
        stored = incident.as_recorded()

        def work(txn: Any) -> HaltIncident:
            # Open incidents are few (one per distinct failure): read them all
            # under the transaction's locks rather than match NULLs in SQL.
            rows = list(txn.execute_sql(_OPEN, timeout=request_timeout_s))
            for open_now in (_incident(row) for row in rows):
                if open_now.same_failure(stored):
                    return open_now
            txn.insert("IntegrityHalts", _COLS, [_row(stored)])
            return stored

        return self._transact(work)

    def open_halts(self) -> list[HaltIncident]:
        return [_incident(row) for row in self._query(_OPEN)]

    def recent_halts(self, limit: int) -> list[HaltIncident]:
        rows = self._query(
            f"{_SELECT} ORDER BY opened_at DESC, incident_id DESC LIMIT @n",
            {"n": halts_listed(limit)},
            {"n": INT},
        )
        return [_incident(row) for row in rows]

    def clear_halt(self, incident_id: str, reason: str, cleared_at: str) -> HaltIncident:
        def work(txn: Any) -> HaltIncident | None:
            found = one(read_key(txn, "IntegrityHalts", _COLS, incident_id))
            if found is None:
                return None
            incident = _incident(found)
            if not incident.is_open:  # the first clearing is the one that counts
                return incident
            cleared = incident.cleared(reason, cleared_at)
            txn.update("IntegrityHalts", _COLS, [_row(cleared)])
            return cleared

        result = self._transact(work)
        if result is None:
            raise NotFound(f"integrity incident {incident_id} not found")
        return result
