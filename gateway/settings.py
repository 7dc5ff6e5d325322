"""The one frozen settings object, built once by the composition root from
command-line flags and the environment (flags win). Nothing reads the
environment anywhere else."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import urlsplit

from crypto import KeyLoadError, kms_key_name
from gateway.environment import DeclaredEnvironment
from ledger import limits

_T = TypeVar("_T")

SIGNING_ALGS = ("RS256", "ES256", "EdDSA")
# checkpoint: one signed checkpoint per commit, an inclusion proof per receipt;
# receipt: also a detached JWS on every receipt (the original format).
RECEIPT_SIGNING_MODES = ("checkpoint", "receipt")


# Every variable `from_environment` reads (it reads through this table: see
# gateway/environment.py); README.md's Settings section documents each.
SERVICE_VARIABLES: Final = frozenset({
    "BILLING_HOST", "BILLING_PORT", "BILLING_DATA_DIR", "BILLING_STORE", "BILLING_READ_MODEL",
    "BILLING_BROADCAST", "BILLING_ARCHIVE", "BILLING_ADMIN_TOKEN", "BILLING_SIGNING_KEY_FILE",
    "BILLING_SIGNING_KEY", "BILLING_KMS_ENDPOINT", "BILLING_SIGNING_ALG",
    "BILLING_RECEIPT_SIGNING", "BILLING_LOG_ORIGIN", "BILLING_LOG_NOTE_KEY_FILE",
    "BILLING_ADMISSION_QUEUE_MAX", "BILLING_CUSTOMER_INFLIGHT_MAX", "BILLING_LOOP_LAG_MAX_MS",
    "BILLING_ADMISSION_LATENCY_TARGET_MS", "BILLING_CPUS", "BILLING_SIGNER_WORKERS",
    "BILLING_SIGNER_PROCESSES", "BILLING_COMMIT_LINGER_MS", "BILLING_ACCOUNT_IDLE_S",
    "BILLING_ACCOUNT_THREADS", "BILLING_DRAIN_TIMEOUT_S", "BILLING_RECONCILE_INTERVAL_S",
    "BILLING_FAULT_INJECTION", "BILLING_DEV", "BILLING_PUBLIC_URL", "BILLING_LOG_LEVEL",
    "BILLING_SECRETS_DIR", "BILLING_TRACE_PROJECT", "BILLING_ACCESS_LOG_PER_S_MAX",
    "BILLING_METRICS_TOKEN", "BILLING_ALERT_THRESHOLDS_PCT", "BILLING_WEBHOOK_TIMEOUT_MS",
})


class SettingsError(ValueError):
    """A setting is missing or malformed (reported as one line, exit 2)."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    store_url: str | None = None  # None: SQLite file in data_dir
    read_model_url: str | None = None  # None: the ledger store itself
    broadcast_url: str | None = None  # None: in-process
    archive_url: str | None = None  # None: files in data_dir/archive
    admin_token: str | None = None  # None: generated and kept in data_dir
    signing_key_path: Path | None = None  # None: a development key in data_dir
    # gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V:
    # sign in Cloud KMS / Cloud HSM instead of with a PEM file (alg from the key).
    signing_key_uri: str | None = None
    kms_endpoint: str | None = None  # None: Google's; http:// (no auth) only on loopback
    signing_alg: str = "RS256"
    receipt_signing: str = "checkpoint"
    # The receipt log's name in its checkpoints and signed notes (C2SP
    # tlog-checkpoint origin): set it to your public host + "/receipts".
    log_origin: str = "vexa-billing.localhost/receipts"
    log_note_key_path: Path | None = None  # None: a development Ed25519 key in data_dir
    admission_queue_max: int = limits.admission_queue_max
    customer_inflight_max: int = limits.customer_inflight_max
    loop_lag_max_ms: float = limits.loop_lag_max_ms
    admission_latency_target_ms: float = limits.admission_latency_target_ms
    # CPUs the per-CPU defaults count; 0: os.cpu_count(), which on Cloud Run
    # sees the host's CPUs, not the instance's share (the Terraform sets it).
    cpus: int = 0
    signer_workers: int = 0  # 0: signer_workers_per_cpu x CPUs
    signer_processes: bool = True  # each signer thread signs in a child process
    commit_batch_receipts_max: int = limits.commit_batch_receipts_max
    commit_linger_ms: float = limits.commit_linger_ms  # DESIGN: 512 receipts or 2 ms
    account_idle_s: float = limits.account_idle_s
    account_threads: int = 0  # 0: per CPU, more when the store is remote
    request_timeout_ms: int = limits.actor_ask_timeout_ms
    drain_timeout_s: float = 10.0
    reconcile_interval_s: float = 60.0
    fault_injection: bool = False
    dev: bool = False
    # Origin of the links the API answers with (receipt_url): behind Cloud Run's
    # proxy the request's own scheme and Host say http://. None: taken from the
    # request, allowed only in development or on a loopback address.
    public_url: str | None = None
    log_level: str = "info"
    # The bearer token the Prometheus scraper sends for GET /metrics. None:
    # metrics open in development or on loopback, closed on a public listener.
    metrics_token: str | None = None
    # The Google Cloud project in log lines' trace names (projects/P/traces/T),
    # which link them to Cloud Trace; None: the bare trace id.
    trace_project: str | None = None
    access_log_per_s_max: int = limits.access_log_lines_per_s_max
    secrets_dir: Path | None = None
    # Threshold alerts: percent of quota, for entitlements that set none of
    # their own (POST /v1/entitlements/{id}/alert_thresholds); () : none.
    alert_thresholds_pct: tuple[int, ...] = (50, 80, 100)
    webhook_timeout_ms: int = 10_000

    @property
    def effective_cpus(self) -> int:
        return self.cpus if self.cpus > 0 else (os.cpu_count() or 1)

    @property
    def effective_signer_workers(self) -> int:
        if self.signer_workers > 0:
            return self.signer_workers
        return limits.signer_workers_per_cpu * self.effective_cpus

    @property
    def effective_account_threads(self) -> int:
        """Threads the account actors share. An actor waiting on a store read
        holds one: a remote store (Spanner) waits milliseconds per read, so it
        gets more of them than the embedded SQLite file."""
        if self.account_threads > 0:
            return self.account_threads
        if self.store_url is None or self.store_url.startswith("sqlite:"):  # embedded
            return limits.account_scheduler_threads_per_cpu * self.effective_cpus
        return limits.account_scheduler_threads_remote_per_cpu * self.effective_cpus

    def validate(self) -> Settings:
        if not 0 <= self.port < 65536:  # 0: the OS picks a free port
            raise SettingsError(f"port {self.port} is not a TCP port")
        if self.signing_alg not in SIGNING_ALGS:
            raise SettingsError(f"signing alg must be one of {', '.join(SIGNING_ALGS)}")
        if self.receipt_signing not in RECEIPT_SIGNING_MODES:
            raise SettingsError(
                f"BILLING_RECEIPT_SIGNING must be one of {', '.join(RECEIPT_SIGNING_MODES)}"
            )
        if not self.log_origin or any(c.isspace() for c in self.log_origin):
            raise SettingsError("BILLING_LOG_ORIGIN must be a non-empty name without spaces")
        if not 0 < self.admission_queue_max <= 100_000:
            raise SettingsError("BILLING_ADMISSION_QUEUE_MAX must be between 1 and 100000")
        if not self.customer_inflight_max > 0:
            raise SettingsError("customer in-flight bound must be positive")
        if not self.loop_lag_max_ms > 0:
            raise SettingsError("BILLING_LOOP_LAG_MAX_MS must be positive")
        if not self.admission_latency_target_ms > 0:
            raise SettingsError("BILLING_ADMISSION_LATENCY_TARGET_MS must be positive")
        if not 0 < self.commit_batch_receipts_max <= 10_000:
            raise SettingsError("commit batch size must be between 1 and 10000")
        if not 0 < self.reconcile_interval_s <= 86_400:
            raise SettingsError("BILLING_RECONCILE_INTERVAL_S must be in (0, 86400]")
        if self.request_timeout_ms <= 0:
            raise SettingsError("request timeout must be positive")
        if not 0 <= self.access_log_per_s_max <= 1_000_000:
            raise SettingsError("BILLING_ACCESS_LOG_PER_S_MAX must be between 0 and 1000000")
        if not 0 <= self.cpus <= 4_096:
            raise SettingsError("BILLING_CPUS must be between 0 (automatic) and 4096")
        if not 0 <= self.account_threads <= 10_000:
            raise SettingsError("BILLING_ACCOUNT_THREADS must be between 0 (automatic) and 10000")
        self._validate_public_url()
        self._validate_kms()
        self._validate_webhooks()
        problems = limits.setting_problems(
            admission_queue_max=self.admission_queue_max,
            customer_inflight_max=self.customer_inflight_max,
            commit_batch_receipts_max=self.commit_batch_receipts_max,
        )
        if problems:  # the limits as set, not the defaults ledger.limits checked
            raise SettingsError(f"limits do not fit together: {'; '.join(problems)}")
        return self

    def _validate_public_url(self) -> None:
        if self.public_url is None:
            if not (self.dev or is_loopback(self.host)):
                raise SettingsError(
                    "BILLING_PUBLIC_URL is required outside --dev when serving on "
                    f"{self.host}: receipt URLs are built from it"
                )
            return
        parts = urlsplit(self.public_url)
        if (
            parts.scheme not in ("https", "http")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or parts.username
            or parts.password
            or self.public_url.endswith("/")
        ):
            raise SettingsError(
                "BILLING_PUBLIC_URL must be an absolute URL such as https://billing.example.com "
                f"(no query, credentials or final /), got {self.public_url!r}"
            )
        if parts.scheme == "http" and not (self.dev or is_loopback(parts.hostname)):
            raise SettingsError(
                "BILLING_PUBLIC_URL must be https:// (http:// only for a loopback host or --dev)"
            )

    def _validate_webhooks(self) -> None:
        problem = threshold_problem(self.alert_thresholds_pct)
        if problem is not None:
            raise SettingsError(f"BILLING_ALERT_THRESHOLDS_PCT: {problem}")
        if not 0 < self.webhook_timeout_ms <= limits.webhook_timeout_ms_max:
            raise SettingsError(
                f"BILLING_WEBHOOK_TIMEOUT_MS must be in (0, {limits.webhook_timeout_ms_max}]"
            )

    def _validate_kms(self) -> None:
        if self.signing_key_uri is None:
            if self.kms_endpoint is not None:
                raise SettingsError("BILLING_KMS_ENDPOINT is set but BILLING_SIGNING_KEY is not")
            return
        if self.signing_key_path is not None:
            raise SettingsError(
                "set BILLING_SIGNING_KEY (Cloud KMS) or BILLING_SIGNING_KEY_FILE (PEM), not both"
            )
        try:
            kms_key_name(self.signing_key_uri)
        except KeyLoadError as error:
            raise SettingsError(f"BILLING_SIGNING_KEY: {error}") from None
        if self.kms_endpoint is None:
            return
        parts = urlsplit(self.kms_endpoint)
        # A bearer token never travels in clear text: http:// is a local fake, without auth.
        plain_loopback = parts.scheme == "http" and is_loopback(parts.hostname or "")
        if (
            not (parts.scheme == "https" or plain_loopback)
            or not parts.hostname
            or parts.path.strip("/")
            or parts.query
            or parts.fragment
            or parts.username
        ):
            raise SettingsError(
                "BILLING_KMS_ENDPOINT must be https://host[:port] (http:// only on a loopback"
                f" address), got {self.kms_endpoint!r}"
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def threshold_problem(thresholds_pct: tuple[int, ...]) -> str | None:
    """What is wrong with a list of alert thresholds (None: nothing); the
    setting and the per-entitlement route share it."""
    if len(thresholds_pct) > limits.alert_thresholds_max:
        return f"at most {limits.alert_thresholds_max} thresholds"
    if len(set(thresholds_pct)) != len(thresholds_pct):
        return "a threshold is listed twice"
    for pct in thresholds_pct:
        if type(pct) is not int or not 1 <= pct <= limits.alert_threshold_pct_max:
            return f"each threshold is a whole percent from 1 to {limits.alert_threshold_pct_max}"
    return None


def _thresholds(environ: Mapping[str, str], default: tuple[int, ...]) -> tuple[int, ...]:
    raw = environ.get("BILLING_ALERT_THRESHOLDS_PCT")
    if raw is None:
        return default
    try:
        return tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise SettingsError(
            f"BILLING_ALERT_THRESHOLDS_PCT must be percentages like 50,80,100, got {raw!r}"
        ) from None


def _parsed(
    environ: Mapping[str, str], name: str, default: _T, parse: Callable[[str], _T], kind: str
) -> _T:
    """`name` parsed, or `default` when unset or empty; malformed is one line."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {kind}, got {raw!r}") from None


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    return _parsed(environ, name, default, int, "an integer")


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    return _parsed(environ, name, default, float, "a number")


def _bool(environ: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in ("1", "true", "yes", "on")


def from_environment(
    environ: Mapping[str, str],
    *,
    host: str | None = None,
    port: int | None = None,
    data_dir: str | None = None,
    store_url: str | None = None,
    dev: bool = False,
) -> Settings:
    """Flags (when given) override `BILLING_*` variables, which override defaults.

    The commit batch size and the charge answer timeout are not read: nothing
    needed to change them (issue 21); tests set the fields directly. Read in
    field order, so the first malformed variable is the one reported."""
    environ = DeclaredEnvironment(environ, SERVICE_VARIABLES)
    defaults = Settings()
    settings = Settings(
        host=host or environ.get("BILLING_HOST") or defaults.host,
        port=port if port is not None else _int(environ, "BILLING_PORT", defaults.port),
        data_dir=Path(data_dir or environ.get("BILLING_DATA_DIR") or defaults.data_dir),
        store_url=store_url or environ.get("BILLING_STORE") or None,
        read_model_url=environ.get("BILLING_READ_MODEL") or None,
        broadcast_url=environ.get("BILLING_BROADCAST") or None,
        archive_url=environ.get("BILLING_ARCHIVE") or None,
        admin_token=environ.get("BILLING_ADMIN_TOKEN") or None,
    )
    settings = _with_signing(settings, environ)
    settings = _with_capacity(settings, environ)
    return _with_operations(settings, environ, dev=dev).validate()


def _path_or_none(environ: Mapping[str, str], name: str) -> Path | None:
    raw = environ.get(name)
    return Path(raw) if raw else None


def _with_signing(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """Which key signs, how, and the log's name."""
    defaults = Settings()
    return replace(
        settings,
        signing_key_path=_path_or_none(environ, "BILLING_SIGNING_KEY_FILE"),
        signing_key_uri=environ.get("BILLING_SIGNING_KEY") or None,
        kms_endpoint=environ.get("BILLING_KMS_ENDPOINT", "").rstrip("/") or None,
        signing_alg=environ.get("BILLING_SIGNING_ALG", defaults.signing_alg),
        receipt_signing=environ.get("BILLING_RECEIPT_SIGNING") or defaults.receipt_signing,
        log_origin=environ.get("BILLING_LOG_ORIGIN") or defaults.log_origin,
        log_note_key_path=_path_or_none(environ, "BILLING_LOG_NOTE_KEY_FILE"),
    )


def _with_capacity(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """Admission bounds, threads and the timers of the charge path."""
    defaults = Settings()
    return replace(
        settings,
        admission_queue_max=_int(
            environ, "BILLING_ADMISSION_QUEUE_MAX", defaults.admission_queue_max
        ),
        customer_inflight_max=_int(
            environ, "BILLING_CUSTOMER_INFLIGHT_MAX", defaults.customer_inflight_max
        ),
        loop_lag_max_ms=_float(environ, "BILLING_LOOP_LAG_MAX_MS", defaults.loop_lag_max_ms),
        admission_latency_target_ms=_float(
            environ, "BILLING_ADMISSION_LATENCY_TARGET_MS", defaults.admission_latency_target_ms
        ),
        cpus=_int(environ, "BILLING_CPUS", defaults.cpus),
        signer_workers=_int(environ, "BILLING_SIGNER_WORKERS", defaults.signer_workers),
        signer_processes=_bool(
            environ, "BILLING_SIGNER_PROCESSES", default=defaults.signer_processes
        ),
        commit_linger_ms=_float(environ, "BILLING_COMMIT_LINGER_MS", defaults.commit_linger_ms),
        account_idle_s=_float(environ, "BILLING_ACCOUNT_IDLE_S", defaults.account_idle_s),
        account_threads=_int(environ, "BILLING_ACCOUNT_THREADS", defaults.account_threads),
        drain_timeout_s=_float(environ, "BILLING_DRAIN_TIMEOUT_S", defaults.drain_timeout_s),
        reconcile_interval_s=_float(
            environ, "BILLING_RECONCILE_INTERVAL_S", defaults.reconcile_interval_s
        ),
    )


def _with_operations(settings: Settings, environ: Mapping[str, str], *, dev: bool) -> Settings:
    """What operators see and switch: dev mode, logs, metrics, secrets, webhooks."""
    defaults = Settings()
    return replace(
        settings,
        fault_injection=_bool(environ, "BILLING_FAULT_INJECTION"),
        dev=dev or _bool(environ, "BILLING_DEV"),
        public_url=environ.get("BILLING_PUBLIC_URL", "").rstrip("/") or None,
        log_level=environ.get("BILLING_LOG_LEVEL", defaults.log_level).lower(),
        trace_project=environ.get("BILLING_TRACE_PROJECT") or None,
        metrics_token=environ.get("BILLING_METRICS_TOKEN", "").strip() or None,
        access_log_per_s_max=_int(
            environ, "BILLING_ACCESS_LOG_PER_S_MAX", defaults.access_log_per_s_max
        ),
        secrets_dir=_path_or_none(environ, "BILLING_SECRETS_DIR"),
        alert_thresholds_pct=_thresholds(environ, defaults.alert_thresholds_pct),
        webhook_timeout_ms=_int(environ, "BILLING_WEBHOOK_TIMEOUT_MS", defaults.webhook_timeout_ms),
    )
