"""Receipts checked against one checkpoint the verifier holds (`billing verify --checkpoint`).

A receipt's `log` block proves it is in SOME signed checkpoint. A customer
who kept a checkpoint (or got one with an export) wants more: that the
receipt is in THAT tree, so a log that was cut and regrown, or shows another
history to someone else, is caught. Same size: the roots must be equal (two
signed roots for one size are a fork). Another size: an RFC 9162
consistency proof between the two checkpoints, from whoever can give one
(the service); the log's own signed checkpoint at the other size comes with
it, so a fork is reported with both signatures as evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from crypto._check import Link
from crypto._checkpoint import verify_checkpoint
from crypto._errors import CheckpointError, LogError, ProofError
from crypto._jws import OK, VerificationResult, fail
from crypto._merkle import verify_consistency
from crypto._receipt_log import LogPosition
from crypto._trusted import TrustedKeys

_linked_sizes_max = 4_096  # distinct receipt checkpoints remembered per run


class ConsistencyAnswer(NamedTuple):
    """A consistency proof as the log serves it: both signed checkpoints and the path."""

    first_jws: str
    second_jws: str
    proof: list[bytes]


# (first, second) tree sizes -> the log's answer; raises LogError when it has none.
ConsistencySource = Callable[[int, int], ConsistencyAnswer]


class CheckpointAnchor:
    """Decides whether a receipt proved against one checkpoint is in the anchor checkpoint."""

    def __init__(
        self, jws: str, keys: TrustedKeys, consistency: ConsistencySource | None = None
    ) -> None:
        """Raises CheckpointError unless `jws` is a checkpoint signed by one of `keys`."""
        self.checkpoint = verify_checkpoint(jws, keys)
        self._jws = jws
        self._keys = keys
        self._consistency = consistency
        self._verdicts: dict[tuple[int, bytes], VerificationResult] = {}

    def __reduce__(
        self,
    ) -> tuple[type[CheckpointAnchor], tuple[str, TrustedKeys, ConsistencySource | None]]:
        # To a worker process (crypto._jsonl_ranges) as what built it; verdicts start empty.
        return CheckpointAnchor, (self._jws, self._keys, self._consistency)

    def check(self, position: LogPosition | None) -> VerificationResult:
        anchor = self.checkpoint
        if position is None:
            return fail("not_in_checkpoint", "the receipt carries no log proof")
        if position.leaf_index >= anchor.tree_size:
            return fail(
                "not_in_checkpoint",
                f"leaf {position.leaf_index} is not among the {anchor.tree_size} leaves"
                " of the checkpoint",
            )
        key = (position.tree_size, position.root_hash)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._link(position.tree_size, position.root_hash)
            if len(self._verdicts) < _linked_sizes_max:
                self._verdicts[key] = verdict
        return verdict

    def _link(self, size: int, root: bytes) -> VerificationResult:
        anchor = self.checkpoint
        if size == anchor.tree_size:
            return OK if root == anchor.root_hash else _fork(size, root, anchor.root_hash)
        if self._consistency is None:
            return fail(
                "not_in_checkpoint",
                f"proved against the checkpoint of {size} leaves, not {anchor.tree_size}: "
                "a consistency proof from the service (--url) would link them",
            )
        (first, first_root), (second, second_root) = sorted(
            [(size, root), (anchor.tree_size, anchor.root_hash)]
        )
        try:
            answer = self._consistency(first, second)
            for jws, expected_size, expected_root in (
                (answer.first_jws, first, first_root),
                (answer.second_jws, second, second_root),
            ):
                served = verify_checkpoint(jws, self._keys)
                if served.tree_size != expected_size:
                    return fail("not_consistent", f"asked for size {expected_size}, got another")
                if served.root_hash != expected_root:
                    return _fork(expected_size, served.root_hash, expected_root)
        except CheckpointError as error:
            return fail(error.reason, f"the log's checkpoint: {error.detail}")
        except LogError as error:
            return fail("not_in_checkpoint", f"no consistency proof {first} -> {second}: {error}")
        try:
            verify_consistency(first, second, first_root, second_root, answer.proof)
        except ProofError as error:
            return fail("not_consistent", f"checkpoints {first} -> {second}: {error.detail}")
        return OK


def _fork(size: int, one: bytes, other: bytes) -> VerificationResult:
    return fail(
        "fork",
        f"two signed checkpoints of {size} leaves with different roots: "
        f"sha256:{one.hex()} and sha256:{other.hex()}",
    )


def anchored(
    checked: Iterable[tuple[VerificationResult, Link | None, str | None]],
    anchor: CheckpointAnchor,
) -> Iterator[tuple[VerificationResult, Link | None, str | None]]:
    """The receipts checked one by one, each then checked against the anchor."""
    for result, link, receipt_id in checked:
        if link is not None:
            verdict = anchor.check(link.log)
            if not verdict.ok:
                yield verdict, None, link.receipt_id
                continue
        yield result, link, receipt_id
