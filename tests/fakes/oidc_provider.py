"""A small OpenID Connect provider on loopback, speaking the real protocol:
discovery document, JWKS, an authorization endpoint (a form asking for an
email: the "account" to sign in as), and a token endpoint that checks the
client secret, the redirect URI and the PKCE verifier (S256) and answers an
RS256-signed ID token with the nonce."""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.fakes._threaded import ThreadedServer

CLIENT_ID = "vexa-web-test"
CLIENT_SECRET = "oidc-test-secret"


class FakeOidcProvider:
    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "oidc-test-1", "use": "sig"})
        self.codes: dict[str, dict[str, Any]] = {}
        self.email_verified = True
        self._server = ThreadedServer(self._app())

    @property
    def issuer(self) -> str:
        return self._server.url

    def start(self) -> FakeOidcProvider:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize_form)
        app.router.add_post("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        return app

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response({
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                      "client_secret_post"],
        })

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.key.as_dict(private=False)]})

    async def _authorize_form(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code":
            return web.Response(status=400, text="unknown client or response type")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.Response(status=400, text="PKCE (S256) is required")
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in q.items()
        )
        return web.Response(content_type="text/html", text=(
            "<!doctype html><title>Test identity provider</title><h1>Test identity provider</h1>"
            f'<form method="post" action="/authorize">{hidden}'
            '<label>Email <input name="login_email" id="login_email"></label>'
            '<button type="submit" id="login">Sign in</button></form>'))

    async def _authorize(self, request: web.Request) -> web.Response:
        form = await request.post()
        code = secrets.token_urlsafe(16)
        self.codes[code] = {k: str(v) for k, v in form.items()}
        query = urlencode({"code": code, "state": form["state"], "iss": self.issuer})
        raise web.HTTPFound(f"{form['redirect_uri']}?{query}")

    def _client_ok(self, request: web.Request, form: Any) -> bool:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        else:
            client_id, secret = form.get("client_id"), form.get("client_secret")
        return client_id == CLIENT_ID and secret == CLIENT_SECRET

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = self.codes.pop(str(form.get("code")), None)
        if not self._client_ok(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["code_challenge"]:
            return web.json_response({"error": "invalid_grant",
                                      "error_description": "PKCE verification failed"}, 400)
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "sub-" + grant["login_email"], "aud": CLIENT_ID,
                  "iat": now, "exp": now + 300, "nonce": grant.get("nonce"),
                  "email": grant["login_email"], "email_verified": self.email_verified}
        id_token = jwt.encode({"alg": "RS256", "kid": "oidc-test-1"}, claims, self.key)
        return web.json_response({"access_token": secrets.token_urlsafe(16),
                                  "token_type": "Bearer", "expires_in": 300,
                                  "id_token": id_token})
