"""Sign-in and sign-out. OpenID Connect (authorization code + PKCE) when an
issuer is configured; in development a clearly marked "sign in as the demo
customer". The signed-in email is mapped to a customer
(`find_customer_by_email`); an email without an account may still subscribe
or start a trial."""

from __future__ import annotations

import time
from typing import Any

import structlog
from aiohttp import web

from gateway.web._http import (
    WEB,
    PageError,
    adopt_session,
    origin,
    page,
    redirect,
    render,
    services_of,
)
from gateway.web._oidc import SignInFailed
from gateway.web._session import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Session,
    new_session,
    seal,
    set_cookie,
    unseal,
)
from ledger.limits import oidc_login_s_max

log = structlog.get_logger(__name__)

routes = web.RouteTableDef()

DEMO_EMAIL = "demo@example.com"  # gateway.devmode's demo customer


def safe_next(raw: str | None) -> str:
    """Only a path on this site (no //host, no scheme): no open redirect."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/dashboard"
    return raw


async def signed_in(request: web.Request, email: str, next_path: str) -> web.Response:
    services = services_of(request)
    customer = await services.blocking(services.store.find_customer_by_email, email)
    session = new_session(customer.customer_id if customer else None, email)
    adopt_session(request, session)
    log.info("web.signed_in", customer_id=session.customer_id)
    return redirect(next_path)


@routes.get("/signin")
@page
async def signin_page(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[WEB]
    return render(request, "signin.html", oidc=ctx.oidc is not None,
                  oidc_name=ctx.settings.oidc_name, next=safe_next(request.query.get("next")))


@routes.get("/signin/oidc")
@page
async def signin_oidc(request: web.Request, session: Session) -> web.StreamResponse:
    oidc = request.app[WEB].oidc
    if oidc is None:
        raise PageError(404, "Sign-in with an identity provider is not configured here.")
    try:
        url, login = await services_of(request).blocking(oidc.start, _callback_url(request))
    except SignInFailed as error:
        raise PageError(503, str(error)) from None
    login_cookie: dict[str, Any] = {
        **login, "next": safe_next(request.query.get("next")),
        "expires_s": int(time.time()) + oidc_login_s_max,
    }
    response = redirect(url)
    secret = request.app[WEB].settings.session_secret
    set_cookie(response, request, LOGIN_COOKIE, seal(secret, "login", login_cookie),
               oidc_login_s_max)
    return response


def _callback_url(request: web.Request) -> str:
    return f"{origin(request)}/signin/callback"


@routes.get("/signin/callback")
@page
async def signin_callback(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[WEB]
    if ctx.oidc is None:
        raise PageError(404, "Sign-in with an identity provider is not configured here.")
    login = unseal(ctx.settings.session_secret, "login", request.cookies.get(LOGIN_COOKIE))
    if login is None or request.query.get("state") != login.get("state"):
        raise PageError(400, "This sign-in expired or was not started here. Sign in again.")
    if "error" in request.query or not request.query.get("code"):
        raise PageError(401, "The sign-in was refused by the identity provider.")
    try:
        claims = await services_of(request).blocking(
            ctx.oidc.finish, request.query["code"], login, _callback_url(request)
        )
    except SignInFailed as error:
        log.warning("web.signin_failed", reason=str(error))
        raise PageError(401, "The sign-in could not be completed: " + str(error)) from None
    response = await signed_in(request, str(claims["email"]).lower(), login["next"])
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


@routes.post("/signin/demo")
@page
async def signin_demo(request: web.Request, session: Session) -> web.StreamResponse:
    if not request.app[WEB].settings.demo_sign_in:
        raise PageError(404, "The demo sign-in exists only in development mode.")
    form = await request.post()
    return await signed_in(request, DEMO_EMAIL, safe_next(str(form.get("next", ""))))


@routes.post("/signout")
@page
async def signout(request: web.Request, session: Session) -> web.StreamResponse:
    response = redirect("/")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response
