"""C2SP signed notes with Ed25519 keys, and the tlog-checkpoint text they carry.

This is the form existing transparency tooling and witnesses follow (Go's
golang.org/x/mod/sumdb/note, the C2SP specs): the same checkpoint as the JWS,
minus the timestamp, signed by a log key named after the origin. Key strings
are Go's: verifier "name+hash8hex+base64(0x01 || public)", signer
"PRIVATE+KEY+name+hash8hex+base64(0x01 || seed)".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import pathlib
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from crypto._checkpoint import Checkpoint
from crypto._errors import KeyLoadError, NoteError
from crypto._keys import write_secret_file
from crypto._merkle import HASH_BYTES

_ALG_ED25519: Final = b"\x01"
_ED25519_KEY_BYTES: Final = 32
_SIGNATURE_PREFIX: Final = "— "  # em dash, space
_KEY_ID_BYTES: Final = 4
note_signatures_max: Final = 100  # C2SP: accept at least 16; Go's note.Open allows 100
_TREE_SIZE: Final = re.compile(r"0|[1-9][0-9]*", re.ASCII)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64_decode(text: str) -> bytes:
    """Standard, padded base64 (RFC 4648 section 4); ValueError on anything else."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as error:
        raise ValueError("not base64") from error


def _is_valid_name(name: str) -> bool:
    return (
        bool(name)
        and "+" not in name
        and not any(c.isspace() for c in name)
        and (name.isprintable())
    )


def _key_id(name: str, typed_public_key: bytes) -> int:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + typed_public_key).digest()
    return int.from_bytes(digest[:_KEY_ID_BYTES], "big")


class NoteKey:
    """An Ed25519 log key named after the log's origin."""

    __slots__ = ("_private", "_public", "key_id", "name")

    def __init__(self, name: str, private_key: ed25519.Ed25519PrivateKey) -> None:
        if not _is_valid_name(name):
            raise KeyLoadError(f"note key name {name!r} is empty or has spaces or '+'")
        self.name = name
        self._private = private_key
        self._public = _ALG_ED25519 + private_key.public_key().public_bytes_raw()
        self.key_id = _key_id(name, self._public)

    @classmethod
    def generate(cls, name: str) -> NoteKey:
        return cls(name, ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, name: str, raw: bytes) -> NoteKey:
        """From the 32-byte Ed25519 seed."""
        if len(raw) != _ED25519_KEY_BYTES:
            raise KeyLoadError(f"an Ed25519 seed is 32 bytes, not {len(raw)}")
        return cls(name, ed25519.Ed25519PrivateKey.from_private_bytes(raw))

    def verifier_key(self) -> str:
        """What to publish: "name+hash8hex+base64(0x01 || public key)" (Go's vkey)."""
        return f"{self.name}+{self.key_id:08x}+{_b64(self._public)}"

    def signer_key(self) -> str:
        """The secret in Go's skey form; for a 0600 file, never for a log line."""
        seed = self._private.private_bytes_raw()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{_b64(_ALG_ED25519 + seed)}"

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"NoteKey({self.verifier_key()!r})"


def parse_signer_key(text: str) -> NoteKey:
    """The key of a Go skey string; KeyLoadError if malformed or its hash does not fit."""
    parts = text.strip().split("+", 4)  # base64 may hold "+" too
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"] or len(parts[3]) != 8:
        raise KeyLoadError("not a note signer key (PRIVATE+KEY+name+hash+key)")
    try:
        raw = _b64_decode(parts[4])
    except ValueError as error:
        raise KeyLoadError("note signer key is not base64") from error
    if raw[:1] != _ALG_ED25519:
        raise KeyLoadError("note signer key is not an Ed25519 key")
    key = NoteKey.from_private_bytes(parts[2], raw[1:])
    if f"{key.key_id:08x}" != parts[3]:
        raise KeyLoadError("note signer key hash does not match its name and key")
    return key


def load_or_create_note_key(path: pathlib.Path, name: str) -> NoteKey:
    """The log's note key from `path` (Go's skey text, 0600), generated on first use."""
    if not path.exists():
        key = NoteKey.generate(name)
        if write_secret_file(path, f"{key.signer_key()}\n".encode("ascii")):
            return key
    try:
        key = parse_signer_key(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as error:
        raise KeyLoadError(f"cannot read note key file {path}: {error}") from error
    if key.name != name:
        raise KeyLoadError(f"{path} holds the note key of {key.name!r}, not {name!r}")
    return key


@dataclass(frozen=True, slots=True)
class _Verifier:
    name: str
    key_id: int
    public_key: ed25519.Ed25519PublicKey


def _parse_verifier_key(text: str) -> _Verifier:
    name, _, rest = text.partition("+")
    hash_hex, _, key_b64 = rest.partition("+")
    try:
        typed_key = _b64_decode(key_b64)
        key_id = int(hash_hex, 16) if re.fullmatch(r"[0-9a-f]{8}", hash_hex) else -1
    except ValueError:
        typed_key, key_id = b"", -1
    if not _is_valid_name(name) or key_id != _key_id(name, typed_key):
        raise NoteError("bad_verifier_key", "not name+hash+key, or the hash does not fit")
    if typed_key[:1] != _ALG_ED25519 or len(typed_key) != 1 + _ED25519_KEY_BYTES:
        raise NoteError("bad_verifier_key", "not an Ed25519 note verifier key")
    public_key = ed25519.Ed25519PublicKey.from_public_bytes(typed_key[1:])
    return _Verifier(name, key_id, public_key)


def _check_characters(text: str) -> None:
    """C2SP: valid UTF-8, no control characters but newline."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise NoteError("malformed", "a note is valid UTF-8") from error
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("malformed", "a note holds no control characters but newline")


def checkpoint_note_text(checkpoint: Checkpoint) -> str:
    """tlog-checkpoint note text: origin, tree size, base64 root, each on its own line."""
    root = _b64(checkpoint.root_hash)
    return f"{checkpoint.origin}\n{checkpoint.tree_size}\n{root}\n"


def sign_note(text: str, key: NoteKey) -> str:
    """`text`, a blank line, and one signature line "— name base64(key id || signature)"."""
    _check_characters(text)
    if not text.endswith("\n"):
        raise NoteError("malformed", "note text must end with a newline")
    signature = key.key_id.to_bytes(_KEY_ID_BYTES, "big") + key.sign(text.encode())
    return f"{text}\n{_SIGNATURE_PREFIX}{key.name} {_b64(signature)}\n"


def open_note(note: str, verifier_key: str) -> str:
    """The text of `note` once the signature by `verifier_key` verifies.

    Signatures by other keys are ignored (C2SP: unknown keys MUST be), a bad
    signature by the key refuses the note. NoteError reasons: malformed,
    bad_verifier_key, unknown_key (no signature by this key), bad_signature.
    """
    verifier = _parse_verifier_key(verifier_key)
    _check_characters(note)
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("malformed", "no blank line before signature lines")
    text, lines = note[: split + 1], note[split + 2 : -1].split("\n")
    if len(lines) > note_signatures_max:
        raise NoteError("malformed", f"more than {note_signatures_max} signatures")
    verified = False
    for line in lines:
        name, _, signature_b64 = line.removeprefix(_SIGNATURE_PREFIX).partition(" ")
        try:
            signature = _b64_decode(signature_b64)
        except ValueError:
            signature = b""
        if (
            not line.startswith(_SIGNATURE_PREFIX)
            or not _is_valid_name(name)
            or len(signature) <= _KEY_ID_BYTES
        ):
            raise NoteError("malformed", f"not a signature line: {line[:80]!r}")
        key_id = int.from_bytes(signature[:_KEY_ID_BYTES], "big")
        if (name, key_id) != (verifier.name, verifier.key_id):
            continue
        try:
            verifier.public_key.verify(signature[_KEY_ID_BYTES:], text.encode())
        except InvalidSignature as error:
            raise NoteError("bad_signature", f"signature by {verifier_key} fails") from error
        verified = True
    if not verified:
        raise NoteError("unknown_key", f"no signature by {verifier.name}+{verifier.key_id:08x}")
    return text


def parse_checkpoint_note(text: str) -> tuple[str, int, bytes]:
    """(origin, tree size, root hash) of a tlog-checkpoint note text; extension lines ignored."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
        raise NoteError("invalid_checkpoint", "want origin, size and root lines, none empty")
    origin, size, root_b64 = lines[:3]
    try:
        root = _b64_decode(root_b64)
    except ValueError:
        root = b""
    if _TREE_SIZE.fullmatch(size) is None or len(root) != HASH_BYTES:
        raise NoteError("invalid_checkpoint", "size is not decimal or root is not 32 bytes")
    return origin, int(size), root
