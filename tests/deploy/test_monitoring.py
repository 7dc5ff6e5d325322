"""The alert rules and the dashboard watch metrics the service really
exports: a renamed metric or a misspelt label would otherwise leave an alert
that never fires and a panel that stays empty, and nobody would notice."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.compose import build_runtime
from gateway.settings import SERVICE_VARIABLES, Settings
from tests.deploy.deploy_files import (
    DEPLOY,
    TERRAFORM,
    dashboard_exprs,
    parse_promql,
    terraform_locals,
    terraform_variables,
)

ALERTS = DEPLOY / "monitoring" / "alerts.yaml"
DASHBOARD = DEPLOY / "monitoring" / "grafana-dashboard.json"
SCRAPE = DEPLOY / "monitoring" / "prometheus-scrape.yaml"

# Sample names prometheus_client exposes for one metric family, by type.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
# Prometheus adds these to every series it scrapes.
_TARGET_LABELS = frozenset({"instance", "job"})


@pytest.fixture(scope="module")
def registry(
    signing_key_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CollectorRegistry]:
    """The registry of a real runtime (supervision tree started, nothing
    served): exactly what GET /metrics renders."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("billing"),
        admin_token="adm_deploy_test",
        signing_key_path=signing_key_file,
        signer_workers=1,
        drain_timeout_s=1.0,
        # The dashboard covers both signing modes; receipt mode also runs the
        # signer stage and its signing processes, so it exports every series.
        receipt_signing="receipt",
    ).validate()
    runtime = build_runtime(settings, {})
    try:
        yield runtime.services.registry
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def exported(registry: CollectorRegistry) -> dict[str, frozenset[str]]:
    """Every sample name /metrics can carry -> the label names it carries."""
    names: dict[str, frozenset[str]] = {}
    by_name = registry._names_to_collectors  # label names of families with no sample yet
    for family in registry.collect():
        for suffix in _SUFFIXES[family.type]:
            sample = family.name + suffix
            collector = by_name.get(sample)
            labels = frozenset(getattr(collector, "_labelnames", ()))
            # Custom collectors (python_gc_*) name their labels only in samples.
            labels |= {label for s in family.samples if s.name == sample for label in s.labels}
            bucket = {"le"} if suffix == "_bucket" else set()
            names[sample] = labels | bucket | _TARGET_LABELS
    names["up"] = _TARGET_LABELS  # Prometheus's own series per scraped target
    return names


def _alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _all_queries() -> list[tuple[str, str]]:
    queries = [(f"alert {rule['alert']}", str(rule["expr"])) for rule in _alert_rules()]
    dashboard = json.loads(DASHBOARD.read_text())
    queries += [(f"panel {title!r}", expr) for title, expr in dashboard_exprs(dashboard)]
    return queries


def test_the_runtime_exports_the_metrics_operators_rely_on(
    exported: dict[str, frozenset[str]],
) -> None:
    # Sanity of the fixture itself: a registry read wrongly would make every
    # check below pass or fail for the wrong reason.
    for name in (
        "billing_ready",
        "billing_admission_rejected_total",
        "billing_receipt_latency_seconds_bucket",
        "billing_outbox_backlog",
        "supervisor_child_restarts_total",
        "billing_reconciler_integrity_failures_total",
        "python_gc_collections_total",
        "process_resident_memory_bytes",
    ):
        assert name in exported
    assert exported["billing_http_requests_total"] == {"route", "status"} | _TARGET_LABELS


@pytest.mark.parametrize(("where", "expr"), _all_queries(), ids=[w for w, _ in _all_queries()])
def test_every_query_selects_exported_metrics_and_labels(
    where: str, expr: str, exported: dict[str, frozenset[str]]
) -> None:
    query = parse_promql(expr)
    assert query.selectors, f"{where}: no metric in {expr!r}"
    labels_in_query: set[str] = set()
    for selector in query.selectors:
        assert selector.metric in exported, (
            f"{where}: {selector.metric} is not exported by the service"
        )
        known = exported[selector.metric]
        assert selector.labels <= known, (
            f"{where}: {selector.metric} has no label {sorted(selector.labels - known)}"
        )
        labels_in_query |= known
    assert query.grouping_labels <= labels_in_query, (
        f"{where}: groups by {sorted(query.grouping_labels - labels_in_query)}, "
        f"which none of its metrics carries"
    )


def test_the_promql_reader_finds_metrics_and_skips_functions() -> None:
    # The checks above are only as good as this reader.
    query = parse_promql(
        'histogram_quantile(0.99, sum by (topic, le) (rate(x_bucket{a="b(c)",d=~"e"}[5m])))'
        " / clamp_min(sum(y_total offset 5m), 1e-9) > bool 0"
    )
    assert {s.metric for s in query.selectors} == {"x_bucket", "y_total"}
    assert {s.labels for s in query.selectors} == {frozenset({"a", "d"}), frozenset()}
    assert query.grouping_labels == {"topic", "le"}


def test_alert_rules_are_complete() -> None:
    rules = _alert_rules()
    assert rules
    names = [rule.get("alert") for rule in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules:
        missing = {"alert", "expr", "for", "labels", "annotations"} - set(rule)
        assert not missing, f"{rule.get('alert')}: lacks {sorted(missing)}"
        assert rule["labels"].get("severity") in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"].get("summary"), rule["alert"]
        assert rule["annotations"].get("description"), rule["alert"]


def _readme_anchors() -> set[str]:
    """GitHub's anchors for deploy/README.md's ## and ### headings."""
    readme = (ALERTS.parents[1] / "README.md").read_text()
    return {
        "#" + re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in readme.splitlines()
        if line.startswith(("## ", "### "))
    }


def test_every_alert_links_to_a_runbook_section_that_exists() -> None:
    anchors = _readme_anchors()
    for rule in _alert_rules():
        url = rule["annotations"].get("runbook_url", "")
        assert url.startswith("deploy/README.md#"), f"{rule['alert']} has no runbook link"
        assert url.removeprefix("deploy/README.md") in anchors, (rule["alert"], url)
    by_name = {rule["alert"]: rule for rule in _alert_rules()}
    assert by_name["BillingIntegrityHalted"]["annotations"]["runbook_url"].endswith(
        "#integrity-halt"
    )


def _scrape_job() -> dict[str, Any]:
    (job,) = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]
    return dict(job)


def test_no_targets_up_and_instances_at_max_watch_the_scrape_job_terraform_sizes() -> None:
    job = _scrape_job()["job_name"]
    rules = {rule["alert"]: rule for rule in _alert_rules()}
    absent = str(rules["BillingNoTargetsUp"]["expr"])
    assert absent.replace(" ", "").startswith(f'absent(up{{job="{job}"}}'), absent
    at_max = str(rules["BillingInstancesAtMax"]["expr"])
    assert f'up{{job="{job}"}}' in at_max
    threshold = int(at_max.rsplit(">=", 1)[1])
    assert threshold == terraform_variables()["max_instances"]["default"], (
        "the alert's threshold is not Terraform's max_instances"
    )
    jobs = {label for _, expr in _all_queries() for label in re.findall(r'job="([^"]+)"', expr)}
    assert jobs == {job}, "alerts or dashboard select another scrape job"


def test_the_scraper_holds_the_metrics_token_terraform_gives_the_service() -> None:
    job = _scrape_job()
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    secret = Path(job["authorization"]["credentials_file"]).name
    secret_env = terraform_locals()["secret_env"]
    assert secret_env[secret] == "BILLING_METRICS_TOKEN"
    assert "BILLING_METRICS_TOKEN" in SERVICE_VARIABLES
    assert f'"{secret}"' in (TERRAFORM / "main.tf").read_text().split("mounted_env_secrets")[1]


def test_alerts_cover_what_the_design_says_operators_watch() -> None:
    selected = {
        selector.metric
        for rule in _alert_rules()
        for selector in parse_promql(str(rule["expr"])).selectors
    }
    for metric in (
        "billing_ready",  # readiness
        "billing_admission_rejected_total",  # 429s
        "billing_receipt_latency_seconds_bucket",  # receipt latency p99
        "billing_outbox_backlog",
        "billing_outbox_lag_seconds_bucket",
        "supervisor_child_restarts_total",  # actor restarts
        "billing_reconciler_integrity_failures_total",  # integrity failure found
        "billing_integrity_halted",  # an incident is open: charges refused
    ):
        assert metric in selected, f"no alert watches {metric}"


def test_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    datasources = {
        target["datasource"]["uid"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }
    variables = {f"${{{v['name']}}}" for v in dashboard["templating"]["list"]}
    assert datasources <= variables, "a panel names a datasource that is not a dashboard variable"
