"""Integrity halts held in this process only: the fake for unit tests. Not
durable and not shared (a restart forgets them, other gateways never see
them), so no composition root uses it: both ledger adapters keep halts."""

from __future__ import annotations

import dataclasses
import threading

from ledger import limits
from ledger._locks import locked
from ledger.errors import NotFound
from ledger.model import HaltIncident


class MemoryHalts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._incidents: list[HaltIncident] = []  # in recording order

    def record_halt(self, incident: HaltIncident) -> HaltIncident:
        key = (incident.reason, incident.customer_id, incident.receipt_id)
        with locked(self._lock, "memory halts"):
            for stored in self._incidents:
                if stored.is_open and (stored.reason, stored.customer_id, stored.receipt_id) == key:
                    return stored
            stored = dataclasses.replace(
                incident, detail=incident.detail[: limits.halt_detail_chars_max]
            )
            self._incidents.append(stored)
            return stored

    def open_halts(self) -> list[HaltIncident]:
        with locked(self._lock, "memory halts"):
            return [incident for incident in self._incidents if incident.is_open]

    def recent_halts(self, limit: int) -> list[HaltIncident]:
        with locked(self._lock, "memory halts"):
            count = max(0, min(limit, limits.halts_listed_max))
            return list(reversed(self._incidents))[:count]

    def clear_halt(self, incident_id: str, reason: str, cleared_at: str) -> HaltIncident:
        with locked(self._lock, "memory halts"):
            for index, stored in enumerate(self._incidents):
                if stored.incident_id != incident_id:
                    continue
                if stored.is_open:
                    stored = dataclasses.replace(
                        stored,
                        cleared_at=cleared_at,
                        clear_reason=reason[: limits.halt_clear_reason_chars_max],
                    )
                    self._incidents[index] = stored
                return stored
        raise NotFound(f"integrity incident {incident_id} not found")
