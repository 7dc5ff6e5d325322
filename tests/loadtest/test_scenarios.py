"""Each Locust scenario, run headless for a few seconds against a real
`billing serve`, leaves a ledger that passes the lost-or-doubled check; and the
check fails when the service (or the results file) lies."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from loadtest import check as lost_or_doubled
from loadtest.run_locust import RunOutcome, Service, main, run_scenario
from tests.loadtest.conftest import WEBHOOK_SECRET, fake_service, soak_seconds

USERS = 5


def _run(
    service: Service, scenario: str, tmp_path: Path, *extra: str, webhook_secret: str = ""
) -> RunOutcome:
    return run_scenario(
        host=service.url,
        admin_token=service.admin_token,
        scenario=scenario,
        users=USERS,
        run_time_s=soak_seconds(),
        results=tmp_path / f"{scenario}.jsonl",
        extra=extra,
        env={"STRIPE_WEBHOOK_SECRET": webhook_secret},
    )


def _assert_clean(outcome: RunOutcome) -> None:
    report = outcome.report
    assert report.customers > 0, outcome.output[-3000:]
    assert report.acknowledged > 0, outcome.output[-3000:]
    assert report.ok, report.summary()
    assert outcome.locust_status == 0, outcome.output[-3000:]


def test_make_loadtest_steady_against_its_own_service(tmp_path: Path) -> None:
    if not Path(__file__).resolve().parents[2].joinpath("gateway", "cli_serve.py").exists():
        pytest.skip("billing serve is not built yet (no gateway/cli_serve.py)")
    status = main(
        [
            "--scenario",
            "steady",
            "-u",
            str(USERS),
            "-t",
            f"{soak_seconds()}s",
            "--reports",
            str(tmp_path),
        ]
    )
    assert status == 0
    assert list(tmp_path.glob("steady-*.html")), "no HTML report written"
    assert list(tmp_path.glob("steady-*_stats.csv")), "no CSV report written"


@pytest.mark.parametrize("scenario", ["hot", "retry_storm"])
def test_scenario_loses_and_doubles_nothing(
    billing_service: Service, scenario: str, tmp_path: Path
) -> None:
    outcome = _run(billing_service, scenario, tmp_path)
    _assert_clean(outcome)
    if scenario == "retry_storm":
        assert outcome.report.replays > 0, "the storm replayed nothing"
        assert outcome.report.statuses[409] > 0, "a reused key with a changed request got no 409"


def test_hot_customer_never_exceeds_a_hard_quota(billing_service: Service, tmp_path: Path) -> None:
    outcome = _run(billing_service, "hot", tmp_path, "--hot-quota", "20.00")
    _assert_clean(outcome)  # includes the check's hard_quota_exceeded rule
    assert outcome.report.statuses[402] > 0, "the quota was never reached"


def test_overload_sheds_with_429_and_loses_nothing(
    small_admission_service: Service, tmp_path: Path
) -> None:
    outcome = _run(small_admission_service, "overload", tmp_path, "--burst", "20")
    _assert_clean(outcome)
    statuses = outcome.report.statuses
    assert statuses[429] > 0, outcome.output[-3000:]
    assert set(statuses) <= {0, 202, 429}, statuses


def test_webhook_mix_delivers_signed_events(billing_service: Service, tmp_path: Path) -> None:
    probe = urllib.request.Request(billing_service.url + "/v1/stripe/webhook", b"{}", method="POST")
    try:
        urllib.request.urlopen(probe, timeout=5).close()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            pytest.skip("POST /v1/stripe/webhook is not routed in billing serve yet")
    outcome = _run(billing_service, "webhook_mix", tmp_path, webhook_secret=WEBHOOK_SECRET)
    _assert_clean(outcome)
    assert "POST /v1/stripe/webhook" in outcome.output
    assert "not configured" not in outcome.output


def test_check_fails_on_a_doctored_results_file(billing_service: Service, tmp_path: Path) -> None:
    outcome = _run(billing_service, "hot", tmp_path, "--requests-per-user-max", "40")
    _assert_clean(outcome)
    results = tmp_path / "hot.jsonl"
    lines = [orjson.loads(line) for line in results.read_bytes().splitlines() if line.strip()]
    accepted = next(i for i in lines if i["t"] == "outcome" and i["status"] == 202)
    cid = accepted["customer_id"]

    lost = tmp_path / "lost.jsonl"
    lost.write_bytes(
        results.read_bytes()
        + orjson.dumps({"t": "sent", "customer_id": cid, "key": "never-charged", "amount": "1"})
        + b"\n"
        + orjson.dumps(
            {
                "t": "outcome",
                "customer_id": cid,
                "key": "never-charged",
                "status": 202,
                "receipt_id": "rcpt_invented",
            }
        )
        + b"\n"
    )
    report = lost_or_doubled.check(billing_service.url, lost)
    assert {v.kind for v in report.violations} == {"missing_receipt"}, report.summary()

    doubled = tmp_path / "doubled.jsonl"
    doubled.write_bytes(
        results.read_bytes()
        + orjson.dumps({**accepted, "receipt_id": "rcpt_second_charge"})
        + b"\n"
    )
    report = lost_or_doubled.check(billing_service.url, doubled)
    assert "doubled_ack" in {v.kind for v in report.violations}, report.summary()
    assert lost_or_doubled.main(["--host", billing_service.url, "--results", str(doubled)]) == 1


@pytest.mark.parametrize(
    ("bug", "scenario", "kinds"),
    [
        ("double_charge", "retry_storm", {"duplicate_key", "doubled_ack"}),
        ("lose", "steady", {"missing_receipt"}),
    ],
)
def test_check_catches_a_service_that_doubles_or_loses(
    bug: str, scenario: str, kinds: set[str], tmp_path: Path
) -> None:
    with fake_service("--bug", bug) as service:
        outcome = run_scenario(
            host=service.url,
            admin_token=service.admin_token,
            scenario=scenario,
            users=3,
            run_time_s=min(soak_seconds(), 3.0),
            results=tmp_path / "results.jsonl",
        )
    found = {v.kind for v in outcome.report.violations}
    assert kinds <= found, outcome.report.summary()


def test_webhook_mix_says_so_when_the_service_has_no_secret(tmp_path: Path) -> None:
    with fake_service() as service:
        outcome = run_scenario(
            host=service.url,
            admin_token=service.admin_token,
            scenario="webhook_mix",
            users=2,
            run_time_s=2.0,
            results=tmp_path / "results.jsonl",
            env={"STRIPE_WEBHOOK_SECRET": "whsec_client_side_only"},
        )
    assert "has no Stripe webhook secret configured" in outcome.output, outcome.output[-2000:]
    assert outcome.report.ok and outcome.locust_status == 0
