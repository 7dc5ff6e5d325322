"""The web app's settings: the OIDC issuer and client, and the key that
signs browser sessions. Secrets come as the Stripe ones do (a mounted secret
file, else the environment) and never appear in a repr."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from gateway.environment import DeclaredEnvironment
from gateway.settings import SettingsError

SESSION_SECRET_FILE = "web-session-secret"

# secret file name -> environment variable
_SECRET_SOURCES: Mapping[str, str] = {
    "oidc-client-id": "BILLING_OIDC_CLIENT_ID",
    "oidc-client-secret": "BILLING_OIDC_CLIENT_SECRET",
    "session-secret": "BILLING_SESSION_SECRET",
}

# Every variable `load_web_settings` reads (through this table).
WEB_VARIABLES: Final = frozenset(
    {*_SECRET_SOURCES.values(), "BILLING_OIDC_ISSUER", "BILLING_OIDC_NAME"}
)


@dataclass(frozen=True, slots=True)
class WebSettings:
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = field(default=None, repr=False)
    oidc_name: str = "Google"  # shown on the sign-in button
    session_secret: bytes = field(default=b"", repr=False)
    # `make serve`: a clearly marked "sign in as the demo customer".
    demo_sign_in: bool = False

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id and self.oidc_client_secret)


def _read_secret(secrets_dir: Path | None, name: str, environ: Mapping[str, str]) -> str | None:
    if secrets_dir is not None and (secrets_dir / name).is_file():
        return (secrets_dir / name).read_text(encoding="utf-8").strip() or None
    return environ.get(_SECRET_SOURCES[name], "").strip() or None


def _session_secret(configured: str | None, data_dir: Path) -> bytes:
    """The configured secret, else one kept in the data dir (one instance, or
    `make serve`): several instances must share BILLING_SESSION_SECRET."""
    if configured:
        if len(configured) < 32:
            raise SettingsError("BILLING_SESSION_SECRET must be at least 32 characters")
        return configured.encode()
    path = data_dir / SESSION_SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48) + "\n")
    return path.read_text().strip().encode()


def load_web_settings(
    secrets_dir: Path | None, environ: Mapping[str, str], data_dir: Path, *, dev: bool
) -> WebSettings:
    """Built once by the composition root."""
    environ = DeclaredEnvironment(environ, WEB_VARIABLES)
    issuer = environ.get("BILLING_OIDC_ISSUER", "").strip().rstrip("/") or None
    if issuer is not None:
        parts = urlsplit(issuer)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and (dev or loopback)):
            raise SettingsError("BILLING_OIDC_ISSUER must be an https:// URL")
    return WebSettings(
        oidc_issuer=issuer,
        oidc_client_id=_read_secret(secrets_dir, "oidc-client-id", environ),
        oidc_client_secret=_read_secret(secrets_dir, "oidc-client-secret", environ),
        oidc_name=environ.get("BILLING_OIDC_NAME", "").strip() or "Google",
        session_secret=_session_secret(
            _read_secret(secrets_dir, "session-secret", environ), data_dir
        ),
        demo_sign_in=dev,
    )
