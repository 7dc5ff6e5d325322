"""Signed notes against Go's sumdb/note test vectors (note_test.go), and the checkpoint
note a witness reads."""

from __future__ import annotations

import base64
import hashlib
import os
import pathlib
import stat

import pytest

from crypto import (
    Checkpoint,
    KeyLoadError,
    NoteError,
    NoteKey,
    checkpoint_note_text,
    load_or_create_note_key,
    open_note,
    parse_checkpoint_note,
    sign_note,
)
from crypto._note import parse_signer_key

# golang.org/x/mod/sumdb/note note_test.go: TestNewSigner, TestSign, TestOpen.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = ("If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n")
PETER_SIG = ("— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKv"
             "qfqdngotpRZb6KE6RyyBwJnAM=\n")
ENOCH_SIG = ("— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTG"
             "wnWLox33WWd1RvMc+QQ=\n")

ROOT = hashlib.sha256(b"root").digest()
CHECKPOINT = Checkpoint("billing.example/log", 70_000, ROOT, "2025-03-01T12:00:00Z")


def test_keys_and_signature_match_go_byte_for_byte() -> None:
    peter = parse_signer_key(PETER_SKEY)
    assert peter.signer_key() == PETER_SKEY
    assert peter.verifier_key() == PETER_VKEY
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]
    assert NoteKey.from_private_bytes("PeterNeumann", seed).verifier_key() == PETER_VKEY
    assert sign_note(TEXT, peter) == TEXT + "\n" + PETER_SIG


def test_open_verifies_the_known_key_and_ignores_unknown_ones() -> None:
    both = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_note(both, PETER_VKEY) == TEXT
    assert open_note(both, ENOCH_VKEY) == TEXT
    with pytest.raises(NoteError) as error:
        open_note(TEXT + "\n" + ENOCH_SIG, PETER_VKEY)
    assert error.value.reason == "unknown_key"


def test_broken_notes_are_refused_with_their_own_reason() -> None:
    key = NoteKey.generate("billing.example/log")
    note = sign_note(checkpoint_note_text(CHECKPOINT), key)
    name_line = note.rsplit("\n", 2)[1]
    signature = bytearray(base64.b64decode(name_line.split(" ")[2]))
    signature[10] ^= 1
    flipped = note.replace(name_line.split(" ")[2], base64.b64encode(bytes(signature)).decode())
    cases = {
        "another key": (note, NoteKey.generate("billing.example/log").verifier_key(),
                        "unknown_key"),
        "changed text": (note.replace("70000", "70001"), key.verifier_key(), "bad_signature"),
        "changed signature": (flipped, key.verifier_key(), "bad_signature"),
        "no blank line": (note.replace("\n\n", "\n"), key.verifier_key(), "malformed"),
        "control character": (note.replace("log", "l\tog", 1), key.verifier_key(), "malformed"),
        "no final newline": (note[:-1], key.verifier_key(), "malformed"),
        "bad signature line": (note.replace("— ", "-- "), key.verifier_key(), "malformed"),
        "vkey with a wrong hash": (note, key.verifier_key().replace("+", "+0", 1)[:-1],
                                   "bad_verifier_key"),
        "vkey of another name": (note, "other+" + key.verifier_key().split("+", 1)[1],
                                 "bad_verifier_key"),
    }
    for name, (candidate, vkey, reason) in cases.items():
        with pytest.raises(NoteError) as error:
            open_note(candidate, vkey)
        assert error.value.reason == reason, name
    assert open_note(note, key.verifier_key()) == checkpoint_note_text(CHECKPOINT)


def test_checkpoint_note_is_the_c2sp_text() -> None:
    text = checkpoint_note_text(CHECKPOINT)
    assert text == f"billing.example/log\n70000\n{base64.b64encode(ROOT).decode()}\n"
    assert parse_checkpoint_note(text) == ("billing.example/log", 70_000, ROOT)
    assert parse_checkpoint_note(text + "extension\n") == ("billing.example/log", 70_000, ROOT)
    for bad in [text[:-1], text.replace("70000", "070000"), text.replace("=\n", "\n"),
                "origin\n1\n", text + "\n"]:
        with pytest.raises(NoteError, match="invalid_checkpoint"):
            parse_checkpoint_note(bad)


def test_note_key_file_is_created_once_0600_and_bound_to_its_name(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "keys" / "log-note-key"
    key = load_or_create_note_key(path, "billing.example/log")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text() == key.signer_key() + "\n"
    again = load_or_create_note_key(path, "billing.example/log")
    assert again.verifier_key() == key.verifier_key()
    with pytest.raises(KeyLoadError, match=r"not 'other\.example/log'"):
        load_or_create_note_key(path, "other.example/log")
    with pytest.raises(KeyLoadError):
        NoteKey.generate("has space")
