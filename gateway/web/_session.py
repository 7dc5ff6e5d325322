"""Browser sessions and CSRF tokens, in HMAC-signed cookies.

A session cookie holds a random session id, and once signed in the customer
id and email; it expires after `web_session_s_max`. The CSRF token of every
form is an HMAC of the session id: a page from another origin cannot read it,
and it changes at sign-in and sign-out (a new session id). Cookies are
HttpOnly, SameSite=Lax, and Secure unless the page was served on loopback
(a browser drops Secure cookies over http://127.0.0.1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Final

from aiohttp import web

from ledger.limits import web_session_s_max

SESSION_COOKIE: Final = "vexa_session"
LOGIN_COOKIE: Final = "vexa_oidc"  # state, nonce and PKCE verifier of a sign-in in progress
CSRF_FIELD: Final = "csrf_token"


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    expires_s: int
    customer_id: str | None = None
    email: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.email is not None


def new_session(customer_id: str | None = None, email: str | None = None) -> Session:
    return Session(secrets.token_urlsafe(24), int(time.time()) + web_session_s_max,
                   customer_id, email)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(secret: bytes, purpose: str, value: dict[str, Any]) -> str:
    """`payload.mac`: the JSON value, signed for one purpose (a session
    cookie cannot be replayed as a login cookie)."""
    payload = _b64(json.dumps(value, separators=(",", ":")).encode())
    mac = hmac.new(secret, f"{purpose}.{payload}".encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def unseal(secret: bytes, purpose: str, sealed: str | None) -> dict[str, Any] | None:
    """The value if the MAC holds and it has not expired (`expires_s`), else None."""
    if not sealed or sealed.count(".") != 1:
        return None
    payload, mac = sealed.split(".")
    expected = hmac.new(secret, f"{purpose}.{payload}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(mac), expected):
            return None
        value = json.loads(_unb64(payload))
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("expires_s"), int):
        return None
    return value if value["expires_s"] > time.time() else None


def read_session(request: web.Request, secret: bytes) -> Session | None:
    value = unseal(secret, "session", request.cookies.get(SESSION_COOKIE))
    if value is None or not isinstance(value.get("sid"), str):
        return None
    return Session(value["sid"], value["expires_s"], value.get("customer_id"), value.get("email"))


def csrf_token(secret: bytes, session: Session) -> str:
    return _b64(hmac.new(secret, f"csrf.{session.sid}".encode(), hashlib.sha256).digest())


def csrf_ok(secret: bytes, session: Session | None, presented: object) -> bool:
    if session is None or not isinstance(presented, str):
        return False
    return hmac.compare_digest(presented.encode(), csrf_token(secret, session).encode())


def is_loopback(host: str | None) -> bool:
    if host in ("localhost", None):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def set_cookie(
    response: web.StreamResponse, request: web.Request, name: str, value: str, max_age_s: int
) -> None:
    response.set_cookie(
        name, value, max_age=max_age_s, path="/", httponly=True, samesite="Lax",
        secure=not is_loopback(request.url.host),
    )


def write_session(
    response: web.StreamResponse, request: web.Request, secret: bytes, session: Session
) -> None:
    set_cookie(response, request, SESSION_COOKIE, seal(secret, "session", asdict(session)),
               web_session_s_max)
