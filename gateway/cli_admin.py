"""Operator commands over the admin API of a running service:
`billing customers create|list|get`, `billing keys create|list|revoke`,
`billing entitlements set`, `billing halt show|clear`, `billing evidence`.

They talk HTTP (not to the store directly) because the embedded store belongs
to the one serving process, and a remote deployment is reached the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from gateway.cli_args import add_service_url_argument
from gateway.environment import cli_default

_TIMEOUT_S = 15.0


def _common(parser: argparse.ArgumentParser) -> None:
    add_service_url_argument(parser)
    parser.add_argument(
        "--admin-token",
        default=cli_default("BILLING_ADMIN_TOKEN"),
        help="admin token (default $BILLING_ADMIN_TOKEN, else read from --data-dir)",
    )
    parser.add_argument(
        "--data-dir",
        default=cli_default("BILLING_DATA_DIR", "data"),
        help="data dir of a local service, to find its generated admin token",
    )


def register(subparsers: Any) -> None:
    customers = subparsers.add_parser("customers", help="manage customers")
    customers_sub = customers.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = customers_sub.add_parser("create", help="create a customer")
    create.add_argument("--email", required=True, help="billing contact email")
    create.add_argument("--currency", required=True, help="ISO 4217 currency, e.g. USD")
    create.add_argument("--id", dest="customer_id", help="customer id (default: generated)")
    _common(create)
    create.set_defaults(handler=_create_customer)
    listing = customers_sub.add_parser("list", help="list customers in id order, a page at a time")
    listing.add_argument("--limit", type=int, default=20, help="customers per page (1-100)")
    listing.add_argument("--starting-after", help="a customer id: the page after it")
    _common(listing)
    listing.set_defaults(handler=_list_customers)
    get = customers_sub.add_parser("get", help="show one customer")
    get.add_argument("customer_id", help="the customer's id")
    _common(get)
    get.set_defaults(handler=_get_customer)
    _register_keys(subparsers)
    _register_entitlements(subparsers)
    _register_halt(subparsers)
    evidence = subparsers.add_parser(
        "evidence", help="the dispute evidence bundle of a receipt (sealed JSON, or HTML)"
    )
    evidence.add_argument("receipt_id", help="the receipt's id (rcpt_...)")
    evidence.add_argument("--output", "-o", help="write to this file (default: stdout)")
    evidence.add_argument("--html", action="store_true", help="the page support sends")
    _common(evidence)
    evidence.set_defaults(handler=_evidence)


def _register_keys(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="manage customer API keys")
    keys_sub = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    key_create = keys_sub.add_parser("create", help="issue an API key (shown once)")
    key_create.add_argument("customer_id", help="the customer the key acts for")
    _common(key_create)
    key_create.set_defaults(handler=_create_key)
    key_list = keys_sub.add_parser(
        "list", help="a customer's keys, newest first (ids and dates, never a secret)"
    )
    key_list.add_argument("customer_id", help="the customer whose keys to list")
    _common(key_list)
    key_list.set_defaults(handler=_list_keys)
    key_revoke = keys_sub.add_parser("revoke", help="revoke an API key")
    key_revoke.add_argument("customer_id", help="the customer the key acts for")
    key_revoke.add_argument("key_id", help="the key_id printed when the key was issued")
    _common(key_revoke)
    key_revoke.set_defaults(handler=_revoke_key)


def _register_entitlements(subparsers: Any) -> None:
    entitlements = subparsers.add_parser("entitlements", help="manage entitlements")
    ent_sub = entitlements.add_subparsers(dest="action", metavar="ACTION", required=True)
    ent_set = ent_sub.add_parser("set", help="create or update an entitlement")
    ent_set.add_argument("customer_id", help="the customer it belongs to")
    ent_set.add_argument("entitlement_id", help="its id, e.g. api_calls")
    ent_set.add_argument(
        "--quota", required=True, help='decimal amount such as "1000.00", or "unlimited"'
    )
    ent_set.add_argument(
        "--policy", choices=("hard", "soft"), default="hard",
        help="hard refuses a charge past the quota, soft charges it (default hard)",
    )
    ent_set.add_argument("--status", default="active", help="active, trialing, canceled, ...")
    _common(ent_set)
    ent_set.set_defaults(handler=_set_entitlement)


def _register_halt(subparsers: Any) -> None:
    halt = subparsers.add_parser("halt", help="integrity halts: show, or clear one")
    halt_sub = halt.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = halt_sub.add_parser("show", help="open and recent integrity incidents, in full")
    _common(show)
    show.set_defaults(handler=_show_halt)
    clear = halt_sub.add_parser(
        "clear", help="lift one incident (recorded with your reason); charges resume "
        "when no incident is open"
    )
    clear.add_argument("--incident", required=True, help="the incident id (inc_...)")
    clear.add_argument("--reason", required=True, help="why the halt may be lifted")
    _common(clear)
    clear.set_defaults(handler=_clear_halt)


def _token(args: argparse.Namespace) -> str:
    from gateway.cli import CommandError

    if args.admin_token:
        return str(args.admin_token)
    path = Path(args.data_dir) / "admin-token"
    try:
        return path.read_text().strip()
    except OSError:
        raise CommandError(
            "no admin token: pass --admin-token, set BILLING_ADMIN_TOKEN, or point "
            "--data-dir at the service's data dir"
        ) from None


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    return http_json(args.url, _token(args), method, path, body)


def http_json(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    """One JSON request with a bearer token; any failure is a one-line CommandError."""
    return json.loads(http_bytes(url, token, method, path, body) or b"{}")


def http_bytes(url: str, token: str, method: str, path: str, body: Any = None) -> bytes:
    """One request with a bearer token, the body as sent; failures as for http_json."""
    from gateway.cli import CommandError

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        try:
            detail = json.loads(error.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            detail = error.reason
        raise CommandError(f"{error.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise CommandError(f"cannot reach {url}: {error}") from None


def _print(value: Any) -> int:
    print(json.dumps(value, indent=2))
    return 0


def _create_customer(args: argparse.Namespace) -> int:
    body = {"email": args.email, "currency": args.currency}
    if args.customer_id:
        body["customer_id"] = args.customer_id
    return _print(_call(args, "POST", "/v1/customers", body))


def _list_customers(args: argparse.Namespace) -> int:
    query = {"limit": str(args.limit)}
    if args.starting_after:
        query["starting_after"] = args.starting_after
    return _print(_call(args, "GET", "/v1/customers?" + urllib.parse.urlencode(query)))


def _get_customer(args: argparse.Namespace) -> int:
    return _print(_call(args, "GET", "/v1/customers/" + _segment(args.customer_id)))


def _list_keys(args: argparse.Namespace) -> int:
    return _print(_call(args, "GET", f"/v1/customers/{_segment(args.customer_id)}/api-keys"))


def _segment(value: str) -> str:
    """One path segment: an id with "/" or "?" in it cannot reach another route."""
    return urllib.parse.quote(value, safe="")


def _create_key(args: argparse.Namespace) -> int:
    return _print(_call(args, "POST", f"/v1/customers/{_segment(args.customer_id)}/api-keys"))


def _revoke_key(args: argparse.Namespace) -> int:
    customer, key = _segment(args.customer_id), _segment(args.key_id)
    return _print(_call(args, "DELETE", f"/v1/customers/{customer}/api-keys/{key}"))


def _set_entitlement(args: argparse.Namespace) -> int:
    quota = None if args.quota.lower() == "unlimited" else args.quota
    body = {"quota": quota, "policy": args.policy, "status": args.status}
    customer, entitlement = _segment(args.customer_id), _segment(args.entitlement_id)
    path = f"/v1/customers/{customer}/entitlements/{entitlement}"
    return _print(_call(args, "PUT", path, body))


def _show_halt(args: argparse.Namespace) -> int:
    return _print(_call(args, "GET", "/v1/admin/halt"))


def _clear_halt(args: argparse.Namespace) -> int:
    body = {"incident_id": args.incident, "reason": args.reason}
    return _print(_call(args, "POST", "/v1/admin/halt/clear", body))


def _evidence(args: argparse.Namespace) -> int:
    """The bundle byte for byte (its seal covers its exact canonical form)."""
    suffix = ".html" if args.html else ""
    path = f"/v1/receipts/{_segment(args.receipt_id)}/evidence{suffix}"
    data = http_bytes(args.url, _token(args), "GET", path)
    if args.output:
        Path(args.output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0
