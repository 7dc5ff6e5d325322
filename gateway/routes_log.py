"""Reading the receipt log: checkpoints, proofs and tiles.

For anyone holding a customer key (or the admin token): a proof shows the
hashes of other customers' receipts, never their contents (every receipt
core holds a 128-bit secret receipt id, so a hash cannot be guessed back).
The latest checkpoint is also served as a C2SP tlog-checkpoint signed note
(Ed25519) and the tree as C2SP tlog-tiles, for transparency tooling and
witnesses; the note's verifier key is public.
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from crypto import Checkpoint, checkpoint_note_text, parse_tile_path, sign_note
from gateway.auth import bearer_token
from gateway.errors import ApiError, bad_request, json_response
from gateway.rendering import receipt_document
from gateway.services import SERVICES, Services
from ledger import LogCheckpoint, StoredReceipt, limits

routes = web.RouteTableDef()


async def _reader(request: web.Request) -> tuple[Services, str | None]:
    """(services, customer id), or (services, None) for the admin; else 401."""
    services = request.app[SERVICES]
    admin_token = services.settings.admin_token or ""
    token = bearer_token(request)
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return services, None
    return services, await services.api_keys.customer_for(request)


def query_size(request: web.Request, name: str, *, required: bool) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        if required:
            raise bad_request("parameter_missing", f"{name} is required", name)
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 16:
        raise bad_request("invalid_type", f"{name} must be a non-negative integer", name)
    return int(raw)


def checkpoint_json(checkpoint: LogCheckpoint, origin: str) -> dict[str, Any]:
    return {
        "object": "checkpoint",
        "origin": origin,
        "tree_size": checkpoint.tree_size,
        "root_hash": "sha256:" + checkpoint.root_hash.hex(),
        "timestamp": checkpoint.timestamp,
        "checkpoint": checkpoint.jws,
    }


async def _head(services: Services) -> LogCheckpoint:
    head = await services.blocking(services.log_proofs.head)
    if head is None:
        raise ApiError(404, "log_empty", "the receipt log has no checkpoint yet")
    return head


async def _checkpoint_at(services: Services, tree_size: int, param: str) -> LogCheckpoint:
    checkpoint = await services.blocking(services.log_proofs.checkpoint, tree_size)
    if checkpoint is None:
        raise ApiError(
            404,
            "checkpoint_not_found",
            f"no checkpoint for a log of {tree_size} leaves",
            param=param,
        )
    return checkpoint


@routes.get("/v1/log/checkpoint")
async def latest_checkpoint(request: web.Request) -> web.Response:
    services, _ = await _reader(request)
    head = await _head(services)
    body = checkpoint_json(head, services.settings.log_origin)
    body["note"] = _note(services, head)
    body["note_verifier_key"] = services.note_key.verifier_key()
    return json_response(body)


def _note(services: Services, checkpoint: LogCheckpoint) -> str:
    text = checkpoint_note_text(
        Checkpoint(
            origin=services.settings.log_origin,
            tree_size=checkpoint.tree_size,
            root_hash=checkpoint.root_hash,
            timestamp=checkpoint.timestamp,
        )
    )
    return sign_note(text, services.note_key)  # Ed25519 is deterministic: same note each time


@routes.get("/v1/log/checkpoint.note")
async def latest_checkpoint_note(request: web.Request) -> web.Response:
    """The head as a C2SP tlog-checkpoint signed note (text/plain)."""
    services, _ = await _reader(request)
    head = await _head(services)
    return web.Response(text=_note(services, head), content_type="text/plain")


@routes.get("/.well-known/receipt-log-note-key")
async def note_verifier_key(request: web.Request) -> web.Response:
    """The signed note's verifier key (Go sumdb/note vkey format), public."""
    services = request.app[SERVICES]
    return web.Response(text=services.note_key.verifier_key() + "\n", content_type="text/plain")


@routes.get("/v1/log/checkpoints")
async def checkpoint_history(request: web.Request) -> web.Response:
    services, _ = await _reader(request)
    after_size = query_size(request, "after_size", required=False) or 0
    limit = query_size(request, "limit", required=False) or 100
    if not 1 <= limit <= limits.log_checkpoints_page_max:
        raise bad_request(
            "out_of_range",
            f"limit must be between 1 and {limits.log_checkpoints_page_max}",
            "limit",
        )
    page = await services.blocking(services.log_proofs.checkpoints, after_size, limit + 1)
    origin = services.settings.log_origin
    return json_response(
        {
            "object": "list",
            "data": [checkpoint_json(c, origin) for c in page[:limit]],
            "has_more": len(page) > limit,
            "url": "/v1/log/checkpoints",
        }
    )


@routes.get("/v1/log/consistency")
async def consistency(request: web.Request) -> web.Response:
    """Proof that the log at `first` leaves is a prefix of the log at `second`
    (default: the head), with both checkpoints."""
    services, _ = await _reader(request)
    first = query_size(request, "first", required=True)
    second = query_size(request, "second", required=False)
    assert first is not None  # required
    newer = (
        await _head(services)
        if second is None
        else await _checkpoint_at(services, second, "second")
    )
    if not 0 < first <= newer.tree_size:
        raise bad_request("out_of_range", f"first must be between 1 and {newer.tree_size}", "first")
    older = await _checkpoint_at(services, first, "first")
    proof = await services.blocking(services.log_proofs.consistency, first, newer.tree_size)
    origin = services.settings.log_origin
    return json_response(
        {
            "object": "consistency_proof",
            "first": checkpoint_json(older, origin),
            "second": checkpoint_json(newer, origin),
            "proof": [node.hex() for node in proof],
        }
    )


async def _owned_receipt(
    services: Services, customer_id: str | None, receipt_id: str
) -> StoredReceipt:
    receipt = await services.blocking(services.store.get_receipt, receipt_id)
    if receipt is None or (customer_id is not None and receipt.customer_id != customer_id):
        raise ApiError(404, "receipt_not_found", "no such receipt", param="receipt_id")
    return receipt


@routes.get("/v1/receipts/{receipt_id}/inclusion")
async def inclusion(request: web.Request) -> web.Response:
    """The receipt's inclusion proof against the checkpoint of `tree_size`
    leaves (default: the head)."""
    services, customer_id = await _reader(request)
    receipt = await _owned_receipt(services, customer_id, request.match_info["receipt_id"])
    tree_size = query_size(request, "tree_size", required=False)
    checkpoint = (
        await _head(services)
        if tree_size is None
        else await _checkpoint_at(services, tree_size, "tree_size")
    )
    index = receipt.log_index
    if index is None or index >= checkpoint.tree_size:
        raise ApiError(
            404,
            "not_in_checkpoint",
            f"the receipt is not among the {checkpoint.tree_size} leaves of that checkpoint",
            param="tree_size",
        )
    proof = await services.blocking(services.log_proofs.inclusion, index, checkpoint)
    return json_response(
        {"object": "inclusion_proof", "receipt_id": receipt.receipt_id, **proof.to_json()}
    )


@routes.get("/v1/log/tile/{path:.+}")
async def tile(request: web.Request) -> web.Response:
    """A C2SP tlog-tiles tile of the current log (binary hashes)."""
    services, _ = await _reader(request)
    try:
        level, index, width = parse_tile_path("tile/" + request.match_info["path"])
    except ValueError as error:
        raise ApiError(404, "tile_not_found", str(error)) from None
    tiles = await services.blocking(services.log_proofs.read_tiles, [(level, index)])
    contents = tiles.get((level, index), b"")
    needed_bytes = width * 32
    if len(contents) < needed_bytes:
        raise ApiError(404, "tile_not_found", "no such tile in the log yet")
    return web.Response(body=contents[:needed_bytes], content_type="application/octet-stream")


async def documents_with_proofs(
    services: Services, receipts: list[StoredReceipt], tree_size: int | None = None
) -> list[dict[str, Any]]:
    """Receipt documents, each with its inclusion proof against the log head
    (or the checkpoint of `tree_size` leaves): every receipt served verifies
    alone. A receipt outside that checkpoint is served without a proof."""
    checkpoint = (
        None if tree_size is None else await _checkpoint_at(services, tree_size, "tree_size")
    )

    def prove() -> list[Any]:
        against = services.log_proofs.head() if checkpoint is None else checkpoint
        return [
            services.log_proofs.inclusion(r.log_index, against)
            if against is not None and r.log_index is not None and r.log_index < against.tree_size
            else None
            for r in receipts
        ]

    proofs = await services.blocking(prove)
    return [receipt_document(r, proof) for r, proof in zip(receipts, proofs, strict=True)]
