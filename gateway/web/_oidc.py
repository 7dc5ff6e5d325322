"""OpenID Connect sign-in: the authorization-code flow with PKCE (S256),
through Authlib's OAuth 2 client; the ID token is checked with joserfc
(Authlib's JOSE backend) against the issuer's JWKS, then Authlib's
CodeIDToken rules (iss, aud, exp, iat, nonce, azp, at_hash).

Blocking (requests, with a timeout): called on the gateway's executor.
"""

from __future__ import annotations

import threading
from typing import Any

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from gateway.web._settings import WebSettings
from ledger.limits import oidc_http_timeout_s

SCOPE = "openid email profile"
ID_TOKEN_LEEWAY_S = 60


class SignInFailed(Exception):
    """The provider's answer did not sign anyone in (said to the user, logged)."""


class OidcClient:
    def __init__(self, settings: WebSettings) -> None:
        self._settings = settings
        self._metadata: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _session(self, redirect_uri: str) -> OAuth2Session:
        return OAuth2Session(
            self._settings.oidc_client_id,
            self._settings.oidc_client_secret,
            scope=SCOPE,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            default_timeout=oidc_http_timeout_s,
        )

    def metadata(self) -> dict[str, Any]:
        """The discovery document (fetched once)."""
        with self._lock:
            if self._metadata is None:
                url = f"{self._settings.oidc_issuer}/.well-known/openid-configuration"
                try:
                    answer = requests.get(url, timeout=oidc_http_timeout_s)
                    answer.raise_for_status()
                    metadata = answer.json()
                except (requests.RequestException, ValueError) as error:
                    raise SignInFailed(f"the sign-in provider is unreachable: {error}") from None
                if metadata.get("issuer") != self._settings.oidc_issuer:
                    raise SignInFailed("the provider's discovery document names another issuer")
                self._metadata = metadata
            return self._metadata

    def start(self, redirect_uri: str) -> tuple[str, dict[str, str]]:
        """(the provider's authorization URL, what the callback must check)."""
        verifier, nonce = generate_token(64), generate_token(32)
        url, state = self._session(redirect_uri).create_authorization_url(
            self.metadata()["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        return url, {"state": state, "nonce": nonce, "verifier": verifier}

    def finish(self, code: str, login: dict[str, str], redirect_uri: str) -> dict[str, Any]:
        """The ID token's claims once token exchange and every check passed."""
        metadata = self.metadata()
        session = self._session(redirect_uri)
        try:
            token = session.fetch_token(
                metadata["token_endpoint"], grant_type="authorization_code", code=code,
                code_verifier=login["verifier"],
            )
            keys = session.get(metadata["jwks_uri"], withhold_token=True)
            keys.raise_for_status()
            key_set = KeySet.import_key_set(keys.json())
        except (requests.RequestException, ValueError, KeyError) as error:
            raise SignInFailed(f"the token exchange failed: {error}") from None
        if "id_token" not in token:
            raise SignInFailed("the provider sent no ID token")
        try:
            algs = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
            decoded = jwt.decode(token["id_token"], key_set, registry=JWSRegistry(algorithms=algs))
            claims = CodeIDToken(
                decoded.claims,
                decoded.header,
                {"iss": {"essential": True, "values": [self._settings.oidc_issuer]},
                 "aud": {"essential": True, "values": [self._settings.oidc_client_id]}},
                {"nonce": login["nonce"], "client_id": self._settings.oidc_client_id,
                 "access_token": token.get("access_token")},
            )
            claims.validate(leeway=ID_TOKEN_LEEWAY_S)
        except (JoseError, ValueError) as error:
            raise SignInFailed(f"the ID token is not valid: {error}") from None
        if not isinstance(claims.get("email"), str) or claims.get("email_verified") is not True:
            raise SignInFailed("the provider did not vouch for an email address")
        return dict(claims)
