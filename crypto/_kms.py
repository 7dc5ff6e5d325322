"""Cloud KMS / Cloud HSM asymmetric signing: the KMS adapter of the `Signer` port.

The private key never leaves KMS; each signature is one call of the KMS REST
API (v1), which is all this module speaks:

    GET  {endpoint}/v1/{name}/publicKey
         -> {"pem", "algorithm", "pemCrc32c", "name", ...}
    POST {endpoint}/v1/{name}:asymmetricSign
         {"digest": {"sha256": base64}, "digestCrc32c": "<int64 as string>"}
         (EC_SIGN_ED25519 signs the data itself: {"data", "dataCrc32c"})
         -> {"signature": base64, "signatureCrc32c", "verifiedDigestCrc32c",
             "verifiedDataCrc32c", "name", ...}

Integrity as Google recommends: send the CRC32C of what is to be signed and
require KMS to say it checked it, check the CRC32C of the signature and the
key version's name, and retry a bounded number of times on a mismatch. On
top of that every signature is verified with the public key before it is
used (~50 µs for RS256): a checkpoint that does not verify would go to every
customer. ECDSA comes back DER-encoded and is turned into JOSE's raw r || s.

Why plain REST over urllib3 and not the google-cloud-kms client: two small
JSON calls, and urllib3 (installed with the Google clients) keeps connections
alive, takes a timeout per call and retries only as we say. Every call has a
deadline; 429, 5xx and network errors are retried with backoff inside it.
A failure raises KmsError: nothing was signed, and the ledger writer answers
the batch retry-safe.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import functools
import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, TypeVar

import google_crc32c
import urllib3
from cryptography.hazmat.primitives import serialization

from crypto._errors import JWKSError, KeyLoadError, KmsError
from crypto._jwk import PublicKey, alg_for_public_key, public_jwk, verifier_for
from crypto._signer import JwsSigning, ecdsa_der_to_jose

KMS_ENDPOINT: Final = "https://cloudkms.googleapis.com"
KMS_KEY_URI_SCHEME: Final = "gcpkms://"
_KMS_SCOPE: Final = "https://www.googleapis.com/auth/cloudkms"
_NAME = re.compile(
    r"projects/[A-Za-z0-9.:_-]+/locations/[a-z0-9-]+/keyRings/[A-Za-z0-9_-]+"
    r"/cryptoKeys/[A-Za-z0-9_-]+/cryptoKeyVersions/[0-9]+"
)

# Attempts of one call (the first included) for 429, 5xx, network errors
# and answers that fail an integrity check.
kms_attempts_max: Final = 4
# One HTTP exchange, connect and read. KMS answers in tens of milliseconds
# (HSM included); seconds means the attempt is lost.
kms_attempt_timeout_ms: Final = 2_000
# All attempts and backoff of one signature: below the request timeout, so a
# charge waiting on it is answered retry-safe before the client gives up
# (ledger.limits checks).
kms_call_deadline_ms: Final = 6_000
# Signatures of one sign_detached_many in flight at once (receipt mode: one
# KMS call per receipt, ~20 ms each, so a batch of 64 in sequence took 1.3 s).
kms_parallel_signs_max: Final = 32
kms_response_bytes_max: Final = 64 * 1024
# Auth token refresh (a call to the metadata server or Google's token endpoint).
kms_token_timeout_ms: Final = 5_000
_BACKOFF_FIRST_S: Final = 0.05
_BACKOFF_MAX_S: Final = 1.0
_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_ERROR_TEXT_CHARS_MAX: Final = 300
_T = TypeVar("_T")


class _KmsAlgorithm(NamedTuple):
    jose_alg: str
    signs_digest: bool  # False: KMS takes the data itself (pure Ed25519)


# The KMS signing algorithms whose signatures are JWS algs receipts use.
# PSS (PS256) and the other curves are left out on purpose: the verifiers
# customers run accept RS256, ES256 and EdDSA.
KMS_ALGORITHMS: Final = {
    "RSA_SIGN_PKCS1_2048_SHA256": _KmsAlgorithm("RS256", signs_digest=True),
    "RSA_SIGN_PKCS1_3072_SHA256": _KmsAlgorithm("RS256", signs_digest=True),
    "RSA_SIGN_PKCS1_4096_SHA256": _KmsAlgorithm("RS256", signs_digest=True),
    "EC_SIGN_P256_SHA256": _KmsAlgorithm("ES256", signs_digest=True),
    "EC_SIGN_ED25519": _KmsAlgorithm("EdDSA", signs_digest=False),
}


class _Transient(Exception):
    """This attempt failed in a way another attempt may not."""


def kms_key_name(uri: str) -> str:
    """The key version's resource name in `gcpkms://projects/.../cryptoKeyVersions/V`."""
    name = uri.removeprefix(KMS_KEY_URI_SCHEME)
    if not uri.startswith(KMS_KEY_URI_SCHEME) or _NAME.fullmatch(name) is None:
        raise KeyLoadError(
            "a KMS key is gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K"
            f"/cryptoKeyVersions/V, got {uri!r}"
        )
    return name


def crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class KmsClient:
    """The two KMS calls, each with a deadline and bounded retries; thread-safe."""

    def __init__(
        self,
        endpoint: str = KMS_ENDPOINT,
        access_token: Callable[[], str] | None = None,
        connections_max: int = kms_parallel_signs_max,
        attempt_timeout_ms: int = kms_attempt_timeout_ms,
        deadline_ms: int = kms_call_deadline_ms,
    ) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._access_token = access_token
        self._attempt_timeout_s = attempt_timeout_ms / 1000
        self.deadline_s = deadline_ms / 1000
        self._http = urllib3.PoolManager(num_pools=2, maxsize=connections_max, retries=False)

    def public_key(self, name: str) -> tuple[PublicKey, _KmsAlgorithm]:
        """The key version's public key and algorithm (getPublicKey)."""
        check = functools.partial(_checked_public_key, name)
        return self._call("GET", f"/v1/{name}/publicKey", None, check)

    def asymmetric_sign(self, name: str, to_sign: bytes, signs_digest: bool) -> bytes:
        """KMS's signature (DER for ECDSA) over sha256(to_sign), or over
        `to_sign` itself when `signs_digest` is False."""
        if signs_digest:
            digest = hashlib.sha256(to_sign).digest()
            body: dict[str, Any] = {"digest": {"sha256": _b64(digest)}}
            body["digestCrc32c"] = str(crc32c(digest))
            verified_field = "verifiedDigestCrc32c"
        else:
            body = {"data": _b64(to_sign), "dataCrc32c": str(crc32c(to_sign))}
            verified_field = "verifiedDataCrc32c"
        check = functools.partial(_checked_signature, name, verified_field)
        return self._call("POST", f"/v1/{name}:asymmetricSign", body, check)

    def close(self) -> None:
        self._http.clear()

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None, check: Callable[[Any], _T]
    ) -> _T:
        deadline = time.monotonic() + self.deadline_s
        backoff_s = _BACKOFF_FIRST_S
        reason = "no attempt made"
        for _attempt in range(kms_attempts_max):
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                break
            try:
                return check(self._exchange(method, path, body, remaining_s))
            except _Transient as transient:
                reason = str(transient)
            pause_s = min(backoff_s * random.uniform(0.5, 1.0), deadline - time.monotonic())
            if pause_s > 0:
                time.sleep(pause_s)
            backoff_s = min(backoff_s * 2, _BACKOFF_MAX_S)
        raise KmsError(f"Cloud KMS {path.rsplit('/', 1)[-1]} failed: {reason}")

    def _exchange(
        self, method: str, path: str, body: dict[str, Any] | None, remaining_s: float
    ) -> Any:
        """One HTTP exchange: the decoded JSON of a 200; _Transient for what
        may pass, KmsError for what will not (403, 404, 400...)."""
        headers = {"Content-Type": "application/json"}
        try:
            if self._access_token is not None:
                headers["Authorization"] = f"Bearer {self._access_token()}"
            timeout_s = min(self._attempt_timeout_s, remaining_s)
            response = self._http.request(
                method,
                self._endpoint + path,
                body=None if body is None else json.dumps(body).encode("ascii"),
                headers=headers,
                timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
                preload_content=False,
                redirect=False,
            )
            try:
                raw = response.read(kms_response_bytes_max + 1)
            finally:
                response.release_conn()
        except KmsError:
            raise
        except Exception as error:  # network, timeout, token refresh: all may pass
            raise _Transient(f"{type(error).__name__}: {error}") from error
        if response.status != 200:
            text = _error_text(raw)
            if response.status in _RETRY_STATUSES:
                raise _Transient(f"HTTP {response.status} {text}")
            raise KmsError(f"Cloud KMS answered HTTP {response.status} to {method} {path}: {text}")
        if len(raw) > kms_response_bytes_max:
            raise _Transient(f"an answer over {kms_response_bytes_max} bytes")
        try:
            return json.loads(raw)
        except ValueError as error:
            raise _Transient("an answer that is not JSON") from error


def _error_text(raw: bytes) -> str:
    """Google's {"error": {"status", "message"}} in one short line."""
    try:
        error = json.loads(raw)["error"]
        text = f"{error.get('status', '')}: {error.get('message', '')}"
    except (ValueError, KeyError, TypeError, AttributeError):
        text = raw[:_ERROR_TEXT_CHARS_MAX].decode("utf-8", "replace")
    return " ".join(text.split())[:_ERROR_TEXT_CHARS_MAX]


def _checked_signature(name: str, verified_field: str, answer: Any) -> bytes:
    """The signature of an asymmetricSign answer once its integrity fields check out."""
    if not isinstance(answer, dict):
        raise _Transient("an answer that is not a JSON object")
    if answer.get("name") != name:
        raise _Transient(f"an answer for key {answer.get('name')!r}, not {name!r}")
    if answer.get(verified_field) is not True:
        raise _Transient(f"KMS did not verify the request's CRC32C ({verified_field})")
    try:
        signature = base64.b64decode(answer["signature"], validate=True)
        expected_crc = int(answer["signatureCrc32c"])
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        raise _Transient("an answer without a base64 signature and its CRC32C") from error
    if crc32c(signature) != expected_crc:
        raise _Transient("the signature's CRC32C does not match (corrupted in transit)")
    return signature


def _checked_public_key(name: str, answer: Any) -> tuple[PublicKey, _KmsAlgorithm]:
    """The public key of a getPublicKey answer once its integrity fields check out."""
    if not isinstance(answer, dict) or not isinstance(answer.get("pem"), str):
        raise _Transient("a publicKey answer without a pem")
    if answer.get("name", name) != name:
        raise _Transient(f"the public key of {answer.get('name')!r}, not {name!r}")
    pem = answer["pem"].encode("ascii", "replace")
    if "pemCrc32c" in answer and str(crc32c(pem)) != str(answer["pemCrc32c"]):
        raise _Transient("the public key's CRC32C does not match (corrupted in transit)")
    algorithm = KMS_ALGORITHMS.get(str(answer.get("algorithm")))
    if algorithm is None:
        choices = ", ".join(KMS_ALGORITHMS)
        raise KmsError(f"{name} is a {answer.get('algorithm')} key; receipts need one of {choices}")
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, PublicKey):
        raise KmsError(f"{name}: unsupported public key type {type(key).__name__}")
    return key, algorithm


class KmsSigningKey:
    """A signing key held by Cloud KMS (HSM or software); safe to share between threads.

    The public key is read once at construction (the JWKS and kid come from
    it); each signature is one asymmetricSign call.
    """

    def __init__(self, name: str, client: KmsClient) -> None:
        self.name = name
        self._client = client
        try:
            key, algorithm = client.public_key(name)
            self.alg: str = alg_for_public_key(key)
        except (KmsError, JWKSError, ValueError) as error:
            raise KeyLoadError(f"cannot use the KMS key {name}: {error}") from error
        if self.alg != algorithm.jose_alg:
            raise KeyLoadError(f"{name}: a {self.alg} public key for {algorithm.jose_alg}")
        self._algorithm = algorithm
        self._public_jwk = public_jwk(key)
        self.kid: str = self._public_jwk["kid"]
        self._verify = verifier_for(key, self.kid).check
        self._jws = JwsSigning(self.alg, self.kid, self._raw_sign)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @classmethod
    def from_uri(
        cls,
        uri: str,
        endpoint: str = KMS_ENDPOINT,
        access_token: Callable[[], str] | None = None,
    ) -> KmsSigningKey:
        return cls(kms_key_name(uri), KmsClient(endpoint, access_token))

    def _raw_sign(self, signing_input: bytes) -> bytes:
        signature = self._client.asymmetric_sign(
            self.name, signing_input, self._algorithm.signs_digest
        )
        if self.alg == "ES256":
            try:
                signature = ecdsa_der_to_jose(signature)
            except ValueError as error:
                raise KmsError(f"{self.name} answered an ECDSA signature not in DER") from error
        if not self._verify(signature, signing_input):
            raise KmsError(f"{self.name} answered a signature its public key does not verify")
        return signature

    def sign_detached(self, payload: bytes) -> str:
        return self._jws.sign_detached(payload)

    def sign_compact(self, payload: bytes, typ: str | None = None) -> str:
        return self._jws.sign_compact(payload, typ)

    def sign_detached_many(self, payloads: Sequence[bytes]) -> list[str]:
        """`sign_detached` of each payload, in order, up to
        `kms_parallel_signs_max` calls in flight at once."""
        if len(payloads) <= 1:
            return [self.sign_detached(payload) for payload in payloads]
        signed = self._signing_pool().map(
            self.sign_detached, payloads, timeout=self._client.deadline_s
        )
        try:
            return list(signed)
        except TimeoutError as error:
            raise KmsError(f"{len(payloads)} KMS signatures took over the deadline") from error

    def _signing_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._pool_lock:  # made on first use: checkpoint mode never needs it
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    kms_parallel_signs_max, thread_name_prefix="kms-sign"
                )
            return self._pool

    def public_jwk(self) -> dict[str, str]:
        return dict(self._public_jwk)

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def __repr__(self) -> str:
        return f"KmsSigningKey(name={self.name!r}, alg={self.alg!r}, kid={self.kid!r})"


class GoogleAccessToken:
    """OAuth2 access tokens of the default credentials (on Cloud Run: the
    service account), refreshed shortly before they expire; thread-safe."""

    def __init__(self) -> None:
        import google.auth  # here, not at import: only production reads credentials
        import google.auth.exceptions
        from google.auth.transport.requests import Request

        try:
            self._credentials, _project = google.auth.default(scopes=[_KMS_SCOPE])
        except google.auth.exceptions.DefaultCredentialsError as error:
            raise KeyLoadError(f"no Google credentials for Cloud KMS: {error}") from error
        self._request = functools.partial(Request(), timeout=kms_token_timeout_ms / 1000)
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            if not self._credentials.valid:
                self._credentials.refresh(self._request)  # type: ignore[no-untyped-call]
            return str(self._credentials.token)
