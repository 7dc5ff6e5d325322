"""`billing serve` raises its soft open-files limit: at a soft limit of 1,024,
3,000 clients got refused connections and 503s (gateway/open_files.py)."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from gateway.open_files import raise_open_files_limit


@pytest.fixture
def limits_restored() -> Iterator[tuple[int, int]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield soft, hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_and_never_lowered(limits_restored: tuple[int, int]) -> None:
    _, hard = limits_restored
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    assert raise_open_files_limit(600) is None
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 600
    assert raise_open_files_limit(300) is None
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 600


def test_a_hard_limit_too_low_is_said_not_hidden(limits_restored: tuple[int, int]) -> None:
    _, hard = limits_restored
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    warning = raise_open_files_limit(hard + 1)
    assert warning is not None and "hard limit" in warning
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
