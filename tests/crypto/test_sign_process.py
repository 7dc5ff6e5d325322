"""Signing in a child process: same signatures as in-process, clear failures."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from crypto import SigningKey, SigningProcess, SigningProcessError


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate("RS256")


@pytest.fixture
def process(key: SigningKey) -> Iterator[SigningProcess]:
    signer = SigningProcess(key)
    signer.wait_ready()
    yield signer
    signer.close()


def test_a_batch_is_signed_in_order_exactly_as_in_process(
    key: SigningKey, process: SigningProcess
) -> None:
    payloads = [f'{{"seq":{i}}}'.encode() for i in range(150)] + [b"", "é\n".encode()]
    # RS256 (PKCS#1 v1.5) is deterministic: the same key signs the same bytes alike.
    assert process.sign_detached_many(payloads) == [key.sign_detached(p) for p in payloads]
    assert process.sign_detached_many([]) == []


def test_a_dead_signing_process_is_an_error_not_a_hang(process: SigningProcess) -> None:
    os.kill(process._process.pid, signal.SIGKILL)
    process._process.wait(timeout=10)
    with pytest.raises(SigningProcessError):
        process.sign_detached_many([b"payload"])


def test_close_ends_the_child(key: SigningKey) -> None:
    signer = SigningProcess(key)
    signer.wait_ready()
    signer.close()
    assert signer._process.returncode == 0


def test_a_stop_signal_to_the_process_group_does_not_stop_signing(
    key: SigningKey, process: SigningProcess
) -> None:
    """Ctrl-C in a terminal reaches the signing processes too; they must keep
    signing while the service drains, and end only when it closes them."""
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        os.kill(process._process.pid, signal_number)
    assert process.sign_detached_many([b"after the signals"]) == [
        key.sign_detached(b"after the signals")
    ]


def _assert_hung_child_fails_within(
    signer: SigningProcess, payloads: list[bytes], deadline_s: float
) -> None:
    started = time.monotonic()
    with pytest.raises(SigningProcessError, match="did not answer"):
        signer.sign_detached_many(payloads)
    assert time.monotonic() - started < deadline_s
    assert signer._process.poll() is not None, "the hung child was left running"
    with pytest.raises(SigningProcessError):  # and stays failed, never a hang
        signer.sign_detached_many(payloads)


def test_a_hung_signing_process_fails_within_its_deadline(key: SigningKey) -> None:
    """A stopped child never answers; the signer thread must not wait forever."""
    signer = SigningProcess(key, reply_timeout_ms=300)
    try:
        signer.wait_ready()
        os.kill(signer._process.pid, signal.SIGSTOP)
        _assert_hung_child_fails_within(signer, [b"payload"], deadline_s=3.0)
    finally:
        signer.close()


def test_a_child_hung_at_start_fails_within_its_deadline(key: SigningKey) -> None:
    signer = SigningProcess(key, start_timeout_ms=300)
    try:
        os.kill(signer._process.pid, signal.SIGSTOP)
        _assert_hung_child_fails_within(signer, [b"payload"], deadline_s=3.0)
    finally:
        signer.close()

