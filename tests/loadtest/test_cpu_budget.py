"""The bench's CPU-per-charge report, from a real /metrics scrape."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

from loadtest import cpu_budget
from loadtest.cpu_budget import GENERATOR, CpuSample, budget, format_budgets, parse_cpu_seconds


def _metrics_text(threads: dict[str, float], children: dict[str, float]) -> str:
    registry = CollectorRegistry()
    by_thread = Counter("billing_thread_cpu_seconds", "", ["thread"], registry=registry)
    by_child = Counter("billing_child_process_cpu_seconds", "", ["process"], registry=registry)
    for name, value in threads.items():
        by_thread.labels(name).inc(value)
    for name, value in children.items():
        by_child.labels(name).inc(value)
    Counter("billing_other_seconds", "", registry=registry).inc(99)
    return generate_latest(registry).decode()


def test_parse_reads_threads_and_children_only() -> None:
    text = _metrics_text({"MainThread": 1.5, "signer": 0.25}, {"crypto.sign_worker": 2.0})
    assert parse_cpu_seconds(text) == {
        "MainThread": 1.5,
        "signer": 0.25,
        "crypto.sign_worker": 2.0,
    }


def test_budget_is_the_cpu_each_part_spent_per_charge() -> None:
    before = CpuSample(10.0, {"MainThread": 1.0, "signer": 0.5, GENERATOR: 3.0})
    after = CpuSample(
        12.0, {"MainThread": 1.4, "signer": 0.5, GENERATOR: 3.2, "crypto.sign_worker": 0.6}
    )
    result = budget("rate", before, after, charges=2_000)
    assert result is not None
    assert result.us_per_charge == pytest.approx(
        {"MainThread": 200.0, GENERATOR: 100.0, "crypto.sign_worker": 300.0}
    )  # "signer" spent nothing: left out
    assert result.total_us == pytest.approx(600.0)
    assert result.cpus_busy == pytest.approx(0.6)  # 1.2 CPU-seconds in 2 s
    assert result.charges_per_s_max(2) == pytest.approx(2e6 / 600)
    assert budget("rate", before, after, charges=0) is None


def test_the_table_has_a_column_per_phase_and_the_ceiling() -> None:
    before = CpuSample(0.0, {})
    sustained = budget("sustained", before, CpuSample(1.0, {"MainThread": 0.5, "x": 0.1}), 1_000)
    rate = budget("rate", before, CpuSample(1.0, {"MainThread": 0.3}), 1_000)
    assert sustained is not None and rate is not None
    table = format_budgets([sustained, rate], cpus=2)
    lines = table.splitlines()
    assert lines[0].split()[-2:] == ["sustained", "rate"]
    assert lines[2].split() == ["MainThread", "500", "300"]  # known parts first
    assert lines[3].split() == ["x", "100", "0"]
    assert "total" in table and lines[-3].split()[-2:] == ["600", "300"]
    assert lines[-1].split()[-2:] == ["3333", "6667"]  # 2 CPUs / cost per charge


def test_phase_names_longer_than_a_column_stay_apart() -> None:
    """bench_audit's phases ("audit running #1") were printed run together."""
    before = CpuSample(0.0, {"MainThread": 0.0})
    phases = [
        budget(name, before, CpuSample(1.0, {"MainThread": 0.1}), 1_000)
        for name in ("audit idle #1", "audit running #1")
    ]
    lines = format_budgets([b for b in phases if b is not None], cpus=2).splitlines()
    header = re.split(r"\s{2,}", lines[0])
    assert header == ["CPU us per charge", "audit idle #1", "audit running #1"]
    assert lines[2].split() == ["MainThread", "100", "100"]


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, list[int]]]:
    """A real loopback server answering /metrics (status settable)."""
    status = [200]
    text = _metrics_text({"MainThread": 2.0}, {"crypto.sign_worker": 1.0})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(status=status[0], text=text)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    host, port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}", status
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_sample_scrapes_the_service_and_adds_the_generator(
    metrics_server: tuple[str, list[int]],
) -> None:
    url, _ = metrics_server
    sample = cpu_budget.sample(url)
    assert sample is not None
    assert sample.seconds_by_part["MainThread"] == 2.0
    assert sample.seconds_by_part["crypto.sign_worker"] == 1.0
    assert sample.seconds_by_part[GENERATOR] > 0  # this test process has run


def test_sample_is_none_when_metrics_cannot_be_read(
    metrics_server: tuple[str, list[int]],
) -> None:
    url, status = metrics_server
    status[0] = 503
    assert cpu_budget.sample(url) is None
