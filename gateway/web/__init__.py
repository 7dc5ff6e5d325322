"""The web app: pages for people, rendered on the server (Jinja2), inside
the service.

Owns the pricing page, sign-in (OpenID Connect with PKCE; a demo sign-in in
development), the browser session and CSRF tokens, the dashboard (balance,
usage chart, receipts, export, API keys, share links, billing), and receipt
pages that verify in the browser (static/verify.js, WebCrypto). It reaches
the ledger through Services and Stripe through the Stripe routes' context;
its templates and static files live beside it (no build step, no CDN).
"""

from gateway.web._http import WEB, wants_html
from gateway.web._receipts import receipt_page
from gateway.web._settings import WebSettings, load_web_settings
from gateway.web._wiring import add_web_routes

__all__ = ["WEB", "WebSettings", "add_web_routes", "load_web_settings", "receipt_page",
           "wants_html"]
