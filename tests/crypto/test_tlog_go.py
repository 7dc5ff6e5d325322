"""Go's golang.org/x/mod/sumdb/tlog and sumdb/note judge our log: roots, proofs, tiles
(through Go's own TileHashReader, which authenticates every tile against the root),
tile paths and signed notes, both ways. The Go side is tests/crypto/go/tlogcheck.go.

Needs `go` and Go's x/mod sources in a GOPATH (Debian: `apt-get install golang-go
golang-golang-x-mod-dev`). Without them the test fails; it never skips.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import pathlib
import random
import shutil
import subprocess
from typing import Any

import pytest

from crypto import (
    Checkpoint,
    NoteKey,
    RightEdge,
    TileHashReader,
    TileKey,
    checkpoint_note_text,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    open_note,
    sign_note,
    tile_path,
    tree_root,
)

INSTALL_HINT = "apt-get install golang-go golang-golang-x-mod-dev"
# Where Debian's golang-golang-x-mod-dev puts the sources; BILLING_GOPATH overrides.
DEBIAN_GOPATH = "/usr/share/gocode"
SOURCE = pathlib.Path(__file__).parent / "go" / "tlogcheck.go"
BUILD_TIMEOUT_S = 300
RUN_TIMEOUT_S = 60


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _gopath(go: str) -> str:
    if os.environ.get("BILLING_GOPATH"):
        candidates = [os.environ["BILLING_GOPATH"]]
    else:
        found = subprocess.run(
            [go, "env", "GOPATH"], capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        ).stdout.strip()
        candidates = [*found.split(os.pathsep), DEBIAN_GOPATH]
    for candidate in candidates:
        if candidate and (pathlib.Path(candidate) / "src/golang.org/x/mod/sumdb/tlog").is_dir():
            return candidate
    pytest.fail(f"Go's x/mod sources not in {candidates}: {INSTALL_HINT}", pytrace=False)


@pytest.fixture(scope="module")
def tlogcheck(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    go = shutil.which("go")
    if go is None:
        pytest.fail(f"`go` is not installed: {INSTALL_HINT}", pytrace=False)
    build = tmp_path_factory.mktemp("go")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": _gopath(go),
           "GOCACHE": str(build / "cache"), "GOFLAGS": ""}
    binary = build / "tlogcheck"
    subprocess.run([go, "build", "-o", str(binary), str(SOURCE)], env=env, check=True,
                   timeout=BUILD_TIMEOUT_S, cwd=build)
    return binary


def _ask_go(binary: pathlib.Path, request: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([str(binary)], input=json.dumps(request), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


class _Tiles:
    def __init__(self) -> None:
        self.tiles: dict[TileKey, bytes] = {}

    def read(self, keys: Any) -> dict[TileKey, bytes]:
        return {key: self.tiles[key] for key in keys if key in self.tiles}


@pytest.fixture(scope="module")
def log() -> dict[str, Any]:
    """A 700-leaf log grown in varied batches: entries, checkpoints, proofs, tiles."""
    rng = random.Random(9162)
    entries = [hashlib.sha256(f"receipt {i}".encode()).digest() for i in range(700)]
    edge, store, checkpoints, inclusions = RightEdge.empty(), _Tiles(), [], []
    while edge.size < len(entries):
        batch = entries[edge.size : edge.size + rng.choice([1, 3, 17, 64, 200, 256])]
        result = edge.append([leaf_hash(entry) for entry in batch])
        store.tiles.update(result.tiles)
        checkpoints.append((result.size, result.root))
        for offset, proof in enumerate(result.proofs):
            inclusions.append((result.start + offset, result.size, proof, result.root))
    return {"entries": entries, "edge": edge, "tiles": store, "checkpoints": checkpoints,
            "inclusions": inclusions}


def test_go_computes_our_roots_and_accepts_our_proofs(
    tlogcheck: pathlib.Path, log: dict[str, Any]
) -> None:
    entries, checkpoints = log["entries"], log["checkpoints"]
    reader = TileHashReader(len(entries), log["tiles"].read)
    inclusion = [
        {"index": index, "size": size, "proof": [_b64(p) for p in proof], "root": _b64(root),
         "leaf": _b64(leaf_hash(entries[index]))}
        for index, size, proof, root in log["inclusions"]
    ]
    pairs = [*itertools.pairwise(checkpoints), (checkpoints[0], checkpoints[-1])]
    consistency = [
        {"old": old, "new": new, "old_root": _b64(old_root), "new_root": _b64(new_root),
         "proof": [_b64(p) for p in consistency_proof(old, new, reader)]}
        for (old, old_root), (new, new_root) in pairs
    ]
    # The harness can say no: a changed leaf, a wrong index, a forked old root.
    wrong_leaf = {**inclusion[5], "leaf": _b64(leaf_hash(b"forged"))}
    wrong_index = {**inclusion[5], "index": inclusion[5]["index"] + 1}
    forked = {**consistency[3], "old_root": _b64(hashlib.sha256(b"fork").digest())}
    answer = _ask_go(tlogcheck, {
        "entries": [_b64(entry) for entry in entries],
        "sizes": [size for size, _ in checkpoints],
        "inclusion": [*inclusion, wrong_leaf, wrong_index],
        "consistency": [*consistency, forked],
    })
    assert answer["roots"] == [_b64(root) for _, root in checkpoints]
    assert answer["inclusion"][:-2] == ["ok"] * len(inclusion)
    assert "ok" not in answer["inclusion"][-2:]
    assert answer["consistency"][:-1] == ["ok"] * len(consistency)
    assert answer["consistency"][-1] != "ok"


def test_go_proves_from_our_tiles_what_we_prove(
    tlogcheck: pathlib.Path, log: dict[str, Any]
) -> None:
    size = len(log["entries"])
    tiles = {
        tile_path(level, index, len(data) // 32): _b64(data)
        for (level, index), data in log["tiles"].tiles.items()
    }
    probes = [(0, 1), (255, 256), (256, 257), (511, 300), (699, 699), (3, 700)]
    paths = [(0, 1234, 256), (0, 1234067, 5), (1, 999, 1), (2, 1000, 255)]
    answer = _ask_go(tlogcheck, {
        "entries": [_b64(entry) for entry in log["entries"]],
        "tiles": tiles, "tile_proofs": probes, "tile_paths": paths,
    })
    reader = TileHashReader(size, log["tiles"].read)
    assert _b64(tree_root(size, reader)) == _b64(log["edge"].root)
    for (index, old), record, tree in zip(
        probes, answer["tile_record"], answer["tile_tree"], strict=True
    ):
        assert record == [_b64(p) for p in inclusion_proof(index, size, reader)]
        assert tree == [_b64(p) for p in consistency_proof(old, size, reader)]
    assert answer["tile_paths"] == [tile_path(*p) for p in paths]


def test_go_opens_our_checkpoint_note_and_we_open_go_s(
    tlogcheck: pathlib.Path, log: dict[str, Any]
) -> None:
    key = NoteKey.generate("billing.example/log")
    size, root = log["checkpoints"][-1]
    checkpoint = Checkpoint("billing.example/log", size, root, "2025-03-01T12:00:00Z")
    text = checkpoint_note_text(checkpoint)
    note = sign_note(text, key)
    answer = _ask_go(tlogcheck, {"vkey": key.verifier_key(), "note": note,
                                 "skey": key.signer_key(), "sign_text": text})
    assert (answer["note_text"], answer["note_error"]) == (text, "")
    assert (answer["checkpoint_size"], answer["checkpoint_root"]) == (size, _b64(root))
    assert answer["signed"] == note  # Ed25519 is deterministic: byte for byte
    assert open_note(answer["signed"], key.verifier_key()) == text
    tampered = note.replace(f"\n{size}\n", f"\n{size + 1}\n")
    refused = _ask_go(tlogcheck, {"vkey": key.verifier_key(), "note": tampered})
    assert "invalid signature" in refused["note_error"]
