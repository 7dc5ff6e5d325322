"""How every page is served: the session read (or started), CSRF checked on
every POST, templates rendered with autoescaping, errors answered as pages,
and the security headers (a strict Content-Security-Policy: scripts and
styles only from /static, no inline code)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import jinja2
import structlog
from aiohttp import web

from gateway.errors import ApiError
from gateway.services import SERVICES, Services
from gateway.web._oidc import OidcClient
from gateway.web._session import (
    CSRF_FIELD,
    SESSION_COOKIE,
    Session,
    csrf_ok,
    csrf_token,
    new_session,
    read_session,
    write_session,
)
from gateway.web._settings import WebSettings
from ledger.clock import parse_rfc3339

log = structlog.get_logger(__name__)

PACKAGE_DIR: Final = Path(__file__).resolve().parent
STATIC_DIR: Final = PACKAGE_DIR / "static"
STATIC_TYPES: Final = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
# Where a form may send the browser after a POST (Chrome applies form-action
# to the redirect too): Stripe's hosted Checkout and billing portal.
STRIPE_PAGE_ORIGINS: Final = ("https://checkout.stripe.com", "https://billing.stripe.com")


class PageError(Exception):
    """Answered as an HTML page with this status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def when(rfc3339: str | None) -> str:
    """A stored timestamp as people read it ("2026-12-05 10:36 UTC"); receipt
    pages keep the exact value, which is part of what is signed."""
    if not rfc3339:
        return ""
    try:
        moment = parse_rfc3339(rfc3339)
    except ValueError:
        return rfc3339
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class WebContext:
    settings: WebSettings
    templates: jinja2.Environment
    oidc: OidcClient | None
    form_origins: tuple[str, ...]

    @classmethod
    def build(cls, settings: WebSettings, extra_form_origins: tuple[str, ...]) -> WebContext:
        templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        templates.filters["when"] = when
        origins = [*STRIPE_PAGE_ORIGINS, *extra_form_origins]
        if settings.oidc_issuer:
            parts = urlsplit(settings.oidc_issuer)
            origins.append(f"{parts.scheme}://{parts.netloc}")
        oidc = OidcClient(settings) if settings.oidc_enabled else None
        return cls(settings, templates, oidc, tuple(dict.fromkeys(origins)))

    def content_security_policy(self) -> str:
        return (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self' " + " ".join(self.form_origins)
            + "; frame-ancestors 'none'; base-uri 'none'"
        )


WEB: Final = web.AppKey("web", WebContext)
_SESSION: Final = web.RequestKey("vexa_web_session", Session)

Handler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def session_of(request: web.Request) -> Session:
    session: Session = request[_SESSION]
    return session


def adopt_session(request: web.Request, session: Session) -> None:
    """From now on this request (and the cookie sent back) has `session`."""
    request[_SESSION] = session


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    ctx = request.app[WEB]
    session = session_of(request)
    text = ctx.templates.get_template(template).render(
        session=session,
        csrf_field=CSRF_FIELD,
        csrf=csrf_token(ctx.settings.session_secret, session),
        demo=ctx.settings.demo_sign_in,
        **context,
    )
    return web.Response(text=text, status=status, content_type="text/html")


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def secure_headers(response: web.StreamResponse, ctx: WebContext) -> None:
    response.headers["Content-Security-Policy"] = ctx.content_security_policy()
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Share links carry their token in the URL: never leak it as a Referer.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")


def page(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A web route: session, CSRF on POST, HTML errors, headers."""

    @functools.wraps(handler)
    async def serve(request: web.Request) -> web.StreamResponse:
        ctx = request.app[WEB]
        secret = ctx.settings.session_secret
        session = read_session(request, secret)
        request[_SESSION] = session or new_session()
        try:
            if request.method == "POST":
                form = await request.post()
                if not csrf_ok(secret, session, form.get(CSRF_FIELD)):
                    raise PageError(403, "This form has expired or did not come from this "
                                    "site. Go back, reload the page and try again.")
            response = await handler(request, session_of(request))
        except PageError as error:
            response = render(request, "error.html", error.status, message=error.message)
        except ApiError as error:
            if error.status >= 500:
                log.warning("web.error", status=error.status, code=error.code, path=request.path)
            response = render(request, "error.html", error.status, message=error.message)
        if response.prepared:  # a streamed export set its headers before its body
            return response
        current = session_of(request)
        if current is not session and SESSION_COOKIE not in response.cookies:
            write_session(response, request, secret, current)  # new, or signed in
        secure_headers(response, ctx)
        return response

    return serve


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]


def origin(request: web.Request) -> str:
    """The public origin (as routes_events builds receipt URLs)."""
    public_url = services_of(request).settings.public_url
    return public_url if public_url is not None else f"{request.scheme}://{request.host}"


def wants_html(request: web.Request) -> bool:
    """A browser navigating (Accept lists text/html before any JSON); API
    clients, which send no Accept or */* or application/json, get JSON."""
    accept = request.headers.get("Accept", "")
    html = accept.find("text/html")
    json_at = accept.find("application/json")
    return html >= 0 and (json_at < 0 or html < json_at)


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC_DIR / name
    content_type = STATIC_TYPES.get(path.suffix)
    if "/" in name or name.startswith(".") or content_type is None or not path.is_file():
        raise ApiError(404, "resource_missing", "no such route")
    response = web.Response(body=path.read_bytes(), content_type=content_type)
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
