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
"""

from __future__ import annotations

import contextlib
import struct
import subprocess
import sys
from collections.abc import Sequence
from typing import IO, Final

from crypto._errors import KeyLoadError
from crypto._keys import SigningKey, _key_from_pem

_LENGTH: Final = struct.Struct(">I")
_WORKER_MODULE: Final = "crypto.sign_worker"
_stop_timeout_s: Final = 5.0


class SigningProcessError(RuntimeError):
    """The signing process is gone or answered something unexpected."""


def _write_frame(stream: IO[bytes], body: bytes) -> None:
    stream.write(_LENGTH.pack(len(body)) + body)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    body = stream.read(length)
    if len(body) < length:
        return None
    return body


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

    def __init__(self, key: SigningKey) -> None:
        """Starts the child and sends it the key without waiting for it, so
        several start side by side; the first signing waits (`wait_ready`)."""
        self.kid = key.kid
        self._ready = False
        self._process = subprocess.Popen(
            [sys.executable, "-m", _WORKER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._to_child: IO[bytes] = self._process.stdin
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
            answer = _read_frame(self._from_child)
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
        self.wait_ready()
        try:
            _write_frame(self._to_child, _pack_payloads(payloads))
            answer = _read_frame(self._from_child)
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

    def close(self) -> None:
        """Ask the child to exit (end of input), then make sure it did."""
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
    pem = _read_frame(stdin)
    if pem is None:
        return 1
    try:
        key = _key_from_pem(pem, "the key sent by the parent")
    except KeyLoadError as error:
        print(f"signing process: {error}", file=sys.stderr)
        return 1
    _write_frame(stdout, key.kid.encode("ascii"))
    while (request := _read_frame(stdin)) is not None:
        signatures = key.sign_detached_many(_unpack_payloads(request))
        _write_frame(stdout, "\n".join(signatures).encode("ascii"))
    return 0

