"""`billing verify`: summaries, exit codes, and one-line errors (never a traceback)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import orjson
import pytest

from crypto import KeyRing
from gateway.cli import main
from tests.crypto.conftest import build_chain, session_key

BILLING = pathlib.Path(sys.executable).with_name("billing")


@pytest.fixture
def export(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, list[dict[str, object]]]:
    key = session_key("RS256")
    receipts = build_chain(key, 5)
    receipts_path = tmp_path / "receipts.jsonl"
    receipts_path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in receipts))
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(KeyRing(key).jwks()))
    return receipts_path, jwks_path, receipts


def _one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_good_export_verifies(export: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    receipts_path, jwks_path, receipts = export
    assert main(["verify", str(receipts_path), "--jwks", str(jwks_path)]) == 0
    out = capsys.readouterr().out
    assert "verified 5 receipts" in out and str(receipts[-1]["receipt_hash"]) in out


def test_a_tampered_line_fails_with_its_line_number(
    export: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    receipts_path, jwks_path, receipts = export
    receipts[2]["amount_minor"] = 1
    receipts_path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in receipts))
    assert main(["verify", str(receipts_path), "--jwks", str(jwks_path)]) == 1
    out = capsys.readouterr().out
    assert "verified 2 receipts" in out
    assert "FAILED at line 3" in out and "hash_mismatch" in out


def test_known_head_detects_a_cut_tail(export: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    receipts_path, jwks_path, receipts = export
    head = str(receipts[-1]["receipt_hash"])
    receipts_path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in receipts[:3]))
    args = ["verify", str(receipts_path), "--jwks", str(jwks_path)]
    assert main(args) == 0
    assert main([*args, "--known-head", head]) == 1
    assert "truncated" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("receipts_content", "jwks_content", "expected"),
    [
        (b"{not json\n", None, "line 1: not JSON"),
        (None, b"[1, 2]", "not a usable JWKS"),
        (None, b'{"keys": []}', "no usable signature keys"),
        (None, b"\x00garbage", "is not JSON"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    export: tuple,
    capsys: pytest.CaptureFixture[str],
    receipts_content: bytes | None,
    jwks_content: bytes | None,
    expected: str,
) -> None:
    receipts_path, jwks_path, _ = export
    if receipts_content is not None:
        receipts_path.write_bytes(receipts_content)
    if jwks_content is not None:
        jwks_path.write_bytes(jwks_content)
    assert main(["verify", str(receipts_path), "--jwks", str(jwks_path)]) == 2
    assert expected in _one_line_error(capsys.readouterr().err)


def test_missing_field_and_unknown_alg_fail_with_a_reason(
    export: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    receipts_path, jwks_path, receipts = export
    del receipts[0]["currency"]
    receipts[1]["signature"] = "eyJhbGciOiJIUzI1NiIsImtpZCI6IngifQ..c2ln"
    for receipt, reason in [(receipts[0], "missing_field"), (receipts[1], "unsupported_alg")]:
        receipts_path.write_bytes(orjson.dumps(receipt) + b"\n")
        assert main(["verify", str(receipts_path), "--jwks", str(jwks_path)]) == 1
        assert f"FAILED at line 1 (receipt {receipt['receipt_id']}): {reason}" in (
            capsys.readouterr().out
        )


def test_unreachable_url_and_bad_known_head(
    export: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    receipts_path, jwks_path, _ = export
    url = "http://127.0.0.1:9/.well-known/jwks.json"  # discard port: nothing listens
    assert main(["verify", str(receipts_path), "--jwks", url]) == 2
    assert "cannot fetch JWKS" in _one_line_error(capsys.readouterr().err)
    args = ["verify", str(receipts_path), "--jwks", str(jwks_path), "--known-head", "abc"]
    assert main(args) == 2
    assert "--known-head" in _one_line_error(capsys.readouterr().err)


def _billing(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BILLING), "verify", *args], input=stdin, capture_output=True, timeout=60, check=False
    )


def test_subprocess_reads_stdin_and_verifies(export: tuple) -> None:
    receipts_path, jwks_path, _ = export
    done = _billing("--jwks", str(jwks_path), stdin=receipts_path.read_bytes())
    assert done.returncode == 0, done.stderr
    assert b"verified 5 receipts" in done.stdout


@pytest.mark.parametrize("case", ["missing_file", "missing_jwks", "not_json", "directory"])
def test_subprocess_bad_input_is_one_line(export: tuple, tmp_path: pathlib.Path, case: str) -> None:
    receipts_path, jwks_path, _ = export
    args = {
        "missing_file": [str(tmp_path / "nope.jsonl"), "--jwks", str(jwks_path)],
        "missing_jwks": [str(receipts_path), "--jwks", str(tmp_path / "nope.json")],
        "not_json": ["-", "--jwks", str(jwks_path)],
        "directory": [str(tmp_path), "--jwks", str(jwks_path)],
    }[case]
    done = _billing(*args, stdin=b"hello\n")
    assert done.returncode == 2
    line = _one_line_error(done.stderr.decode())
    assert line.startswith("billing verify: ")


def test_progress_counts_verified_receipts_to_the_end(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bar counts receipts verified (not bytes read) and reaches them all."""
    key = session_key("EdDSA")
    receipts = build_chain(key, 3000)
    receipts_path = tmp_path / "receipts.jsonl"
    receipts_path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in receipts))
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(KeyRing(key).jwks()))
    args = ["verify", str(receipts_path), "--jwks", str(jwks_path), "--progress", "always"]
    assert main([*args, "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "3000/3000" in err and "100%" in err and "receipts/s" in err, err


def test_an_empty_input_fails_with_one_line(
    export: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    receipts_path, jwks_path, _ = export
    receipts_path.write_bytes(b"")
    assert main(["verify", str(receipts_path), "--jwks", str(jwks_path)]) == 1
    captured = capsys.readouterr()
    assert "verified" not in captured.out
    assert "no receipts" in _one_line_error(captured.err)


def test_known_head_can_be_read_from_a_file(
    export: tuple, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receipts_path, jwks_path, receipts = export
    head_path = tmp_path / "receipts.jsonl.head"
    head_path.write_text(str(receipts[-1]["receipt_hash"]) + "\n")
    receipts_path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in receipts[:3]))
    args = ["verify", str(receipts_path), "--jwks", str(jwks_path), "--known-head", str(head_path)]
    assert main(args) == 1
    assert "truncated" in capsys.readouterr().out


def test_version_is_the_installed_package_version() -> None:
    from importlib.metadata import version

    done = subprocess.run(
        [str(BILLING), "--version"], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert done.stdout.decode().strip() == f"billing {version('vexa-billing')}"


def test_an_evidence_file_missing_or_too_large_is_a_one_line_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger.limits import evidence_bytes_max

    missing = tmp_path / "nope.json"
    assert main(["verify", "--evidence", str(missing)]) == 2
    assert f"cannot read evidence file {missing}" in _one_line_error(capsys.readouterr().err)
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (evidence_bytes_max + 1))
    assert main(["verify", "--evidence", str(huge)]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"evidence at {huge} is larger than {evidence_bytes_max} bytes" in line
