"""The usage chart: stacked bars per day and entitlement, drawn as SVG on
the server (it works without JavaScript and under a strict CSP)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from ledger.money import format_amount
from ledger.web_store import UsageDay

WIDTH_PX = 640
HEIGHT_PX = 220
AXIS_PX = 24
COLORS = ("#0a5bd3", "#d4622c", "#1a7f37", "#8250df", "#bf3989", "#57606a")


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, str]]  # (x, day) under the axis
    legend: list[tuple[int, str]]  # (color index, entitlement)
    peak: str  # the tallest day's total, formatted
    empty: bool


def since_day(today: date, days: int) -> str:
    return (today - timedelta(days=days - 1)).isoformat()


def usage_chart(usage: list[UsageDay], today: date, days: int, currency: str) -> Chart:
    day_names = [(today - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    entitlements = sorted({u.entitlement_id for u in usage})
    color_of = {e: i % len(COLORS) for i, e in enumerate(entitlements)}
    totals = {d: 0 for d in day_names}
    for u in usage:
        if u.day in totals:
            totals[u.day] += max(0, u.amount_minor)
    peak = max(totals.values(), default=0)
    slot = WIDTH_PX / days
    plot_px = HEIGHT_PX - AXIS_PX
    bars: list[Bar] = []
    stacked = {d: 0.0 for d in day_names}
    for u in sorted(usage, key=lambda u: (u.day, u.entitlement_id)):
        if u.day not in totals or peak == 0 or u.amount_minor <= 0:
            continue
        height = plot_px * u.amount_minor / peak
        stacked[u.day] += height
        bars.append(Bar(
            x=round(day_names.index(u.day) * slot + slot * 0.15, 2),
            y=round(plot_px - stacked[u.day], 2),
            width=round(slot * 0.7, 2),
            height=round(height, 2),
            color=COLORS[color_of[u.entitlement_id]],
            title=f"{u.day} {u.entitlement_id}: {format_amount(u.amount_minor, currency)} "
            f"{currency} in {u.receipts} receipts",
        ))
    labels = [(round(i * slot + slot / 2, 2), d[5:]) for i, d in enumerate(day_names)
              if i % max(1, days // 7) == 0]
    return Chart(WIDTH_PX, HEIGHT_PX, bars, labels,
                 [(color_of[e], e) for e in entitlements],
                 format_amount(peak, currency), peak == 0)
