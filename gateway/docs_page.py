"""`GET /docs`: the OpenAPI document as one plain HTML page.

No script and nothing from another origin (the service may run where there
is no internet, and a CDN would be one more party to trust): one inline
style, allowed by its hash in the page's Content-Security-Policy. Anchors:
`#op-<operationId>`, `#schema-<Name>`, `#error-<code>` (errors' `doc_url`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from html import escape
from typing import Any, Final

from gateway.error_codes import ERROR_CODES
from gateway.errors import error_type
from gateway.openapi import document

_STYLE: Final = (
    "body{font:15px/1.45 system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
    "code,pre{font:13px ui-monospace,monospace}pre{background:#f4f4f4;padding:.6em;"
    "overflow:auto}table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;"
    "padding:.2em .5em;text-align:left;vertical-align:top}section{border-top:1px solid #ddd;"
    "margin-top:1.5em}.m{font-weight:bold;text-transform:uppercase}"
)
_SCHEMA_PREFIX: Final = "#/components/schemas/"
_BOUNDS: Final = ("minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
                  "minItems", "maxItems", "pattern", "format")


def content_security_policy() -> str:
    """Nothing loads but this page's own inline style."""
    digest = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
    return (
        f"default-src 'none'; style-src 'sha256-{digest}'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )


def _text(markdown: str) -> str:
    """Escaped text with the document's `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(markdown))


def _schema_link(name: str) -> str:
    return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'


def _type_text(schema: dict[str, Any]) -> str:
    """A schema in a few words, with links to named schemas."""
    if "$ref" in schema:
        return _schema_link(schema["$ref"].removeprefix(_SCHEMA_PREFIX))
    if "oneOf" in schema:
        return " or ".join(_type_text(s) for s in schema["oneOf"])
    if "const" in schema:
        return f"<code>{escape(json.dumps(schema['const']))}</code>"
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{escape(str(v))}</code>" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array" and "items" in schema:
        text = "array of " + _type_text(schema["items"])
    else:
        text = escape(" or ".join(kind) if isinstance(kind, list) else str(kind))
    bounds = [f"{key} {schema[key]}" for key in _BOUNDS if key in schema]
    return text + (f" <small>({escape(', '.join(bounds))})</small>" if bounds else "")


def _parameters(operation: dict[str, Any]) -> str:
    rows = [
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td><td>{_type_text(p['schema'])}</td>"
        f"<td>{_text(p.get('description', ''))}</td></tr>"
        for p in operation["parameters"]
    ]
    if not rows:
        return ""
    return ("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>required</th>"
            "<th>type</th><th>description</th></tr>" + "".join(rows) + "</table>")


def _request_body(operation: dict[str, Any]) -> str:
    body = operation.get("requestBody")
    if body is None:
        return ""
    media = body["content"]["application/json"]
    parts = [f"<h4>Body</h4><p>application/json: {_type_text(media['schema'])}</p>"]
    for name, example in media.get("examples", {}).items():
        parts.append(f"<p>Example ({escape(name)}):</p>"
                     f"<pre>{escape(json.dumps(example['value'], indent=2))}</pre>")
    return "".join(parts)


def _responses(operation: dict[str, Any]) -> str:
    rows = []
    for status, response in operation["responses"].items():
        content = response.get("content", {})
        kinds = ", ".join(
            f"{escape(media_type)}: {_type_text(media['schema'])}"
            for media_type, media in content.items()
        )
        description = _text(response["description"])
        for code in operation["x-error-codes"]:  # link each listed code
            description = description.replace(
                f"<code>{code}</code>", f'<a href="#error-{code}"><code>{code}</code></a>')
        rows.append(f"<tr><td>{escape(status)}</td><td>{description}</td><td>{kinds}</td></tr>")
    return ("<h4>Responses</h4><table><tr><th>status</th><th>meaning, error codes</th>"
            "<th>body</th></tr>" + "".join(rows) + "</table>")


def _operation_section(path: str, method: str, operation: dict[str, Any]) -> str:
    security = ", ".join(
        f'<a href="#auth-{escape(name)}">{escape(name)}</a>'
        for requirement in operation["security"] for name in requirement
    )
    return (
        f'<section id="op-{escape(operation["operationId"])}">'
        f'<h3><span class="m">{escape(method)}</span> <code>{escape(path)}</code></h3>'
        f"<p>{_text(operation['description'])}</p>"
        f"<p>Authentication: {security or 'none'}</p>"
        + _parameters(operation) + _request_body(operation) + _responses(operation)
        + "</section>"
    )


def _schema_section(name: str, schema: dict[str, Any]) -> str:
    required = set(schema.get("required", ()))
    rows = "".join(
        f"<tr><td><code>{escape(field)}</code></td><td>{_type_text(sub)}</td>"
        f"<td>{'yes' if field in required else 'no'}</td>"
        f"<td>{_text(sub.get('description', ''))}</td></tr>"
        for field, sub in schema.get("properties", {}).items()
    )
    table = ("<table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>"
             + rows + "</table>") if rows else f"<p>{_type_text(schema)}</p>"
    closed = "<p>Unknown fields are refused (<code>parameter_unknown</code>).</p>" if (
        schema.get("additionalProperties") is False) else ""
    return (f'<section id="schema-{escape(name)}"><h3>{escape(name)}</h3>'
            f"<p>{_text(schema.get('description', ''))}</p>{table}{closed}</section>")


def _errors_section() -> str:
    rows = []
    for code, entry in ERROR_CODES.items():
        types = ", ".join(sorted({error_type(status) for status in entry.statuses}))
        rows.append(
            f'<tr id="error-{escape(code)}"><td><code>{escape(code)}</code></td>'
            f"<td>{', '.join(str(s) for s in entry.statuses)}</td>"
            f"<td>{escape(types)}</td><td>{_text(entry.meaning)}</td></tr>"
        )
    return ('<section id="errors"><h2>Error codes</h2><p>Every error is '
            "<code>{\"error\": {type, code, message, param, doc_url}}</code>.</p>"
            "<table><tr><th>code</th><th>status</th><th>type</th><th>meaning</th></tr>"
            + "".join(rows) + "</table></section>")


def _auth_section(schemes: dict[str, Any]) -> str:
    items = "".join(
        f'<li id="auth-{escape(name)}"><b>{escape(name)}</b>: '
        + (f"header <code>{escape(scheme['name'])}</code>" if scheme["type"] == "apiKey"
           else "<code>Authorization: Bearer ...</code>")
        + f" — {_text(scheme['description'])}</li>"
        for name, scheme in schemes.items()
    )
    return f'<h2 id="auth">Authentication</h2><ul>{items}</ul>'


@functools.cache
def render() -> str:
    """The whole page (built once: the document is constant)."""
    doc = document()
    operations = [(path, method, op) for path, item in doc["paths"].items()
                  for method, op in item.items()]
    toc = "".join(
        f'<li><a href="#op-{escape(op["operationId"])}"><span class="m">{escape(method)}</span> '
        f"{escape(path)}</a> {escape(op['summary'])}</li>"
        for path, method, op in operations
    )
    schemas = doc["components"]["schemas"]
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(doc['info']['title'])}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(doc['info']['title'])}</h1><p>{_text(doc['info']['description'])}</p>"
        '<p>The machine-readable contract: <a href="/openapi.json">/openapi.json</a> '
        '(OpenAPI 3.1). <a href="#errors">Error codes</a>.</p>'
        + _auth_section(doc["components"]["securitySchemes"])
        + f"<h2>Routes</h2><ul>{toc}</ul>"
        + "".join(_operation_section(path, method, op) for path, method, op in operations)
        + "<h2>Schemas</h2>"
        + "".join(_schema_section(name, schema) for name, schema in schemas.items())
        + _errors_section() + "</body></html>"
    )
