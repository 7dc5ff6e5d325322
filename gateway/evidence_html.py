"""The dispute evidence bundle as one plain HTML page: what a support agent
sends a customer. The same bundle, verbatim at the end, so the reader can
save it and run `billing verify --evidence` on it; no script, no styles
fetched from anywhere."""

from __future__ import annotations

import html
from typing import Any

import orjson

from ledger.money import format_amount

CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'"

_STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}"
    "td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}"
    "code,pre{font:12px ui-monospace,monospace;word-break:break-all;white-space:pre-wrap}"
    ".ok{color:#060}.bad{color:#a00;font-weight:bold}"
)


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _rows(pairs: list[tuple[str, object]]) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in pairs)


def _check_rows(verdict: dict[str, Any]) -> str:
    return "".join(
        f"<tr><th>{_e(c['check'])}</th><td class={'ok' if c['ok'] else 'bad'}>"
        f"{'holds' if c['ok'] else 'FAILS'}</td><td>{_e(c['detail'])}</td></tr>"
        for c in verdict.get("checks", [])
    )


def _chain_rows(chain: list[dict[str, Any]], currency: str) -> str:
    return "".join(
        f"<tr><td>{_e(r.get('seq'))}</td><td>{_e(r.get('recorded_at'))}</td>"
        f"<td>{_e(format_amount(int(r.get('amount_minor', 0)), currency))}</td>"
        f"<td>{_e(format_amount(int(r.get('balance_after_minor', 0)), currency))}</td>"
        f"<td><code>{_e(r.get('receipt_hash'))}</code></td></tr>"
        for r in chain
    )


def _receipt_rows(receipt: dict[str, Any], currency: str) -> str:
    return _rows([
        ("customer", receipt.get("customer_id")), ("seq", receipt.get("seq")),
        ("amount", format_amount(int(receipt.get("amount_minor", 0)), currency)),
        ("usage", receipt.get("usage_description")),
        ("event time", receipt.get("event_timestamp")),
        ("recorded", receipt.get("recorded_at")),
        ("balance after", format_amount(int(receipt.get("balance_after_minor", 0)), currency)),
        ("receipt hash", receipt.get("receipt_hash")),
        ("previous receipt hash", receipt.get("previous_receipt_hash")),
    ])


def _proof_rows(bundle: dict[str, Any]) -> str:
    receipt = bundle["receipt"]
    log = receipt.get("log") or {}
    consistency = bundle.get("consistency") or {}
    kids = ", ".join(str(k.get("kid")) for k in bundle.get("jwks", {}).get("keys", []))
    return _rows([
        ("own signature", "yes" if "signature" in receipt else "no (proved by the log)"),
        ("leaf index in the receipt log", log.get("index")),
        ("its checkpoint (leaves)", log.get("tree_size")),
        ("latest checkpoint (leaves)", consistency.get("tree_size")),
        ("consistency proof (hashes)", len(consistency.get("proof", []))),
        ("signing keys (kid)", kids),
    ])


def _request_rows(request: dict[str, Any]) -> str:
    return (_rows([(name.replace("_", " "), value) for name, value in request.items()])
            or "<tr><td>no request record was kept for this charge</td></tr>")


def render(bundle_bytes: bytes) -> str:
    bundle: dict[str, Any] = orjson.loads(bundle_bytes)
    receipt = bundle["receipt"]
    verdict = bundle["verdict"]
    currency = str(receipt.get("currency", ""))
    valid = bool(verdict.get("valid"))
    summary = "the receipt holds" if valid else "DOES NOT HOLD"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Evidence for receipt {_e(bundle.get('receipt_id'))}</title><style>{_STYLE}</style></head>
<body>
<h1>Evidence for receipt <code>{_e(bundle.get('receipt_id'))}</code></h1>
<p>Generated {_e(bundle.get('generated_at'))}. Verdict:
<strong class={'ok' if valid else 'bad'}>{summary}</strong></p>
<table>{_check_rows(verdict)}</table>
<h2>The receipt</h2>
<table>{_receipt_rows(receipt, currency)}</table>
<h2>Its proof</h2>
<table>{_proof_rows(bundle)}</table>
<h2>The customer's chain up to it</h2>
<table><tr><th>seq</th><th>recorded</th><th>amount</th><th>balance after</th><th>hash</th></tr>
{_chain_rows(bundle.get("chain", []), currency)}</table>
<h2>The request</h2>
<table>{_request_rows(bundle.get("request") or {})}</table>
<h2>The bundle</h2>
<p>Save it as a file and check it offline:
<code>billing verify --evidence FILE</code>.</p>
<pre>{_e(bundle_bytes.decode())}</pre>
</body></html>
"""
