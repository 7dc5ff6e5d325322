"""Integrity halts held in this process only: the fake for unit tests. Not
durable and not shared (a restart forgets them, other gateways never see
them), so no composition root uses it: both ledger adapters keep halts."""

from __future__ import annotations

import threading

from ledger._locks import locked
from ledger.errors import NotFound
from ledger.model import HaltIncident, halts_listed


class MemoryHalts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._incidents: list[HaltIncident] = []  # in recording order

    def record_halt(self, incident: HaltIncident) -> HaltIncident:
        with locked(self._lock, "memory halts"):
            for stored in self._incidents:
                if stored.is_open and stored.same_failure(incident):
                    return stored
            stored = incident.as_recorded()
            self._incidents.append(stored)
            return stored

    def open_halts(self) -> list[HaltIncident]:
        with locked(self._lock, "memory halts"):
            return [incident for incident in self._incidents if incident.is_open]

    def recent_halts(self, limit: int) -> list[HaltIncident]:
        with locked(self._lock, "memory halts"):
            return list(reversed(self._incidents))[: halts_listed(limit)]

    def clear_halt(self, incident_id: str, reason: str, cleared_at: str) -> HaltIncident:
        with locked(self._lock, "memory halts"):
            for index, stored in enumerate(self._incidents):
                if stored.incident_id != incident_id:
                    continue
                if stored.is_open:
                    stored = stored.cleared(reason, cleared_at)
                    self._incidents[index] = stored
                return stored
        raise NotFound(f"integrity incident {incident_id} not found")
