"""Signing in a child process, a batch of payloads per round trip.

Why: RSA signing releases the GIL, but every signature then has to take it
back, and under load that wait (behind the event loop and the other stages)
cost more than the signature itself: the service charged 25% more single
events/s, and 67% more batch events/s, with signing stubbed out. A child
process signs a whole batch while the calling thread waits once.

Wire format on the child's stdin/stdout: frames of a 4-byte big-endian length
and a body. First the parent sends the private key (PEM; never argv or the
environment) and the child answers with its key id; then each request is a
frame of length-prefixed payloads, each answer a frame of the compact
detached JWS strings joined by newlines.

Every read of the child's answer has a deadline: a hung child (stopped,
deadlocked, swapped out) would otherwise wedge its signer thread for good,
unseen by the supervisor. Past the deadline the child is killed and the call
raises SigningProcessError, which the signer answers retry-safe.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Final

from crypto._errors import KeyLoadError
from crypto._keys import SigningKey, _key_from_pem

_LENGTH: Final = struct.Struct(">I")
_WORKER_MODULE: Final = "crypto.sign_worker"
_stop_timeout_s: Final = 5.0
# A batch is at most 64 signatures, milliseconds of CPU; a child that has not
# answered in this long is hung, and its charges are better refused (retry-
# safe) than left waiting. Below the request timeout (ledger.limits checks).
sign_reply_timeout_ms: Final = 5_000
# The child's first answer waits for a Python start-up (~0.2 s, seconds on a
# loaded machine) and the key load.
sign_start_timeout_ms: Final = 30_000


class SigningProcessError(RuntimeError):
    """The signing process is gone, hung, or answered something unexpected."""


class _ReplyTimeout(Exception):
    pass


def _write_frame(stream: IO[bytes], body: bytes) -> None:
    stream.write(_LENGTH.pack(len(body)) + body)
    stream.flush()


def _read_frame(read: Callable[[int], bytes]) -> bytes | None:
    """One frame through `read(n)` (up to n bytes, b"" at the end), or None
    if the stream ends first."""
    head = _read_exactly(read, _LENGTH.size)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head)
    return _read_exactly(read, length)


def _read_exactly(read: Callable[[int], bytes], size: int) -> bytes | None:
    parts: list[bytes] = []
    got = 0
    while got < size:
        part = read(size - got)
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _deadline_reader(fd: int, timeout_ms: int) -> Callable[[int], bytes]:
    """`read(n)` on a pipe that raises _ReplyTimeout once `timeout_ms` have
    passed since this call without the bytes arriving."""
    deadline = time.monotonic() + timeout_ms / 1000.0
    poller = select.poll()
    poller.register(fd, select.POLLIN)

    def read(size: int) -> bytes:
        left_ms = (deadline - time.monotonic()) * 1000.0
        if left_ms <= 0 or not poller.poll(left_ms):
            raise _ReplyTimeout
        return os.read(fd, size)

    return read


def _pack_payloads(payloads: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(p)) + p for p in payloads)


def _unpack_payloads(body: bytes) -> list[bytes]:
    payloads: list[bytes] = []
    offset = 0
    while offset < len(body):
        (length,) = _LENGTH.unpack_from(body, offset)
        offset += _LENGTH.size
        payloads.append(body[offset : offset + length])
        offset += length
    return payloads


class SigningProcess:
    """One child process that signs with `key`; used by one thread at a time."""

    def __init__(
        self,
        key: SigningKey,
        reply_timeout_ms: int = sign_reply_timeout_ms,
        start_timeout_ms: int = sign_start_timeout_ms,
    ) -> None:
        """Starts the child and sends it the key without waiting for it, so
        several start side by side; the first signing waits (`wait_ready`)."""
        self.kid = key.kid
        self._ready = False
        self._reply_timeout_ms = reply_timeout_ms
        self._start_timeout_ms = start_timeout_ms
        self._closed = False
        self._process = subprocess.Popen(
            [sys.executable, "-m", _WORKER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._to_child: IO[bytes] = self._process.stdin
        # Read with os.read on the descriptor, never through the buffered
        # object: poll() cannot see bytes already in a Python buffer.
        self._from_child: IO[bytes] = self._process.stdout
        try:
            _write_frame(self._to_child, key.private_pem())
        except OSError as error:
            self.close()
            raise SigningProcessError(f"signing process did not start: {error}") from error

    def wait_ready(self) -> None:
        """Wait for the child's key id: it loaded the same key."""
        if self._ready:
            return
        try:
            answer = self._read_reply(self._start_timeout_ms)
        except OSError as error:
            answer = repr(error).encode()
        if answer != self.kid.encode("ascii"):
            self.close()
            raise SigningProcessError(f"signing process answered {answer!r}, not the key id")
        self._ready = True

    def sign_detached_many(self, payloads: Sequence[bytes]) -> list[str]:
        """The compact detached JWS of each payload, in order."""
        if not payloads:
            return []
        if self._closed:
            raise SigningProcessError("signing process was closed (or killed as hung)")
        self.wait_ready()
        try:
            _write_frame(self._to_child, _pack_payloads(payloads))
            answer = self._read_reply(self._reply_timeout_ms)
        except OSError as error:
            raise SigningProcessError(f"signing process failed: {error}") from error
        if answer is None:
            raise SigningProcessError(f"signing process exited ({self._process.poll()})")
        signatures = answer.decode("ascii").split("\n")
        if len(signatures) != len(payloads):
            raise SigningProcessError(
                f"signing process returned {len(signatures)} signatures for {len(payloads)}"
            )
        return signatures

    def _read_reply(self, timeout_ms: int) -> bytes | None:
        """The child's next frame (None if it exited); a hung child is killed."""
        try:
            return _read_frame(_deadline_reader(self._from_child.fileno(), timeout_ms))
        except _ReplyTimeout:
            self._process.kill()
            self.close()
            raise SigningProcessError(
                f"signing process did not answer within {timeout_ms} ms; killed it"
            ) from None

    def close(self) -> None:
        """Ask the child to exit (end of input), then make sure it did."""
        self._closed = True
        for stream in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                stream.close()
        try:
            self._process.wait(timeout=_stop_timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    """The child's side: load the key, then sign batches until end of input."""
    pem = _read_frame(stdin.read)
    if pem is None:
        return 1
    try:
        key = _key_from_pem(pem, "the key sent by the parent")
    except KeyLoadError as error:
        print(f"signing process: {error}", file=sys.stderr)
        return 1
    _write_frame(stdout, key.kid.encode("ascii"))
    while (request := _read_frame(stdin.read)) is not None:
        signatures = key.sign_detached_many(_unpack_payloads(request))
        _write_frame(stdout, "\n".join(signatures).encode("ascii"))
    return 0

