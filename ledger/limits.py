"""Every limit of the service, in one place, checked against each other at import.

Why here: `ledger` is the lowest package that every layer above may import
(`gateway -> actors -> ledger`), and most limits bound data that is stored.
Names end in `_max` (or carry their unit) so a reader knows what is bounded.
"""

from __future__ import annotations

from typing import Final

# crypto cannot import ledger, so its own limit lives there; checked here.
from crypto import sign_reply_timeout_ms

# RFC 8785 numbers are IEEE doubles: every integer in a receipt core must stay
# strictly below 2**53 or the canonical form is not exact.
json_safe_integer_max: Final = 2**53 - 1

# Money. One charge and one balance are bounded far below the JSON bound so that
# a balance can absorb many maximal charges before it could ever overflow it.
amount_minor_max: Final = 10**12  # 10 billion in a 2-decimal currency
balance_minor_max: Final = 2**52  # leaves a factor 2 of headroom to the JSON bound
quota_minor_max: Final = balance_minor_max

# Request shape.
body_bytes_max: Final = 64 * 1024
json_depth_max: Final = 32
idempotency_key_chars_max: Final = 255
usage_description_chars_max: Final = 1_000
customer_id_chars_max: Final = 64
entitlement_id_chars_max: Final = 64
email_chars_max: Final = 320
event_future_skew_s_max: Final = 5 * 60
event_age_s_max: Final = 35 * 24 * 3600
batch_events_max: Final = 100

# Admission and concurrency.
admission_queue_max: Final = 1_000
# Above one full batch, so a whole batch request fits an idle customer's bound.
customer_inflight_max: Final = 128
# Pending TCP connections the kernel holds for us (capped by somaxconn): at
# 1,024 a burst of new clients overflowed it and their SYNs were retried after
# 1, 3, 7 s, i.e. timeouts instead of a fast 429.
listen_backlog_max: Final = 4_096
# Shed load (429) while the event loop runs this late on average: past it the
# loop, not the pipeline, is the bottleneck, requests queue in the kernel where
# the in-flight bound never sees them, and clients would time out instead.
loop_lag_max_ms: Final = 40
# ...but keep this many charges in flight even then: under a flood of retries
# the loop lags from answering 429s alone, and shedding every charge would
# starve the pipeline (measured: 513 -> 110 charges/s at 3,000 connections).
# In flight / latency is the goodput: with ~0.3 s of loop queueing under
# that flood, 64 kept 160-220 charges/s (of ~950 unloaded), 256 keeps 420-
# 505 (accepted p50 ~0.35 s), 512 keeps ~560 at twice the latency.
lagging_inflight_max: Final = 256
# Latency of admitted single charges past which admission lowers its
# in-flight bound (gateway.admission.LatencyLimit): under a 3x open-loop
# overload the full 1,000 bound made accepted charges wait 0.7-1.1 s here.
# 50 ms shed 28-286 of 15,000 charges at 1,000 req/s (latency spikes at 70%
# load); 100 ms shed 0-25 there and helps overload as much (the bound then
# sits at its floor either way).
admission_latency_target_ms: Final = 100
# One signing thread (and process) per CPU: the processes are CPU-bound, and
# on 2 CPUs 2 gave 1,441, 1,347, 1,317 single charges/s against 1,239,
# 1,337, 1,204 with 4 (interleaved), batches alike (3,109 vs 3,069 events/s).
signer_workers_per_cpu: Final = 1
# Receipts one signer thread sends its signing process per round trip: a full
# batch request (100 events) goes in two.
sign_batch_receipts_max: Final = 64

# Group commit: one transaction per batch, at most this many receipts or this
# long a wait for company.
commit_batch_receipts_max: Final = 512
commit_linger_ms: Final = 2
writer_queue_max: Final = admission_queue_max * 2

# Account actors: idle ones are passivated so memory stays bounded. They run
# on a few shared scheduler threads, not one thread each. On 2 CPUs, 2-8
# threads measured alike (1,100-1,250 charges/s) and 1 worse (~965/s, p99
# doubled: a store read or a reload holds up every account); 2 per CPU
# leaves room for blocking reads.
account_idle_s: Final = 60.0
account_scheduler_threads_per_cpu: Final = 2
# With a remote ledger (Spanner) an actor's store read (start, reload, keys
# after a reload) waits a network round trip with its thread held: more
# threads, still far fewer than one per customer.
account_scheduler_threads_remote_per_cpu: Final = 16
actor_ask_timeout_ms: Final = 10_000

# Reading receipts back.
receipts_page_max: Final = 1_000


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(f"limits: {message}")


_check(amount_minor_max < balance_minor_max, "one charge must fit in a balance")
_check(balance_minor_max < json_safe_integer_max, "balances must stay JSON-exact")
_check(quota_minor_max <= json_safe_integer_max, "quotas must stay JSON-exact")
_check(customer_inflight_max <= admission_queue_max, "a customer bound above the global one")
_check(lagging_inflight_max <= admission_queue_max, "a lagging bound above the global one")
_check(commit_batch_receipts_max <= writer_queue_max, "a batch larger than its queue")
_check(sign_batch_receipts_max <= commit_batch_receipts_max, "signed batches above a commit")
_check(batch_events_max <= admission_queue_max, "a batch request larger than admission")
_check(batch_events_max <= customer_inflight_max, "a full batch could never be admitted")
_check(batch_events_max * 2048 <= body_bytes_max * 4, "batch count out of line with body size")
_check(json_depth_max >= 4, "depth too small for a batch request")
_check(
    sign_reply_timeout_ms < actor_ask_timeout_ms,
    "a hung signing process must be given up (retry-safe) before the request times out",
)
