"""ScheduledActor: pykka's actor semantics on a few shared threads."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from supervisor import ActorScheduler, DynamicSupervisor, Link, ScheduledActor
from tests.supervisor.conftest import WAIT_S, Journal, new_threads, wait_until


class Counter(ScheduledActor):
    """Appends every message to `seen`; flags two handlers of it running at once."""

    def __init__(
        self, link: Link | None, scheduler: ActorScheduler, name: str, journal: Journal
    ) -> None:
        super().__init__(link, scheduler)
        self.name = name
        self.journal = journal
        self.seen: list[Any] = []
        self._busy = threading.Lock()
        self.overlapped = False

    def on_start(self) -> None:
        super().on_start()
        self.journal.add("start", self.name)

    def on_stop(self) -> None:
        self.journal.add("stop", self.name)
        super().on_stop()

    def on_failure(self, *exc_info: Any) -> None:
        self.journal.add("crash", self.name)
        super().on_failure(*exc_info)

    def on_receive(self, message: Any) -> Any:
        if not self._busy.acquire(blocking=False):
            self.overlapped = True
            self._busy.acquire()
        try:
            if message == "crash":
                raise RuntimeError(f"{self.name} crashed")
            if message == "fail_ask":
                raise ValueError("bad question")
            if message == "seen":
                return list(self.seen)
            if message == "overlapped":
                return self.overlapped
            if isinstance(message, tuple) and message[0] == "block":
                message[1].set()
                message[2].wait(WAIT_S)
                return None
            self.seen.append(message)
            self.journal.add("message", self.name)
            return len(self.seen)
        finally:
            self._busy.release()


class Loaded:
    """Stands for what an account actor loads (its head, entitlements, recent receipts)."""


class Holder(ScheduledActor):
    def __init__(self, link: Link | None, scheduler: ActorScheduler) -> None:
        super().__init__(link, scheduler)
        self.loaded = Loaded()

    def on_receive(self, message: Any) -> Any:
        return weakref.ref(self.loaded)


class FailsToStart(ScheduledActor):
    def on_start(self) -> None:
        raise RuntimeError("no state to load")


class ExitsInStart(ScheduledActor):
    def on_start(self) -> None:
        raise SystemExit("exit in on_start")


@pytest.fixture
def scheduler() -> Iterator[ActorScheduler]:
    scheduler = ActorScheduler(2, "test-actors")
    yield scheduler
    scheduler.stop()


def test_many_actors_run_on_the_schedulers_threads_only(
    scheduler: ActorScheduler, journal: Journal
) -> None:
    before = set(threading.enumerate())
    refs = [Counter.start(None, scheduler, f"c{i}", journal) for i in range(300)]
    try:
        for ref in refs:
            assert ref.ask("hello", timeout=WAIT_S) == 1
        assert len(new_threads(before)) == 2  # not one per actor
    finally:
        for ref in refs:
            ref.stop()


def test_each_actor_handles_its_messages_in_order_one_at_a_time(
    scheduler: ActorScheduler, journal: Journal
) -> None:
    refs = [Counter.start(None, scheduler, f"c{i}", journal) for i in range(20)]
    senders = [
        threading.Thread(target=lambda r=ref: [r.tell(n) for n in range(500)]) for ref in refs
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(WAIT_S)
    try:
        for ref in refs:
            assert ref.ask("seen", timeout=WAIT_S) == list(range(500))
            assert ref.ask("overlapped", timeout=WAIT_S) is False
    finally:
        for ref in refs:
            ref.stop()


def test_quiet_actor_is_answered_before_a_backlog_drains(journal: Journal) -> None:
    scheduler = ActorScheduler(1, "one-thread")
    busy = Counter.start(None, scheduler, "busy", journal)
    quiet = Counter.start(None, scheduler, "quiet", journal)
    entered, release = threading.Event(), threading.Event()
    try:
        busy.tell(("block", entered, release))
        assert entered.wait(WAIT_S)
        for n in range(1_000):  # queued behind the blocked message
            busy.tell(n)
        answer = quiet.ask("ping", block=False)
        release.set()
        assert answer.get(timeout=WAIT_S) == 1
        assert len(busy.ask("seen", timeout=WAIT_S)) == 1_000
        # The quiet actor was answered after one slice of the backlog, not after all of it.
        handled = [name for event, name in journal.events if event == "message"]
        assert handled.index("quiet") < ScheduledActor.slice_messages_max
    finally:
        busy.stop()
        quiet.stop()
        scheduler.stop()


def test_an_ask_that_raises_answers_the_caller_and_the_actor_lives_on(
    scheduler: ActorScheduler, journal: Journal
) -> None:
    ref = Counter.start(None, scheduler, "c", journal)
    try:
        with pytest.raises(ValueError, match="bad question"):
            ref.ask("fail_ask", timeout=WAIT_S)
        assert ref.ask("after", timeout=WAIT_S) == 1
    finally:
        ref.stop()


def test_a_crash_is_reported_to_the_supervisor_which_restarts_it(
    accounts: DynamicSupervisor, scheduler: ActorScheduler, journal: Journal
) -> None:
    ref = accounts.start_child("c1", lambda link: Counter.start(link, scheduler, "c1", journal))
    ref.ask("before", timeout=WAIT_S)
    ref.tell("crash")
    wait_until(lambda: accounts.lookup("c1") not in (None, ref))
    new = accounts.lookup("c1")
    assert new is not None and new.ask("after", timeout=WAIT_S) == 1
    assert [e for e in journal.events if e[0] in ("start", "crash")] == [
        ("start", "c1"),
        ("crash", "c1"),
        ("start", "c1"),
    ]
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("to the dead one", timeout=WAIT_S)


def test_a_failed_start_is_reported_as_an_abnormal_exit(
    accounts: DynamicSupervisor, scheduler: ActorScheduler
) -> None:
    links: list[Link] = []

    def start(link: Link) -> Any:
        links.append(link)
        return FailsToStart.start(link, scheduler)

    accounts.start_child("broken", start)
    assert links[0].exited.wait(WAIT_S)
    report = links[0].exit_report
    assert report is not None and "no state to load" in report.reason


def test_stop_runs_on_stop_and_refuses_what_was_queued_behind_it(
    scheduler: ActorScheduler, journal: Journal
) -> None:
    ref = Counter.start(None, scheduler, "c", journal)
    entered, release = threading.Event(), threading.Event()
    ref.tell(("block", entered, release))
    assert entered.wait(WAIT_S)
    stopped = ref.stop(block=False)
    late = ref.ask("queued after the stop", block=False)
    release.set()
    assert stopped.get(timeout=WAIT_S) is True
    with pytest.raises(pykka.ActorDeadError):
        late.get(timeout=WAIT_S)
    assert ("stop", "c") in journal.events
    assert not ref.is_alive()


def test_stopped_scheduler_threads_end_and_come_back_on_demand(journal: Journal) -> None:
    scheduler = ActorScheduler(2, "restartable")
    before = set(threading.enumerate())
    ref = Counter.start(None, scheduler, "c", journal)
    assert ref.ask("one", timeout=WAIT_S) == 1
    scheduler.stop()
    assert not new_threads(before)
    assert ref.ask("two", timeout=WAIT_S) == 2  # a message restarts the threads
    ref.stop()
    scheduler.stop()
    assert not new_threads(before)


def test_runnable_counts_actors_waiting_for_a_thread(journal: Journal) -> None:
    scheduler = ActorScheduler(1, "one-thread")
    stuck = Counter.start(None, scheduler, "stuck", journal)
    waiting = [Counter.start(None, scheduler, f"w{i}", journal) for i in range(3)]
    entered, release = threading.Event(), threading.Event()
    try:
        stuck.tell(("block", entered, release))
        assert entered.wait(WAIT_S)
        for ref in waiting:
            ref.tell("hello")
        assert scheduler.runnable() == 3  # the only thread is held by `stuck`
        release.set()
        for ref in waiting:
            assert ref.ask("seen", timeout=WAIT_S) == ["hello"]
        assert scheduler.runnable() == 0
    finally:
        release.set()
        for ref in [stuck, *waiting]:
            ref.stop()
        scheduler.stop()


def test_a_system_exit_in_on_start_ends_that_actor_not_a_shared_thread(
    accounts: DynamicSupervisor, journal: Journal
) -> None:
    scheduler = ActorScheduler(1, "one-thread")
    links: list[Link] = []

    def start(link: Link) -> Any:
        links.append(link)
        return ExitsInStart.start(link, scheduler)

    try:
        accounts.start_child("exits", start)
        assert links[0].exited.wait(WAIT_S)
        report = links[0].exit_report
        assert report is not None and "exit in on_start" in report.reason
        # The only thread survived: another actor is still served.
        other = Counter.start(None, scheduler, "other", journal)
        assert other.ask("ping", timeout=WAIT_S) == 1
        other.stop()
    finally:
        scheduler.stop()


def test_passivated_actors_let_go_of_what_they_held_without_a_garbage_collection(
    accounts: DynamicSupervisor, scheduler: ActorScheduler
) -> None:
    """Issue 20: an ended actor sat in reference cycles (with its inbox, and
    its link with the exit report), so all it had loaded stayed in memory
    until a full collection, which a serving process makes rare: ~15 KiB
    per customer touched past the live bound."""
    ids = tuple(f"c{i}" for i in range(50))
    gc.collect()
    gc.disable()
    try:
        # Refs handed out earlier (a request that just looked one up) still exist.
        refs = [accounts.start_child(cid, lambda link: Holder.start(link, scheduler))
                for cid in ids]
        loaded = [ref.ask("loaded", timeout=WAIT_S) for ref in refs]
        assert accounts.terminate_children(ids, timeout_ms=int(WAIT_S * 1000)) == len(ids)
        wait_until(lambda: all(ref() is None for ref in loaded))
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left_for_the_collector = {type(o).__name__ for o in gc.garbage}
        assert not left_for_the_collector & {"Holder", "Link", "ChildExited", "_Inbox"}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
