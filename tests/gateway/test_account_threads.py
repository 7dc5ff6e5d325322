"""How many threads the account actors share (BILLING_ACCOUNT_THREADS)."""

from __future__ import annotations

import os

import pytest

from gateway.settings import SettingsError, from_environment
from ledger import limits

CPUS = os.cpu_count() or 1


def test_the_embedded_store_gets_a_few_threads_per_cpu() -> None:
    for environ in ({}, {"BILLING_STORE": "sqlite:/srv/ledger.sqlite3"}):
        settings = from_environment(environ)
        assert settings.effective_account_threads == (
            limits.account_scheduler_threads_per_cpu * CPUS
        )


def test_a_remote_store_gets_more_threads_for_reads_that_wait_on_the_network() -> None:
    settings = from_environment({"BILLING_STORE": "spanner://projects/p/instances/i/databases/d"})
    assert settings.effective_account_threads == (
        limits.account_scheduler_threads_remote_per_cpu * CPUS
    )
    assert settings.effective_account_threads > from_environment({}).effective_account_threads


def test_an_operator_sets_the_count() -> None:
    settings = from_environment(
        {
            "BILLING_ACCOUNT_THREADS": "7",
            "BILLING_STORE": "spanner://projects/p/instances/i/databases/d",
        }
    )
    assert settings.effective_account_threads == 7


@pytest.mark.parametrize("value", ["-1", "10001", "many"])
def test_a_bad_count_is_refused_with_the_variable_named(value: str) -> None:
    with pytest.raises(SettingsError, match="BILLING_ACCOUNT_THREADS"):
        from_environment({"BILLING_ACCOUNT_THREADS": value}).validate()


def test_billing_cpus_sizes_the_per_cpu_defaults_where_cpu_count_sees_the_host() -> None:
    # On Cloud Run os.cpu_count() sees the host: 16 account threads per host
    # CPU would be hundreds of threads for a 2-vCPU instance.
    spanner = "spanner://projects/p/instances/i/databases/d"
    settings = from_environment({"BILLING_CPUS": "3", "BILLING_STORE": spanner})
    assert settings.effective_cpus == 3
    assert settings.effective_account_threads == limits.account_scheduler_threads_remote_per_cpu * 3
    assert settings.effective_signer_workers == limits.signer_workers_per_cpu * 3
    embedded = from_environment({"BILLING_CPUS": "3"})
    assert embedded.effective_account_threads == limits.account_scheduler_threads_per_cpu * 3
    assert from_environment({}).effective_cpus == CPUS


@pytest.mark.parametrize("value", ["-1", "4097", "two"])
def test_a_bad_cpu_count_is_refused_with_the_variable_named(value: str) -> None:
    with pytest.raises(SettingsError, match="BILLING_CPUS"):
        from_environment({"BILLING_CPUS": value}).validate()
