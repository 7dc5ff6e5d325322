"""`verify_jsonl(path)` verifies a large file in byte ranges, each read and
walked by a worker process, and gives exactly `verify_jsonl`'s verdict on
the same lines: first failure in file order, its line index, reason, receipt
id, verified count and head. Ranges are forced small (a few lines each), and
every line is padded to one length so the tampering below keeps the ranges
where they were and each case lands where it says (the first line of a
range, the link across a boundary...)."""

from __future__ import annotations

import functools
import pathlib
import threading
from typing import Any

import orjson
import pytest

import crypto._jsonl as jsonl
import crypto._jsonl_ranges as jsonl_ranges
from crypto import (
    CheckpointAnchor,
    ConsistencyAnswer,
    KeyRing,
    TrustedKeys,
    verify_jsonl,
)
from crypto._chain import ChainReport
from tests.crypto import tlog_reference as ref
from tests.crypto.conftest import (
    build_chain,
    checkpoint_jws,
    log_block,
    logged_chain,
    session_key,
)

LINE_BYTES = 2048
RANGE_BYTES_MIN = 4 * LINE_BYTES  # 48 lines, 2 workers: 8 ranges of 6 lines
COUNT = 48
Receipt = dict[str, object]


@pytest.fixture
def ranges_used(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[int, int | None]]]:
    """Small ranges; each list of ranges the parallel path was given."""
    monkeypatch.setattr(jsonl_ranges, "split_bytes_min", 2 * RANGE_BYTES_MIN)
    monkeypatch.setattr(jsonl_ranges, "range_bytes_min", RANGE_BYTES_MIN)
    calls: list[list[tuple[int, int | None]]] = []
    real = jsonl_ranges.verify_ranges

    def spy(path: str, ranges: list[tuple[int, int | None]], *args: Any) -> ChainReport:
        calls.append(ranges)
        return real(path, ranges, *args)

    monkeypatch.setattr(jsonl, "verify_ranges", spy)  # as verify_jsonl calls it
    return calls


def _line(receipt: Receipt | bytes) -> bytes:
    """One line of exactly LINE_BYTES (an extra field pads; the hash ignores it)."""
    if isinstance(receipt, bytes):
        return receipt.ljust(LINE_BYTES - 1) + b"\n"
    bare = orjson.dumps({**receipt, "pad": ""})
    line = orjson.dumps({**receipt, "pad": "x" * (LINE_BYTES - 1 - len(bare))}) + b"\n"
    assert len(line) == LINE_BYTES, len(bare)
    return line


def _write(tmp_path: pathlib.Path, lines: list[bytes]) -> pathlib.Path:
    path = tmp_path / "receipts.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def _range_starts(lines: int) -> list[int]:
    """The first line of each range of a file of `lines` padded lines, as split for 2 workers."""
    size = lines * LINE_BYTES
    count = min(2 * jsonl_ranges.ranges_per_worker, size // jsonl_ranges.range_bytes_min)
    return [-(-(size * k // count) // LINE_BYTES) for k in range(count)]


def _both(
    path: pathlib.Path, jwks: Any, ranges_used: list[Any], **options: Any
) -> tuple[ChainReport, list[int]]:
    """The verdict in ranges, after checking it is the sequential one; and the
    receipts counted by each on_verified call. `anchor`: a CheckpointAnchor maker."""
    make_anchor = options.pop("anchor", lambda: None)
    with open(path, "rb") as stream:
        sequential = verify_jsonl(list(stream), jwks, anchor=make_anchor(), **options)
    before = len(ranges_used)
    advanced: list[int] = []
    parallel = verify_jsonl(
        path, jwks, workers=2, on_verified=advanced.append, anchor=make_anchor(), **options
    )
    assert len(ranges_used) == before + 1, "the file was not verified in ranges"
    assert parallel == sequential
    return parallel, advanced


@pytest.fixture(scope="module")
def chain() -> list[Receipt]:
    return build_chain(session_key("RS256"), COUNT)


@pytest.fixture
def jwks() -> dict[str, object]:
    return dict(KeyRing(session_key("RS256")).jwks())


def _failure(report: ChainReport) -> tuple[int, int, str, str | None]:
    assert report.failure is not None
    failure = report.failure
    return report.verified, failure.index, failure.reason, failure.receipt_id


def test_a_good_file_verifies_range_by_range(
    tmp_path: pathlib.Path, chain: list[Receipt], jwks: object, ranges_used: list[Any]
) -> None:
    path = _write(tmp_path, [_line(receipt) for receipt in chain])
    report, advanced = _both(path, jwks, ranges_used)
    assert report.ok and report.verified == COUNT
    assert (report.first_seq, report.last_seq) == (1, COUNT)
    assert report.head_hash == chain[-1]["receipt_hash"] and report.starts_at_genesis
    starts = _range_starts(COUNT)
    assert [start * LINE_BYTES for start in starts] == [s for s, _ in ranges_used[0]]
    assert advanced == [b - a for a, b in zip(starts, [*starts[1:], COUNT], strict=True)]


def _altered(receipt: Receipt) -> Receipt:
    """Same length, another amount: only the hash can tell."""
    amount = int(receipt["amount_minor"])  # type: ignore[call-overload]
    return {**receipt, "amount_minor": amount + 1 if amount % 10 != 9 else amount - 1}


def test_the_first_failure_in_file_order_wins_over_a_later_range(
    tmp_path: pathlib.Path, chain: list[Receipt], jwks: object, ranges_used: list[Any]
) -> None:
    second, third = _range_starts(COUNT)[1:3]
    lines = [_line(receipt) for receipt in chain]
    lines[second + 1] = _line(_altered(chain[second + 1]))
    lines[third] = _line(b"{not json")
    report, advanced = _both(_write(tmp_path, lines), jwks, ranges_used)
    assert _failure(report) == (
        second + 1,
        second + 1,
        "hash_mismatch",
        chain[second + 1]["receipt_id"],
    )
    assert sum(advanced) == second + 1


@pytest.mark.parametrize("where", ["inside_first_range", "first_line_of_a_range"])
def test_a_tampered_receipt_fails_at_its_line_of_the_whole_file(
    tmp_path: pathlib.Path, chain: list[Receipt], jwks: object, ranges_used: list[Any], where: str
) -> None:
    target = 3 if where == "inside_first_range" else _range_starts(COUNT)[2]
    lines = [_line(receipt) for receipt in chain]
    lines[target] = _line(_altered(chain[target]))
    report, _ = _both(_write(tmp_path, lines), jwks, ranges_used)
    assert _failure(report) == (target, target, "hash_mismatch", chain[target]["receipt_id"])
    assert report.last_seq == target  # the head reported is the last receipt linked


def test_a_broken_link_exactly_at_a_range_boundary(
    tmp_path: pathlib.Path, chain: list[Receipt], jwks: object, ranges_used: list[Any]
) -> None:
    """Both ranges are sound chains on their own; only the link between them is not."""
    boundary = _range_starts(COUNT)[3]
    other = build_chain(session_key("RS256"), COUNT, description="another history")
    lines = [_line(receipt) for receipt in [*chain[:boundary], *other[boundary:]]]
    report, _ = _both(_write(tmp_path, lines), jwks, ranges_used)
    assert _failure(report) == (
        boundary,
        boundary,
        "previous_hash_mismatch",
        other[boundary]["receipt_id"],
    )
    assert report.head_hash == chain[boundary - 1]["receipt_hash"]


def test_another_customer_and_a_seq_gap_at_a_range_boundary(
    tmp_path: pathlib.Path, chain: list[Receipt], jwks: object, ranges_used: list[Any]
) -> None:
    boundary = _range_starts(COUNT - 1)[1]
    gap = [_line(receipt) for receipt in [*chain[:boundary], *chain[boundary + 1 :]]]
    report, _ = _both(_write(tmp_path, gap), jwks, ranges_used)
    assert _failure(report)[:3] == (boundary, boundary, "seq_gap")

    boundary = _range_starts(COUNT)[1]
    stranger = build_chain(session_key("RS256"), COUNT - boundary, "cus_other", boundary + 1)
    lines = [_line(receipt) for receipt in [*chain[:boundary], *stranger]]
    report, _ = _both(_write(tmp_path, lines), jwks, ranges_used)
    assert _failure(report)[:3] == (boundary, boundary, "customer_changed")


def test_reordered_across_a_boundary_and_a_duplicate_on_one(
    tmp_path: pathlib.Path, chain: list[Receipt], jwks: object, ranges_used: list[Any]
) -> None:
    boundary = _range_starts(COUNT)[2]
    lines = [_line(receipt) for receipt in chain]
    lines[boundary - 1], lines[boundary] = lines[boundary], lines[boundary - 1]
    report, _ = _both(_write(tmp_path, lines), jwks, ranges_used)
    assert _failure(report)[:3] == (boundary - 1, boundary - 1, "seq_gap")

    lines = [_line(receipt) for receipt in chain]
    lines[boundary] = lines[boundary - 1]
    report, _ = _both(_write(tmp_path, lines), jwks, ranges_used)
    assert _failure(report) == (boundary, boundary, "seq_gap", chain[boundary - 1]["receipt_id"])


def test_not_json_blank_and_torn_lines(
    tmp_path: pathlib.Path, chain: list[Receipt], jwks: object, ranges_used: list[Any]
) -> None:
    lines = [_line(receipt) for receipt in chain]
    target = _range_starts(COUNT)[4] + 2
    lines[target] = _line(b'{"receipt_id": "rcp_')
    report, _ = _both(_write(tmp_path, lines), jwks, ranges_used)
    assert _failure(report)[:3] == (target, target, "not_json")

    # A blank line is a line (not_json), as reading the file line by line finds it.
    lines = [_line(receipt) for receipt in chain]
    lines.insert(40, b"\n")
    report, _ = _both(_write(tmp_path, lines), jwks, ranges_used)
    assert _failure(report)[:3] == (40, 40, "not_json")

    # A last line torn mid-receipt fails; whole but without its newline, it verifies.
    lines = [_line(receipt) for receipt in chain]
    report, _ = _both(_write(tmp_path, [*lines[:-1], lines[-1][:100]]), jwks, ranges_used)
    assert _failure(report)[:3] == (COUNT - 1, COUNT - 1, "not_json")
    report, _ = _both(_write(tmp_path, [*lines[:-1], lines[-1][:-1]]), jwks, ranges_used)
    assert report.ok and report.verified == COUNT


def test_known_head_in_a_later_range_at_the_start_or_missing(
    tmp_path: pathlib.Path, chain: list[Receipt], jwks: object, ranges_used: list[Any]
) -> None:
    path = _write(tmp_path, [_line(receipt) for receipt in chain])
    for position in (0, _range_starts(COUNT)[5] + 1, COUNT - 1):
        head = str(chain[position]["receipt_hash"])
        assert _both(path, jwks, ranges_used, known_head=head)[0].ok
    cut = _write(tmp_path, [_line(receipt) for receipt in chain[:-1]])
    report, _ = _both(cut, jwks, ranges_used, known_head=str(chain[-1]["receipt_hash"]))
    assert _failure(report) == (COUNT - 1, COUNT - 1, "truncated", None)


def test_checkpoint_form_with_the_anchor_and_a_bent_proof(
    tmp_path: pathlib.Path, ranges_used: list[Any]
) -> None:
    receipts, jwks, leaves, _ = logged_chain(COUNT)
    path = _write(tmp_path, [_line(receipt) for receipt in receipts])
    jws = str(receipts[0]["log"]["checkpoint"])  # type: ignore[index]
    keys = TrustedKeys(jwks)
    anchor = functools.partial(CheckpointAnchor, jws, keys)
    assert _both(path, jwks, ranges_used, anchor=anchor)[0].verified == COUNT

    target = _range_starts(COUNT)[3]
    block = log_block(leaves, 2 * target, jws)
    bent = list(block["inclusion"])  # type: ignore[call-overload]
    bent[2] = "0" * 64
    lines = [_line(receipt) for receipt in receipts]
    lines[target] = _line({**receipts[target], "log": {**block, "inclusion": bent}})
    report, _ = _both(_write(tmp_path, lines), jwks, ranges_used, anchor=anchor)
    assert _failure(report)[:3] == (target, target, "not_in_log")


def _older_proofs(tmp_path: pathlib.Path, from_line: int) -> tuple[pathlib.Path, Any, str]:
    """Checkpoint form where the receipts from `from_line` on are proved against a
    bigger checkpoint than the anchor's (the file, the log's leaves, the anchor JWS)."""
    receipts, _, leaves, key = logged_chain(COUNT)
    anchor_jws = str(receipts[0]["log"]["checkpoint"])  # type: ignore[index]
    grown = [*leaves, *(ref.rfc_leaf(b"later %d" % n) for n in range(5))]
    grown_jws = checkpoint_jws(grown, key)
    lines = [
        _line({**receipt, "log": log_block(grown, 2 * line, grown_jws)})
        if line >= from_line
        else _line(receipt)
        for line, receipt in enumerate(receipts)
    ]
    return _write(tmp_path, lines), grown, anchor_jws


def _answer(answers: dict[tuple[int, int], ConsistencyAnswer], first: int, second: int) -> Any:
    """The log's consistency proofs, computed beforehand (a spawned worker has
    neither the test's key nor its leaves; a partial of this pickles to it)."""
    return answers[first, second]


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_receipt_of_another_checkpoint_needs_a_consistency_proof_in_every_worker(
    tmp_path: pathlib.Path, ranges_used: list[Any], start: str
) -> None:
    from_line = _range_starts(COUNT)[6] + 1
    path, grown, anchor_jws = _older_proofs(tmp_path, from_line)
    jwks = dict(KeyRing(session_key("RS256")).jwks())
    keys = TrustedKeys(jwks)
    offline = functools.partial(CheckpointAnchor, anchor_jws, keys)
    first, second = 2 * COUNT, len(grown)
    key = session_key("RS256")
    answer = ConsistencyAnswer(anchor_jws, checkpoint_jws(grown, key), ref.proof(first, grown))
    source = functools.partial(_answer, {(first, second): answer})
    online = functools.partial(CheckpointAnchor, anchor_jws, keys, source)
    with _threads_if(start == "spawn"):
        report, _ = _both(path, jwks, ranges_used, anchor=offline)
        assert _failure(report)[:3] == (from_line, from_line, "not_in_checkpoint")
        assert _both(path, jwks, ranges_used, anchor=online)[0].verified == COUNT


class _threads_if:
    """A second thread alive: worker processes are spawned, not forked."""

    def __init__(self, wanted: bool) -> None:
        self.wanted = wanted
        self.done = threading.Event()

    def __enter__(self) -> None:
        if self.wanted:
            threading.Thread(target=self.done.wait, daemon=True).start()
            assert threading.active_count() > 1

    def __exit__(self, *_: object) -> None:
        self.done.set()


def test_billing_verify_reads_a_large_file_in_ranges(
    tmp_path: pathlib.Path,
    chain: list[Receipt],
    jwks: object,
    ranges_used: list[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gateway.cli import main

    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_bytes(orjson.dumps(jwks))
    lines = [_line(receipt) for receipt in chain]
    path = _write(tmp_path, lines)
    verify = ["verify", str(path), "--jwks", str(jwks_path), "--workers", "2"]
    # The bar runs a thread: the workers are spawned, and the bar still reaches the end.
    assert main([*verify, "--progress", "always"]) == 0
    captured = capsys.readouterr()
    assert f"verified {COUNT} receipts" in captured.out
    assert str(chain[-1]["receipt_hash"]) in captured.out
    assert f"{COUNT}/{COUNT}" in captured.err and len(ranges_used) == 1

    target = _range_starts(COUNT)[5]
    lines[target] = _line(_altered(chain[target]))
    _write(tmp_path, lines)
    assert main([*verify, "--progress", "never"]) == 1
    out = capsys.readouterr().out
    assert f"verified {target} receipts" in out
    assert (
        f"FAILED at line {target + 1} (receipt {chain[target]['receipt_id']}): hash_mismatch" in out
    )

    lines[target] = _line(b"[1, 2")
    _write(tmp_path, lines)
    assert main([*verify, "--progress", "never"]) == 2
    assert f"billing verify: line {target + 1}: not JSON" in capsys.readouterr().err
    assert len(ranges_used) == 3

    assert main([*verify[:-1], "1", "--progress", "never"]) == 2  # one worker: line by line
    assert f"line {target + 1}: not JSON" in capsys.readouterr().err
    assert len(ranges_used) == 3
