"""Stripe subscription -> Entitlement: pure functions, no I/O.

Why pure: every webhook triggers a full reconciliation from Stripe's current
state, so the same subscriptions must always give the same entitlement,
whatever order (or how many times) the events arrived in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Literal

from ledger.clock import format_rfc3339
from ledger.model import Entitlement
from ledger.money import MoneyError, parse_amount

__all__ = [
    "PlanSpec",
    "choose_best_subscription",
    "entitlement_from_subscription",
    "epoch_to_rfc3339",
    "field_of",
    "monthly_amount",
    "no_subscription_entitlement",
    "same_grant",
    "subscription_period",
    "subscription_price",
]

PolicyName = Literal["hard", "soft"]

# Lower rank wins: a customer with any active subscription is active.
_STATUS_RANK: Mapping[str, int] = {"active": 0, "trialing": 1, "past_due": 2}
_OTHER_RANK = 3
# Status given to a customer with no subscription at all (never chargeable).
NO_SUBSCRIPTION_STATUS = "none"


@dataclass(frozen=True, slots=True)
class PlanSpec:
    """What a price's lookup_key grants. `quota` is a decimal string in the
    price's currency (major units, e.g. "25.00"); None means unlimited."""

    max_bots: int | None
    quota: str | None
    policy: PolicyName = "hard"
    # Usage reported to Stripe (actors.stripe.usage): the Billing meter's
    # event name, and the meter's id for its event summaries. None: the
    # plan's usage is not reported.
    meter_event_name: str | None = None
    meter_id: str | None = None


def field_of(obj: Any, key: str, default: Any = None) -> Any:
    """Read a field of a StripeObject or a plain dict (the fakes and tests use both)."""
    if obj is None:
        return default
    try:
        value = obj[key]
    except (KeyError, TypeError, IndexError):
        return default
    return default if value is None else value


def _items(subscription: Any) -> list[Any]:
    items = field_of(subscription, "items")
    data = field_of(items, "data", [])
    return list(data)


def subscription_price(subscription: Any) -> Any:
    """The price of the subscription's first item (our plans have one item)."""
    items = _items(subscription)
    return field_of(items[0], "price") if items else None


def subscription_period(subscription: Any) -> tuple[int | None, int | None]:
    """(current_period_start, current_period_end) as epoch seconds.

    Since API version 2025-03-31 Stripe moved these fields from the
    subscription to its items; read either.
    """
    start = field_of(subscription, "current_period_start")
    end = field_of(subscription, "current_period_end")
    if start is None or end is None:
        items = _items(subscription)
        if items:
            start = field_of(items[0], "current_period_start", start)
            end = field_of(items[0], "current_period_end", end)
    return (int(start) if start is not None else None, int(end) if end is not None else None)


def choose_best_subscription(subscriptions: Iterable[Any]) -> Any | None:
    """active > trialing > past_due > anything else; ties: latest period end."""
    best: Any = None
    best_key: tuple[int, int] | None = None
    for subscription in subscriptions:
        rank = _STATUS_RANK.get(str(field_of(subscription, "status", "")), _OTHER_RANK)
        _, end = subscription_period(subscription)
        key = (rank, -(end or 0))
        if best_key is None or key < best_key:
            best, best_key = subscription, key
    return best


def epoch_to_rfc3339(epoch_s: int | None) -> str | None:
    if epoch_s is None:
        return None
    return format_rfc3339(datetime.fromtimestamp(int(epoch_s), UTC))


def _plan_key(price: Any) -> str | None:
    key = field_of(price, "lookup_key") or field_of(field_of(price, "metadata"), "plan")
    return str(key) if key else None


def _metadata_int(metadata: Any, key: str) -> int | None:
    raw = field_of(metadata, key)
    if raw is None or str(raw).strip() == "":
        return None
    text = str(raw).strip()
    if not text.isdigit():
        raise ValueError(f"price metadata {key} must be a non-negative integer")
    return int(text)


def entitlement_from_subscription(
    *,
    customer_id: str,
    entitlement_id: str,
    subscription: Any,
    plans: Mapping[str, PlanSpec],
    updated_at: str,
) -> Entitlement:
    """The entitlement a subscription grants.

    An unknown plan grants nothing chargeable beyond a zero hard quota: a
    misconfigured price must never turn into unlimited usage.
    """
    price = subscription_price(subscription)
    plan = _plan_key(price)
    spec = plans.get(plan) if plan else None
    currency = str(field_of(price, "currency", "")).upper()
    metadata = field_of(price, "metadata", {})
    max_bots = spec.max_bots if spec else None
    quota_text = spec.quota if spec else "0"
    policy: PolicyName = spec.policy if spec else "hard"
    # Price metadata overrides the configured plan (one-off deals without a deploy).
    meta_bots = _metadata_int(metadata, "max_bots")
    if meta_bots is not None:
        max_bots = meta_bots
    meta_quota = field_of(metadata, "quota")
    if meta_quota is not None and str(meta_quota).strip():
        quota_text = str(meta_quota).strip()
    quota_minor: int | None = None
    if quota_text is not None:
        try:
            quota_minor = parse_amount(quota_text, currency)
        except MoneyError as error:
            raise ValueError(f"quota of plan {plan!r}: {error}") from error
    start, end = subscription_period(subscription)
    return Entitlement(
        customer_id=customer_id,
        entitlement_id=entitlement_id,
        quota_minor=quota_minor,
        policy=policy,
        status=str(field_of(subscription, "status", "unknown")),
        updated_at=updated_at,
        plan=plan,
        max_bots=max_bots,
        period_start=epoch_to_rfc3339(start),
        period_end=epoch_to_rfc3339(end),
        trial_end=epoch_to_rfc3339(field_of(subscription, "trial_end")),
        cancel_at_period_end=bool(field_of(subscription, "cancel_at_period_end", False)),
    )


def no_subscription_entitlement(
    customer_id: str, entitlement_id: str, updated_at: str
) -> Entitlement:
    """A customer without any subscription: nothing chargeable."""
    return Entitlement(
        customer_id=customer_id,
        entitlement_id=entitlement_id,
        quota_minor=0,
        policy="hard",
        status=NO_SUBSCRIPTION_STATUS,
        updated_at=updated_at,
    )


def same_grant(a: Entitlement | None, b: Entitlement) -> bool:
    """True if `a` grants exactly what `b` grants (ignoring timestamps and usage)."""
    if a is None:
        return False
    return (
        a.quota_minor,
        a.policy,
        a.status,
        a.plan,
        a.max_bots,
        a.period_start,
        a.period_end,
        a.trial_end,
        a.cancel_at_period_end,
    ) == (
        b.quota_minor,
        b.policy,
        b.status,
        b.plan,
        b.max_bots,
        b.period_start,
        b.period_end,
        b.trial_end,
        b.cancel_at_period_end,
    )


# Months per interval unit, as exact fractions: a year is 12 months, a week is
# 12/52 of a month... inverted: monthly = amount * _PER_MONTH[interval] / count.
_PER_MONTH: Mapping[str, Fraction] = {
    "month": Fraction(1),
    "year": Fraction(1, 12),
    "week": Fraction(52, 12),
    "day": Fraction(365, 12),
}


def monthly_amount(subscription: Any) -> tuple[str, Fraction] | None:
    """(CURRENCY, exact monthly amount in minor units) of a subscription's items.

    Exact rationals (not floats); the caller rounds once per total.
    """
    total = Fraction(0)
    currency = None
    for item in _items(subscription):
        price = field_of(item, "price")
        recurring = field_of(price, "recurring")
        unit_amount = field_of(price, "unit_amount")
        if recurring is None or unit_amount is None:
            continue
        interval = str(field_of(recurring, "interval", "month"))
        count = int(field_of(recurring, "interval_count", 1)) or 1
        quantity = int(field_of(item, "quantity", 1))
        factor = _PER_MONTH.get(interval)
        if factor is None:
            continue
        total += Fraction(int(unit_amount) * quantity) * factor / count
        currency = str(field_of(price, "currency", "")).upper()
    if currency is None:
        return None
    return currency, total
