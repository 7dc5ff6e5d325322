"""AccountActor: one per customer; the only writer of that customer's chain.

It decides each receipt's place in the chain (seq, previous hash), enforces
idempotency and quota in memory, and hands the receipt to the signer pool and
ledger writer; the charge is answered when the receipt is durable. Its state is
loaded from the store on start and again whenever a commit failed, after a
barrier has let every receipt already in flight settle.

Idempotency without a read per charge: a key the actor remembers (in flight
or recently settled) is answered from memory; any other key is charged
without asking the store, whose unique key index refuses a repeat at commit,
and the ledger writer answers that repeat from the store (replay, or 409).
A store read per charge cost ~25% of single-event throughput. Keys of the
last `settled_keys_max` settled charges are kept (keys only), and a repeat of
one of those (the usual retry, soon after) is read first. A repeat of an
older key fails the customer's other receipts in the same commit (retry-safe)
and makes the actor reload; for `key_reads_after_reload_s` afterwards it
reads every batch's keys first, so a storm of such retries costs one failure,
not one per retry. A quota or balance refusal is only given after counting
again from the store if memory may count such a repeat.

A final refusal (quota, payment, entitlement, currency; charges.
KEPT_REFUSAL_CODES) is kept under its key by the ledger writer before it is
answered, as Stripe keeps a first answer: a key names a receipt or a
refusal, and a retry gets the same answer, replayed, even once the quota
has grown. The store's key check covers both, so the same rules hold.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple

import pykka
import structlog

from actors import charges
from actors.charges import (
    ChargeBatch,
    ChargeCommand,
    ChargeOutcome,
    answer_from_stored,
    key_reuse_refused,
    refused,
)
from actors.delivery.threshold_alerts import AlertState, ThresholdAlerts
from actors.ids import SecretIdMinter
from actors.metrics import ActorMetrics
from actors.pending import PendingReceipt, PendingRefusal
from actors.pipeline import Pipeline, Unavailable
from actors.tickets import TicketFuture
from crypto import hash_core
from ledger import AccountState, Entitlement, LedgerStore, StoredAnswer, StoredRefusal, limits
from ledger.clock import parse_rfc3339
from ledger.model import UNPAID_STATUSES
from ledger.webhook_store import OutboundEvent
from supervisor import ActorScheduler, Link, ScheduledActor

log = structlog.get_logger(__name__)

_receipt_ids = SecretIdMinter("rcpt_")
# A batch's stored answers (receipts or kept refusals) by idempotency key;
# None: known (or taken) to have none.
_StoredByKey = dict[str, StoredAnswer | None]
# Refusals that depend on the usage and balance counted in memory.
_COUNTED_REFUSALS = frozenset({charges.QUOTA_EXCEEDED, charges.BALANCE_LIMIT})


class Reload(NamedTuple):
    """Reload the account from the store (entitlements changed, or a commit failed)."""


class InjectFault(NamedTuple):
    """Test hook: crash this actor (only sent when fault injection is enabled)."""

    reason: str


@dataclass(frozen=True, slots=True)
class AccountDeps:
    store: LedgerStore
    # The threads every account actor of this service shares (see
    # supervisor._scheduled); their number is a setting.
    scheduler: ActorScheduler
    pipeline: Pipeline
    metrics: ActorMetrics
    now_rfc3339: Callable[[], str]
    activity: dict[str, float]
    recent_keys_max: int = limits.account_recent_keys_max
    barrier_timeout_s: float = 10.0
    key_reads_after_reload_s: float = 60.0
    settled_keys_max: int = limits.account_settled_keys_max
    # See Entitlement.in_payment_grace; 0: an unpaid entitlement is refused at once.
    payment_grace_s: float = 0.0
    # Threshold alerts (actors.delivery.threshold_alerts); None: the store keeps no events.
    alerts: ThresholdAlerts | None = None


class AccountActor(ScheduledActor):
    def __init__(self, link: Link, customer_id: str, deps: AccountDeps) -> None:
        super().__init__(link, deps.scheduler)
        self.customer_id = customer_id
        self._deps = deps
        self._account: AccountState | None = None
        self._seq = 0
        self._last_hash = ""
        self._balance_minor = 0
        self._entitlements: dict[str, Entitlement] = {}
        self._used_minor: dict[str, int] = {}
        # Receipts and kept refusals in flight or recently settled, by key.
        self._recent: OrderedDict[str, PendingReceipt | PendingRefusal] = OrderedDict()
        self._read_keys_until_s = 0.0  # monotonic; see the module docstring
        self._settled_keys: OrderedDict[str, None] = OrderedDict()  # see _note_settled
        # Something was charged since the last load without a read of its key:
        # the usage and balance in memory may count a repeat that will not commit.
        self._may_count_repeats = False
        # Per reversed receipt: (minor units reversed, reversals), counting
        # those in flight; filled from the store on a receipt's first reversal.
        self._reversed: dict[str, tuple[int, int]] = {}
        # Thresholds and what fired, reloaded with the rest (see _alert_events).
        self._alerts: AlertState | None = None

    @classmethod
    def _create_future(cls) -> pykka.Future[Any]:
        # A failed or undelivered ChargeBatch settles its tickets (actors.tickets).
        return TicketFuture()

    # -- lifecycle -----------------------------------------------------------
    def on_start(self) -> None:
        super().on_start()
        self._reload()
        self._deps.metrics.live_accounts.inc()

    def on_stop(self) -> None:
        self._deps.metrics.live_accounts.dec()
        self._deps.activity.pop(self.customer_id, None)
        super().on_stop()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._deps.metrics.live_accounts.dec()
        log.error("account.crashed", customer_id=self.customer_id, reason=repr(exception_value))
        super().on_failure(exception_type, exception_value, traceback)

    def _reload(self) -> None:
        # Receipts of an earlier incarnation may still be on their way to the
        # store; wait for them so the chain head we load is the real one.
        if not self._deps.pipeline.barrier(self.customer_id, self._deps.barrier_timeout_s):
            raise RuntimeError("in-flight receipts did not settle before reload")
        account = self._deps.store.load_account(self.customer_id)
        self._account = account
        self._may_count_repeats = False
        self._recent = OrderedDict(
            (key, entry) for key, entry in self._recent.items() if not entry.failed
        )
        if account is None:
            return
        self._seq = account.seq
        self._last_hash = account.last_receipt_hash
        self._balance_minor = account.balance_minor
        self._entitlements = dict(account.entitlements)
        self._used_minor = {eid: e.used_minor for eid, e in account.entitlements.items()}
        self._reversed = {}
        if self._deps.alerts is not None:
            self._alerts = self._deps.alerts.load(self.customer_id)

    # -- messages --------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        self._deps.activity[self.customer_id] = time.monotonic()
        if isinstance(message, ChargeBatch):
            stored, unread = self._stored_receipts(message.commands)
            for command in message.commands:
                self._charge(command, stored, unread)
            return None
        if isinstance(message, Reload):
            self._reload()
            self._read_keys_until_s = time.monotonic() + self._deps.key_reads_after_reload_s
            return None
        if isinstance(message, InjectFault):
            raise RuntimeError(f"injected fault: {message.reason}")
        return super().on_receive(message)

    def _stored_receipts(
        self, commands: tuple[ChargeCommand, ...]
    ) -> tuple[_StoredByKey, set[str]]:
        """The stored receipts of a batch's keys, read once for the batch, and
        the keys taken as absent without a read (see the module docstring):
        read are the keys this actor saw settle recently, or all of them for a
        while after a reload.

        Only keys with no receipt in flight are looked up: for those the answer
        holds until this actor charges one of them (it is the customer's only
        writer), and `_charge` drops a key from the map when it does."""
        if self._account is None:
            return {}, set()
        # Even with no receipt yet (seq 0) a key may hold a kept refusal.
        keys = [c.idempotency_key for c in commands if not self._in_flight(c.idempotency_key)]
        unread: set[str] = set()
        to_read = keys
        if time.monotonic() >= self._read_keys_until_s:
            to_read = []
            for key in keys:
                if key in self._settled_keys:
                    to_read.append(key)
                else:
                    unread.add(key)
        stored: _StoredByKey = dict.fromkeys(unread)
        if to_read:
            found = self._deps.store.find_answers_by_keys(self.customer_id, to_read)
            stored.update((key, found.get(key)) for key in to_read)
        return stored, unread

    def _in_flight(self, key: str) -> bool:
        entry = self._recent.get(key)
        return entry is not None and not entry.failed

    def _charge(self, command: ChargeCommand, stored: _StoredByKey, unread: set[str]) -> None:
        if self._account is None:
            command.ticket.settle(
                refused(charges.CUSTOMER_NOT_FOUND, "no such customer", "customer_id")
            )
            return
        if self._answered_from_history(command, command.fingerprint, stored):
            return
        refusal = self._refusal(command)
        if refusal is not None:
            self._refuse(command, refusal)
        else:
            self._submit_receipt(self._with_reversal_left(command))
            if command.idempotency_key in unread:
                self._may_count_repeats = True
        stored.pop(command.idempotency_key, None)  # no longer known from the read

    def _refusal(self, command: ChargeCommand) -> ChargeOutcome | None:
        """Why this charge is refused, or None: counted again from the store
        first when memory may count a repeat of a stored key, which will not
        commit (see the module docstring)."""
        account = self._account
        if account is None:
            return refused(charges.CUSTOMER_NOT_FOUND, "no such customer")
        if command.reverses is not None:
            return self._check_reversal(command, command.reverses)
        refusal = self._check(command, account)
        if refusal is not None and refusal.code in _COUNTED_REFUSALS and self._may_count_repeats:
            self._reload()
            if self._account is None:
                return refused(charges.CUSTOMER_NOT_FOUND, "no such customer")
            refusal = self._check(command, self._account)
        return refusal

    def _refuse(self, command: ChargeCommand, refusal: ChargeOutcome) -> None:
        """Answer a refusal; a final one is kept under the key first (by the
        ledger writer), so a retry is answered the same, never charged."""
        if refusal.code not in charges.KEPT_REFUSAL_CODES:
            command.ticket.settle(refusal)
            return
        kept = StoredRefusal(
            customer_id=self.customer_id,
            idempotency_key=command.idempotency_key,
            request_fingerprint=command.fingerprint,
            code=refusal.code,
            message=refusal.message,
            param=refusal.param,
            recorded_at=self._deps.now_rfc3339(),
        )
        pending = PendingRefusal(kept, refusal, command.ticket)
        try:
            self._deps.pipeline.keep_refusal(pending)
        except Unavailable as error:
            command.ticket.settle(refused(charges.OVERLOADED, str(error)))
            return
        self._remember(command.idempotency_key, pending)

    def _with_reversal_left(self, command: ChargeCommand) -> ChargeCommand:
        """A reversal of "all that is left", decided here, where reversals are
        counted. The fingerprint stays the request's, so a retry replays."""
        if command.reverses is None or command.amount_minor != 0:
            return command
        total, _ = self._reversed[command.reverses]
        original = self._deps.store.get_receipt(command.reverses)
        left = 0 if original is None else original.amount_minor - total
        return dataclasses.replace(command, amount_minor=-left)

    def _submit_receipt(self, command: ChargeCommand) -> None:
        pending = self._pending_receipt(command)
        if not self._deps.pipeline.signs_receipts:
            pending.seal(signature=None)  # proved by its commit's checkpoint
        try:
            self._deps.pipeline.submit(pending)
        except Unavailable as error:
            command.ticket.settle(refused(charges.OVERLOADED, str(error)))
            return
        # Only now, with the receipt on its way, does the chain advance.
        self._seq = pending.seq
        self._last_hash = pending.receipt_hash
        self._balance_minor = pending.balance_after_minor
        self._used_minor[command.entitlement_id] = (
            self._used_minor.get(command.entitlement_id, 0) + command.amount_minor
        )
        if self._alerts is not None:
            self._alerts.mark(pending.events)
        if command.reverses is not None:
            total, count = self._reversed[command.reverses]
            self._reversed[command.reverses] = (total - command.amount_minor, count + 1)
        self._remember(command.idempotency_key, pending)

    def _pending_receipt(self, command: ChargeCommand) -> PendingReceipt:
        """The charge's receipt at the next place in the chain, hashed."""
        entitlement = self._entitlements[command.entitlement_id]
        used_before = self._used_minor.get(command.entitlement_id, 0)
        used_after = used_before + command.amount_minor
        quota_remaining = (
            None if entitlement.quota_minor is None else entitlement.quota_minor - used_after
        )
        seq = self._seq + 1
        balance_after = self._balance_minor + command.amount_minor
        recorded_at = self._deps.now_rfc3339()
        receipt_id = _receipt_ids()
        core: dict[str, Any] = {
            "receipt_id": receipt_id,
            "customer_id": self.customer_id,
            "seq": seq,
            "idempotency_key": command.idempotency_key,
            "entitlement_id": command.entitlement_id,
            "amount_minor": command.amount_minor,
            "currency": command.currency,
            "usage_description": command.usage_description,
            "event_timestamp": command.event_timestamp,
            "recorded_at": recorded_at,
            "balance_after_minor": balance_after,
            "quota_remaining_minor": quota_remaining,
            "previous_receipt_hash": self._last_hash,
        }
        hashed = hash_core(core)  # canonicalized once: hashed here, signed later (receipt mode)
        return PendingReceipt(
            customer_id=self.customer_id,
            seq=seq,
            idempotency_key=command.idempotency_key,
            fingerprint=command.fingerprint,
            entitlement_id=command.entitlement_id,
            amount_minor=command.amount_minor,
            currency=command.currency,
            balance_after_minor=balance_after,
            recorded_at=recorded_at,
            receipt_id=receipt_id,
            receipt_hash=hashed.receipt_hash,
            previous_receipt_hash=self._last_hash,
            request=command.request,
            events=self._alert_events(entitlement, used_before, used_after, command.currency,
                                      receipt_id, recorded_at),
            core=core,
            canonical_core=hashed.canonical,
            ticket=command.ticket,
        )

    def _alert_events(self, entitlement: Entitlement, used_before: int, used_after: int,
                      currency: str, receipt_id: str, recorded_at: str
                      ) -> tuple[OutboundEvent, ...]:
        """Threshold alerts this charge sets off, committed with its receipt.
        A failed commit makes the actor reload, and with it what fired."""
        if self._alerts is None:
            return ()
        return self._alerts.crossed(entitlement, used_before, used_after, currency,
                                    receipt_id, recorded_at)

    def _answered_from_history(
        self, command: ChargeCommand, fingerprint: str, stored_by_key: _StoredByKey
    ) -> bool:
        key = command.idempotency_key
        entry = self._recent.get(key)
        if entry is not None and entry.failed:
            del self._recent[key]
            entry = None
        if entry is not None:
            if entry.fingerprint != fingerprint:
                command.ticket.settle(key_reuse_refused())
            else:
                self._deps.metrics.replays.inc()
                entry.add_waiter(command.ticket)
            return True
        if key in stored_by_key:
            stored = stored_by_key[key]
        else:  # in flight when the batch was read, settled since
            stored = self._deps.store.find_answers_by_keys(self.customer_id, [key]).get(key)
        if stored is None:
            return False
        outcome = answer_from_stored(stored, fingerprint)
        if outcome.kind == "replayed":
            self._deps.metrics.replays.inc()
        command.ticket.settle(outcome)
        return True

    def _check(self, command: ChargeCommand, account: AccountState) -> ChargeOutcome | None:
        entitlement = self._entitlements.get(command.entitlement_id)
        if entitlement is None:
            return refused(
                charges.ENTITLEMENT_NOT_FOUND,
                f"no entitlement {command.entitlement_id!r} for this customer",
                "entitlement_id",
            )
        if not entitlement.chargeable:
            refusal = self._inactive_refusal(command, entitlement)
            if refusal is not None:
                return refusal
        if command.currency != account.customer.currency:
            return refused(
                charges.CURRENCY_MISMATCH,
                f"this account bills in {account.customer.currency}, not {command.currency}",
                "currency",
            )
        used = self._used_minor.get(command.entitlement_id, 0)
        if (
            entitlement.policy == "hard"
            and entitlement.quota_minor is not None
            and used + command.amount_minor > entitlement.quota_minor
        ):
            return refused(
                charges.QUOTA_EXCEEDED,
                "this charge would exceed the hard quota of the entitlement",
                "amount",
            )
        if self._balance_minor + command.amount_minor > limits.balance_minor_max:
            return refused(charges.BALANCE_LIMIT, "the account balance limit is reached", "amount")
        return None

    def _check_reversal(self, command: ChargeCommand, original_id: str) -> ChargeOutcome | None:
        """A reversal never takes more than what is left of its receipt: the
        actor is the customer's only writer, so concurrent reversals are
        counted here one after the other, those in flight included."""
        original = self._deps.store.get_receipt(original_id)
        if original is None or original.customer_id != self.customer_id:
            return refused(charges.RECEIPT_NOT_FOUND, "no such receipt", "receipt_id")
        if original.amount_minor <= 0:
            return refused(charges.REVERSAL_NOT_ALLOWED,
                           "a reversal cannot itself be reversed", "receipt_id")
        if original.entitlement_id not in self._entitlements:
            return refused(charges.ENTITLEMENT_NOT_FOUND, "the receipt's entitlement is gone")
        if original_id not in self._reversed:
            self._reversed[original_id] = self._stored_reversals(original_id)
        total, count = self._reversed[original_id]
        left = original.amount_minor - total
        if -command.amount_minor > left or left == 0:
            return refused(
                charges.REVERSAL_EXCEEDS_RECEIPT,
                f"only {left} minor units of this receipt are left to reverse",
                "amount",
            )
        if count >= limits.reversals_per_receipt_max:
            return refused(charges.REVERSAL_NOT_ALLOWED,
                           "this receipt has as many reversals as allowed", "receipt_id")
        return None

    def _stored_reversals(self, original_id: str) -> tuple[int, int]:
        """(minor units, count) of the committed reversals of a receipt. A scan
        of the customer's receipts: reversals are rare operator actions, and
        the result is kept until the next reload."""
        total = count = 0
        for receipt in self._deps.store.iter_receipts(self.customer_id):
            if charges.reversed_receipt_id(receipt.idempotency_key,
                                           receipt.amount_minor) == original_id:
                total -= receipt.amount_minor
                count += 1
        return total, count

    def _inactive_refusal(
        self, command: ChargeCommand, entitlement: Entitlement
    ) -> ChargeOutcome | None:
        """None while an unpaid entitlement is in its grace period."""
        if entitlement.status in UNPAID_STATUSES:
            now = parse_rfc3339(self._deps.now_rfc3339())
            if entitlement.in_payment_grace(now, self._deps.payment_grace_s):
                return None
            return refused(
                charges.PAYMENT_REQUIRED,
                f"entitlement {command.entitlement_id!r} is {entitlement.status}: "
                "the subscription's payment failed; pay the open invoice",
                "entitlement_id",
            )
        return refused(
            charges.ENTITLEMENT_INACTIVE,
            f"entitlement {command.entitlement_id!r} is {entitlement.status}",
            "entitlement_id",
        )

    def _remember(self, key: str, pending: PendingReceipt | PendingRefusal) -> None:
        """Track a receipt in flight so concurrent duplicates coalesce onto it.

        Settled entries are dropped oldest first (a customer's receipts settle
        in order): a later duplicate of a committed key is answered from the
        store, which has it before the first reply goes out. Keeping every
        settled receipt (up to 4,096 per live customer, each with its core)
        grew memory without bound in practice and made each full GC pass stall
        every thread for ~150 ms."""
        recent = self._recent
        while recent:
            oldest = next(iter(recent.values()))
            if oldest.outcome is None:
                break
            settled_key, _ = recent.popitem(last=False)
            self._note_settled(settled_key)
        recent[key] = pending
        if len(recent) > self._deps.recent_keys_max:
            dropped_key, _ = recent.popitem(last=False)
            self._note_settled(dropped_key)

    def _note_settled(self, key: str) -> None:
        """Keep the key (not the receipt) of a settled charge for a while: a
        client's retry usually comes soon, and a key known to be used is read
        from the store before charging, not caught at commit."""
        settled = self._settled_keys
        settled[key] = None
        settled.move_to_end(key)
        if len(settled) > self._deps.settled_keys_max:
            settled.popitem(last=False)
