"""A fake Cloud KMS on 127.0.0.1 that speaks the KMS REST wire format (v1).

There is no KMS emulator, so this holds real private keys and answers the two
calls a signer makes, as KMS does:

    GET  /v1/{name}/publicKey          -> {"pem", "algorithm", "pemCrc32c", "name", ...}
    POST /v1/{name}:asymmetricSign     {"digest": {"sha256"}, "digestCrc32c"} or
                                       {"data", "dataCrc32c"} (EC_SIGN_ED25519)
         -> {"signature", "signatureCrc32c", "verifiedDigestCrc32c",
             "verifiedDataCrc32c", "name", "protectionLevel"}

Int64 fields travel as decimal strings, bytes as standard base64, ECDSA
signatures as DER, errors as {"error": {"code", "message", "status"}}. Knobs
for tests and benchmarks: a delay per signature (an HSM round trip), failure
injection (HTTP status, a corrupted signature CRC32C, a hang) and counters.

    python -m tests.fakes.kms_server --alg RS256 --delay-ms 20
prints `KMS_FAKE <url> <gcpkms:// key uri>` and serves until stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import json
import signal
import threading
from dataclasses import dataclass
from typing import Any

import google_crc32c
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from tests.fakes._threaded import ThreadedServer

DEFAULT_NAME = "projects/fake-project/locations/global/keyRings/billing/cryptoKeys/receipts"

_ALGORITHMS = {
    "RS256": "RSA_SIGN_PKCS1_2048_SHA256",
    "ES256": "EC_SIGN_P256_SHA256",
    "EdDSA": "EC_SIGN_ED25519",
}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _crc(data: bytes) -> str:
    return str(google_crc32c.value(data))


def generate_key(alg: str) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(65537, 2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


@dataclass
class FakeKeyVersion:
    name: str
    algorithm: str  # KMS's name for it, e.g. RSA_SIGN_PKCS1_2048_SHA256
    private_key: PrivateKey

    @property
    def uri(self) -> str:
        return "gcpkms://" + self.name

    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    def sign(self, digest_or_data: bytes) -> bytes:
        """What KMS returns: PKCS#1 v1.5 over a SHA-256 digest, DER ECDSA over
        a digest, or pure Ed25519 over the data."""
        key = self.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(digest_or_data, padding.PKCS1v15(), _prehashed())
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(digest_or_data, ec.ECDSA(_prehashed()))
        return key.sign(digest_or_data)


def _prehashed() -> Prehashed:
    return Prehashed(hashes.SHA256())


class FakeKms:
    """Key versions plus an aiohttp app. Thread-safe: tests change the knobs
    while the server serves."""

    def __init__(self, *, delay_ms: float = 0.0) -> None:
        self.delay_ms = delay_ms
        self.keys: dict[str, FakeKeyVersion] = {}
        self.sign_calls = 0
        self.signs_in_flight = 0
        self.signs_in_flight_max = 0  # the most signatures asked for at once
        self.public_key_calls = 0
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()
        self._failures: list[str] = []  # "503", "429", "crc", "hang", ... taken in order
        self.hang_s = 30.0
        self._server = ThreadedServer(self._build_app())

    # -- lifecycle ----------------------------------------------------------
    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> FakeKms:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def add_key(
        self, alg: str = "RS256", name: str | None = None, key: PrivateKey | None = None
    ) -> FakeKeyVersion:
        """A new key version (…/cryptoKeyVersions/N) for a JOSE alg."""
        with self._lock:
            number = len(self.keys) + 1
            version_name = name or f"{DEFAULT_NAME}-{alg.lower()}/cryptoKeyVersions/{number}"
            version = FakeKeyVersion(version_name, _ALGORITHMS[alg], key or generate_key(alg))
            self.keys[version_name] = version
            return version

    # -- failure injection --------------------------------------------------
    def fail_next(self, *modes: str) -> None:
        """The next calls fail, one mode each, in order: an HTTP status ("503",
        "429", "500", "403"...), "crc" (a wrong signatureCrc32c), "unverified"
        (verifiedDigestCrc32c false), "bad_signature" (a valid CRC over bytes
        that are no signature) or "hang" (no answer for `hang_s`)."""
        with self._lock:
            self._failures.extend(modes)

    def _take_failure(self) -> str | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    # -- the app --------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/{name:.+}/publicKey", self._public_key)
        app.router.add_post("/v1/{name:.+}:asymmetricSign", self._asymmetric_sign)
        return app

    async def _public_key(self, request: web.Request) -> web.Response:
        with self._lock:
            self.public_key_calls += 1
        failure = await self._injected(request)
        if failure is not None and failure.status != 200:
            return failure  # corruptions are for signatures only
        version = self.keys.get(request.match_info["name"])
        if version is None:
            return _error(404, f"CryptoKeyVersion {request.match_info['name']} not found.")
        pem = version.public_pem()
        return web.json_response(
            {
                "pem": pem,
                "algorithm": version.algorithm,
                "pemCrc32c": _crc(pem.encode("ascii")),
                "name": version.name,
                "protectionLevel": "HSM",
            }
        )

    async def _asymmetric_sign(self, request: web.Request) -> web.Response:
        with self._lock:
            self.sign_calls += 1
            self.signs_in_flight += 1
            self.signs_in_flight_max = max(self.signs_in_flight_max, self.signs_in_flight)
            self.authorizations.append(request.headers.get("Authorization"))
        try:
            return await self._sign_answer(request)
        finally:
            with self._lock:
                self.signs_in_flight -= 1

    async def _sign_answer(self, request: web.Request) -> web.Response:
        if self.delay_ms > 0:
            await asyncio.sleep(self.delay_ms / 1000)
        failure = await self._injected(request)
        if failure is not None and failure.status != 200:
            return failure
        version = self.keys.get(request.match_info["name"])
        if version is None:
            return _error(404, f"CryptoKeyVersion {request.match_info['name']} not found.")
        try:
            body = await request.json()
            to_sign, verified_field = _what_to_sign(version, body)
        except (ValueError, KeyError, TypeError, binascii.Error) as error:
            return _error(400, str(error) or "invalid request")
        signature = version.sign(to_sign)
        answer: dict[str, Any] = {
            "signature": base64.b64encode(signature).decode("ascii"),
            "signatureCrc32c": _crc(signature),
            "verifiedDigestCrc32c": False,
            "verifiedDataCrc32c": False,
            "name": version.name,
            "protectionLevel": "HSM",
        }
        answer[verified_field] = True
        return web.json_response(_corrupted(answer, failure.text if failure else None))

    async def _injected(self, request: web.Request) -> web.Response | None:
        """The next injected failure as a response; corruptions come back as a
        200 whose text names them, for the sign handler to apply."""
        mode = self._take_failure()
        if mode is None:
            return None
        if mode == "hang":
            await asyncio.sleep(self.hang_s)
            return _error(503, "hung")
        if mode.isdigit():
            return _error(int(mode), f"injected {mode}")
        return web.Response(text=mode)


def _what_to_sign(version: FakeKeyVersion, body: dict[str, Any]) -> tuple[bytes, str]:
    """The bytes KMS would sign, after KMS's own checks of the request."""
    if version.algorithm == "EC_SIGN_ED25519":
        if "digest" in body:
            raise ValueError("EC_SIGN_ED25519 signs data, not a digest")
        data = base64.b64decode(body["data"], validate=True)
        if "dataCrc32c" in body and body["dataCrc32c"] != _crc(data):
            raise ValueError("The checksum in field data_crc32c did not match the data.")
        return data, "verifiedDataCrc32c"
    if "data" in body:  # KMS accepts data too; the adapter always sends a digest
        raise ValueError("this fake takes a digest for prehashed algorithms")
    digest = base64.b64decode(body["digest"]["sha256"], validate=True)
    if len(digest) != hashlib.sha256().digest_size:
        raise ValueError("digest.sha256 must be 32 bytes")
    if "digestCrc32c" in body and body["digestCrc32c"] != _crc(digest):
        raise ValueError("The checksum in field digest_crc32c did not match the digest.")
    return digest, "verifiedDigestCrc32c"


def _corrupted(answer: dict[str, Any], mode: str | None) -> dict[str, Any]:
    if mode == "crc":
        answer["signatureCrc32c"] = str((int(answer["signatureCrc32c"]) + 1) % 2**32)
    elif mode == "unverified":
        answer["verifiedDigestCrc32c"] = answer["verifiedDataCrc32c"] = False
    elif mode == "bad_signature":
        junk = bytes(len(base64.b64decode(answer["signature"])))
        answer["signature"] = base64.b64encode(junk).decode("ascii")
        answer["signatureCrc32c"] = _crc(junk)
    return answer


def _error(code: int, message: str) -> web.Response:
    status = _STATUS_NAMES.get(code, "UNKNOWN")
    body = {"error": {"code": code, "message": message, "status": status}}
    return web.Response(status=code, text=json.dumps(body), content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.kms_server")
    parser.add_argument("--alg", choices=sorted(_ALGORITHMS), default="RS256")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="per signature")
    args = parser.parse_args()
    fake = FakeKms(delay_ms=args.delay_ms).start()
    version = fake.add_key(args.alg)
    print(f"KMS_FAKE {fake.url} {version.uri}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    fake.stop()


if __name__ == "__main__":
    main()
