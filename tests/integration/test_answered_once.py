"""Every charge is answered exactly once, on every failure path: an account
actor that crashes (with charges queued behind the crash, or in the middle
of a batch), a request that runs out of time, a ledger writer stopped while
it holds charges, a store whose commit fails.

Each test injects the failure for real in a running service and counts the
settlements of every ticket (actors.tickets): one win per charge, one
hand-over per request, and a late answer (a commit after the client was
told 503) returns False and never reaches the client.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors import tickets
from actors.account import AccountActor
from actors.charges import ChargeCommand, ChargeOutcome
from actors.stage_owner import StageCrashed
from actors.tickets import TicketBatch
from ledger import StoreUnavailable
from ledger.sqlite import SqliteLedger
from tests.integration.conftest import Customer, Service, base_settings, serve

pytestmark = pytest.mark.timeout(60)

_WAIT_S = 10.0


@dataclass
class Settlements:
    """Every settlement attempt of every ticket made while it is installed."""

    batches: list[TicketBatch] = field(default_factory=list)
    wins: Counter[tuple[int, int]] = field(default_factory=Counter)
    won: list[ChargeOutcome] = field(default_factory=list)
    late: list[ChargeOutcome] = field(default_factory=list)
    handovers: Counter[int] = field(default_factory=Counter)
    # Held across a settlement, so a check waits for one whose answer the
    # client already has (the hand-over runs inside it, on the same thread).
    lock: threading.RLock = field(default_factory=threading.RLock)

    def assert_each_answered_once(self, charges: int) -> None:
        with self.lock:
            keys = [(id(b), i) for b in self.batches for i in range(len(b))]
            assert len(keys) == charges, "one ticket per charge"
            assert [self.wins[key] for key in keys] == [1] * charges, "one win per ticket"
            assert [self.handovers[id(b)] for b in self.batches] == [1] * len(self.batches)


@pytest.fixture
def settlements(monkeypatch: pytest.MonkeyPatch) -> Settlements:
    record = Settlements()
    settle, init = TicketBatch._settle, TicketBatch.__init__

    def counted_init(batch: TicketBatch, count: int, on_all: Any) -> None:
        def handover(outcomes: Sequence[ChargeOutcome]) -> object:
            with record.lock:
                record.handovers[id(batch)] += 1
            return on_all(outcomes)

        init(batch, count, handover)
        with record.lock:
            record.batches.append(batch)

    def counted_settle(batch: TicketBatch, index: int, outcome: ChargeOutcome) -> bool:
        with record.lock:
            won = settle(batch, index, outcome)
            record.wins[(id(batch), index)] += won
            (record.won if won else record.late).append(outcome)
        return won

    monkeypatch.setattr(TicketBatch, "__init__", counted_init)
    monkeypatch.setattr(TicketBatch, "_settle", counted_settle)
    return record


class Stall:
    """Holds one call in a worker thread until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def hold(self) -> None:
        self.entered.set()
        self.release.wait(_WAIT_S * 2)


def _stall_commits(monkeypatch: pytest.MonkeyPatch, *, then_fail: bool) -> Stall:
    """The store's next commit waits until released, then goes on or fails."""
    stall = Stall()
    commit = SqliteLedger.commit_batch

    def stalled(store: SqliteLedger, *args: Any) -> Any:
        if not stall.entered.is_set():
            stall.hold()
            if then_fail:
                raise StoreUnavailable("the disk went away")
        return commit(store, *args)

    monkeypatch.setattr(SqliteLedger, "commit_batch", stalled)
    return stall


def _patch_charge(monkeypatch: pytest.MonkeyPatch, key: str, action: Any) -> None:
    """`action()` runs in the account actor when it charges `key`."""
    charge = AccountActor._charge

    def patched(actor: AccountActor, command: ChargeCommand, *args: Any) -> None:
        if command.idempotency_key == key:
            action()
        charge(actor, command, *args)

    monkeypatch.setattr(AccountActor, "_charge", patched)


async def _until(predicate: Any, timeout_s: float = _WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


Answer = tuple[int, dict[str, Any], dict[str, str]]


async def _retry(service: Service, customer: Customer, body: dict[str, Any]) -> Answer:
    """Post until the service is back (a restart is under way)."""
    for _ in range(100):
        answered = await service.post_event(customer, body)
        if answered[0] != 503:
            break
        await asyncio.sleep(0.05)
    return answered


@pytest.fixture
def running(tmp_path: Path, signing_key_file: Path) -> Iterator[Any]:
    def start(**overrides: Any) -> Any:
        return serve(base_settings(tmp_path / "data", signing_key_file, **overrides))

    yield start


def _code(answer: dict[str, Any]) -> str:
    return str(answer["error"]["code"])


async def test_charges_queued_behind_an_actor_crash_are_answered_once(
    running: Any, settlements: Settlements, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running() as service:
        customer = await service.create_customer()
        assert (await service.post_event(customer, service.event(customer)))[0] == 202
        ref = service.runtime.services.directory.lookup(customer.customer_id)
        assert ref is not None
        busy = Stall()
        _patch_charge(monkeypatch, "hold", busy.hold)
        held = asyncio.create_task(
            service.post_event(customer, service.event(customer, idempotent_key="hold"))
        )
        assert await _until(busy.entered.is_set)
        # The admin route tells the busy actor to crash: its next message.
        async with service.session.post(
            f"/v1/admin/faults/{customer.customer_id}", headers=service.admin
        ) as response:
            assert (await response.json())["crashed"] is True
        bodies = [service.event(customer) for _ in range(5)]
        queued = [asyncio.create_task(service.post_event(customer, b)) for b in bodies]
        assert await _until(lambda: len(ref.actor_inbox._items) == 1 + len(bodies))
        busy.release.set()

        assert (await held)[0] == 202
        for status, answer, headers in await asyncio.gather(*queued):
            assert (status, _code(answer)) == (503, "account_unavailable"), answer
            assert int(headers["Retry-After"]) >= 1
        settlements.assert_each_answered_once(charges=1 + 1 + len(bodies))
        assert settlements.won.count(tickets.ACCOUNT_RESTARTING) == len(bodies)
        assert settlements.late == []
        # Nothing of them was charged: each retry is a first charge.
        for body in bodies:
            status, answer, headers = await _retry(service, customer, body)
            assert status == 202 and "Idempotent-Replayed" not in headers, answer


async def test_a_crash_mid_batch_answers_each_event_once_and_drops_the_late_commit(
    running: Any, settlements: Settlements, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running() as service:
        customer = await service.create_customer()
        stall = _stall_commits(monkeypatch, then_fail=False)

        def crash() -> None:
            raise RuntimeError("injected: the actor fails in on_receive")

        _patch_charge(monkeypatch, "boom", crash)
        first, after = service.event(customer), service.event(customer)
        events = [first, service.event(customer, idempotent_key="boom"), after]
        async with service.session.post(
            "/v1/events/batch", json={"events": events}, headers=customer.auth
        ) as response:
            assert response.status == 200
            results = (await response.json())["results"]
        # The first event is on its way to the store, the others never left
        # the actor: all three are answered by the failed message.
        assert [(r["status"], r["error"]["code"]) for r in results] == [
            (503, "account_unavailable")
        ] * 3
        stall.release.set()
        assert await _until(lambda: len(settlements.late) == 1)
        assert settlements.late[0].kind == "committed"  # False: never sent
        settlements.assert_each_answered_once(charges=3)

        status, answer, headers = await service.post_event(customer, first)
        assert status == 202 and headers.get("Idempotent-Replayed") == "true", answer
        status, answer, headers = await service.post_event(customer, after)
        assert status == 202 and "Idempotent-Replayed" not in headers, answer


async def test_a_charge_past_its_deadline_is_answered_once(
    running: Any, settlements: Settlements, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(request_timeout_ms=300) as service:
        customer = await service.create_customer()
        stall = _stall_commits(monkeypatch, then_fail=False)
        body = service.event(customer)
        started = time.monotonic()
        status, answer, _ = await service.post_event(customer, body)
        assert (status, _code(answer)) == (503, "store_unavailable"), answer
        assert "in time" in answer["error"]["message"]
        assert time.monotonic() - started >= 0.3
        assert settlements.won == [tickets.TIMED_OUT]
        stall.release.set()
        assert await _until(lambda: len(settlements.late) == 1)
        assert settlements.late[0].kind == "committed"
        settlements.assert_each_answered_once(charges=1)
        status, answer, headers = await service.post_event(customer, body)
        assert status == 202 and headers.get("Idempotent-Replayed") == "true", answer


async def test_a_writer_stopped_while_holding_charges_answers_each_once(
    running: Any, settlements: Settlements, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running() as service:
        customer = await service.create_customer()
        stall = _stall_commits(monkeypatch, then_fail=True)
        stuck = asyncio.create_task(service.post_event(customer, service.event(customer)))
        assert await _until(stall.entered.is_set)
        queued = [
            asyncio.create_task(service.post_event(customer, service.event(customer)))
            for _ in range(2)
        ]
        registry = service.runtime.services.registry
        assert await _until(lambda: registry.get_sample_value("billing_writer_queue_depth") == 2)
        writer = service.runtime.root.child("store")
        assert isinstance(writer, pykka.ActorRef)
        writer.tell(StageCrashed("injected: the writer is stopped"))
        # The supervisor stops the stage: it waits for the stuck thread, gives
        # up, and answers what the queue still holds.
        for status, answer, _ in await asyncio.gather(*queued):
            assert (status, _code(answer)) == (503, "store_unavailable"), answer
            assert answer["error"]["message"] == "ledger writer stopped"
        assert not stuck.done()
        stall.release.set()
        status, answer, _ = await stuck  # its commit failed: retry-safe
        assert (status, _code(answer)) == (503, "store_unavailable"), answer
        settlements.assert_each_answered_once(charges=3)
        assert settlements.late == []

        def writer_threads() -> int:
            return sum(t.name == "ledger-writer" for t in threading.enumerate())

        # The stuck thread finds the stop marker once free, and ends.
        assert await _until(lambda: writer_threads() == 1), "the old writer thread lives on"


async def test_a_failed_commit_answers_each_charge_once(
    running: Any, settlements: Settlements, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running() as service:
        customer = await service.create_customer()
        stall = _stall_commits(monkeypatch, then_fail=True)
        stall.release.set()  # no wait: the commit just fails
        body = service.event(customer)
        status, answer, _ = await service.post_event(customer, body)
        assert (status, _code(answer)) == (503, "store_unavailable"), answer
        assert answer["error"]["message"] == "the ledger could not be written"
        settlements.assert_each_answered_once(charges=1)
        assert settlements.late == []
        status, answer, headers = await _retry(service, customer, body)
        assert status == 202 and "Idempotent-Replayed" not in headers, answer
