"""Every limit of the service, in one place, checked against each other at import.

Some defaults here can be changed by settings (BILLING_ADMISSION_QUEUE_MAX...);
`setting_problems` is the part of the cross-checks that involves them, run
once on the defaults at import and again by `Settings.validate` on the values
in effect at start-up.

Why here: `ledger` is the lowest package that every layer above may import
(`gateway -> actors -> ledger`), and most limits bound data that is stored.
Names end in `_max` (or carry their unit) so a reader knows what is bounded.
"""

from __future__ import annotations

from typing import Final

# crypto cannot import ledger, so its own limit lives there; checked here.
from crypto import kms_call_deadline_ms, sign_reply_timeout_ms

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
# Event timestamps kept parsed (gateway.validation): a batch's events share a few.
event_timestamps_cached_max: Final = 1_024
# A JSON number's decimal exponent beyond this is no amount (its plain text
# would be huge): 1e-7 or 1e19 are refused before formatting. 18 covers every
# amount below amount_minor_max in any currency's minor units.
amount_decimal_exponent_max: Final = 18

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


def stage_queue_max(admission_queue_max: int) -> int:
    """Bound of each charge-path stage queue (signer partition, writer): twice
    the admission bound, so admitted charges never meet a full queue (a 503)
    where admission promised a 429 (the composition root sizes them so)."""
    return admission_queue_max * 2


writer_queue_max: Final = stage_queue_max(admission_queue_max)

# Account actors: idle ones are passivated so memory stays bounded. They run
# on a few shared scheduler threads, not one thread each. On 2 CPUs, 2-8
# threads measured alike (1,100-1,250 charges/s) and 1 worse (~965/s, p99
# doubled: a store read or a reload holds up every account); 2 per CPU
# leaves room for blocking reads.
account_idle_s: Final = 60.0
# Live account actors past which the least recently active are passivated
# even before `account_idle_s` (checked every `account_passivation_interval_s`):
# one holds ~13 KiB while live, and a burst of 100,000 customers within the
# idle time held 2.6 GiB. 10,000 keep ~130 MiB; restarting a passivated one
# costs one account read.
account_actors_live_max: Final = 10_000
account_passivation_interval_s: Final = 1.0
# Actors stopped together in one round trip to the accounts supervisor.
passivation_batch_max: Final = 1_000
# Charges an account actor holds by key, in flight or settled behind one still
# in flight, so a repeat is answered from memory; past it the oldest moves to
# the settled keys below (a repeat of it is then read from the store first).
account_recent_keys_max: Final = 4_096
# Keys (only) of the last settled charges an account actor keeps, so that a
# client's retry, which usually comes soon, is read from the store first
# rather than caught at commit (see actors.account).
account_settled_keys_max: Final = 128
# The start-up audit of account heads runs this long before the service
# reports ready, then in the background (actors.integrity.startup_audit): 100,000
# heads took 4.4 s, over the 2 s start-to-ready budget.
startup_audit_before_ready_ms: Final = 500
account_scheduler_threads_per_cpu: Final = 2
# With a remote ledger (Spanner) an actor's store read (start, reload, keys
# after a reload) waits a network round trip with its thread held: more
# threads, still far fewer than one per customer.
account_scheduler_threads_remote_per_cpu: Final = 16
actor_ask_timeout_ms: Final = 10_000
# Threads running the handlers' blocking store calls off the event loop
# (gateway.services.Services.blocking).
blocking_threads_max: Final = 16

# Reading receipts back.
receipts_page_max: Final = 1_000
# Access log lines a second (one per request below it, sampled above; the
# dropped ones are counted): a line costs ~10 us of the event loop.
access_log_lines_per_s_max: Final = 100
# An operator's list of customers (GET /v1/customers), per page.
customers_page_max: Final = 100

# The receipt log. A commit that finds the log moved (another gateway on the
# same store appended first) rebuilds and re-signs this many times at most,
# then answers retry-safe.
log_conflict_retries_max: Final = 8
# Batches the ledger writer has in flight at once: each one's checkpoint
# signature starts as soon as its root is known, on top of the batches
# before it that are still signing or committing; commits stay in order.
# With a 20 ms KMS signature and a few ms per commit, about 20 / commit + 1
# batches keep the store busy while the signatures wait (measured:
# loadtest/README.md, bench_kms). Every batch in flight may be rebuilt and
# re-signed when one before it fails.
log_batches_inflight_max: Final = 8
# How long a commit waits for its checkpoint's signature: past the KMS
# call's own deadline (retries included), never past the request's.
checkpoint_sign_timeout_ms: Final = kms_call_deadline_ms + 1_000
# Checkpoints per page of the checkpoint history.
log_checkpoints_page_max: Final = 1_000
# Full tiles (immutable) a process keeps for proofs: 8 KiB each.
log_tile_cache_max: Final = 4_096
# A checkpoint or consistency proof document `billing verify` reads (a proof
# of 2**53 leaves is ~106 hashes, ~7 KiB of hex).
log_document_bytes_max: Final = 64 * 1024
# `billing log audit`: receipts read per page, and checkpoints per page.
audit_page_receipts_max: Final = 2_048
audit_page_checkpoints_max: Final = 1_000
# Checkpoints read per page from the archive by a restore.
restore_checkpoints_page_max: Final = 1_000

# Outbox and archive relays (actors.delivery): messages or receipts taken per
# pass; a pass carries ~2,000 customers' receipts at most (see
# archive_files_per_sync_max), and a large pass amortises a sink's round trip.
outbox_batch_messages_max: Final = 2_000
archive_feed_batch_receipts_max: Final = 2_000
# Pending checkpoints are counted up to this many (a read per measurement):
# past the backlog alert's 10,000, an exact count tells an SRE nothing more.
archive_checkpoints_backlog_counted_max: Final = 20_000


# Gathered from the modules that use them (crypto/ and supervisor/ keep
# their own: they may not import ledger).

# Stripe sync.
webhook_batch_max: Final = 50
# Error text kept with a failed event (for operators), bounded.
webhook_error_chars_max: Final = 500
# A customer with more subscriptions than this is an anomaly, not a plan.
subscriptions_per_customer_max: Final = 1_000

# Admin API relay.
admin_batch_max: Final = 50
admin_response_bytes_max: Final = 1024 * 1024

# Reconciler.
# Missing receipts are written back in batches of at most this many.
repair_batch_receipts_max: Final = 256
# Receipt ids kept per list in a report; the counts stay exact beyond it.
report_ids_max: Final = 100
# Bounds on the constructor's arguments: a typo of a few zeros fails at start.
reconcile_interval_s_max: Final = 86_400.0
# Failures and errors kept in a PassSummary; the counts stay exact beyond it.
summary_items_max: Final = 100
# Integrity halts: how many recent incidents the admin route lists, and how
# long an operator's clearing reason and an incident's detail may be.
halts_listed_max: Final = 100
halt_clear_reason_chars_max: Final = 2_000
halt_detail_chars_max: Final = 4_000
# The request record kept with each charge (dispute evidence): client-sent
# text is clipped, never refused (a long User-Agent is no reason to fail).
user_agent_chars_max: Final = 512
request_id_chars_max: Final = 128
# A dispute evidence bundle read by `billing verify --evidence`: a receipt, a
# chain of at most commit_batch_receipts_max + 1 receipts, proofs and keys.
evidence_bytes_max: Final = 16 * 1024 * 1024

# Stripe routes.
# Stripe calls holding one of the shared executor's threads at once.
stripe_calls_running_max: Final = 4
# Stripe route calls waiting for (or running on) the executor; beyond this: 503.
stripe_calls_inflight_max: Final = 64
# Stripe events can be larger than our API's 64 KiB bodies (expanded objects).
webhook_body_bytes_max: Final = 512 * 1024
stats_subscriptions_max: Final = 10_000
stripe_network_retries_max: Final = 2
# Stripe's own limit on a meter's event_name (and we use it for meter ids too).
meter_event_name_chars_max: Final = 100
# A grace beyond 60 days would outlast two monthly periods unpaid.
payment_grace_s_max: Final = 60 * 86_400
# Receipts one usage audit pass reads per customer and period.
usage_audit_receipts_max: Final = 1_000_000
# Stripe disputes (actors.stripe.disputes). Stripe's own limits: one
# dispute_evidence file (PDF, JPEG or PNG) of at most 5 MB, and 150,000
# characters over all the evidence text fields of a dispute.
dispute_file_bytes_max: Final = 5 * 1024 * 1024
dispute_evidence_chars_max: Final = 150_000
# The access activity log field (one line per charge); the rest of the text
# fields are short (names, a summary of the invoice).
dispute_activity_log_chars_max: Final = 120_000
# Receipts one dispute's evidence lists: the charges of one customer in one
# invoice period.
dispute_receipts_max: Final = 20_000
# Sealed evidence bundles attached to the evidence file, by count and by
# bytes before compression; each one listed beyond them is still served by
# GET /v1/receipts/{id}/evidence.
dispute_bundles_max: Final = 100
dispute_bundle_bytes_max: Final = 3 * 1024 * 1024
# Reversals of one receipt (each is a receipt of its own in the chain).
reversals_per_receipt_max: Final = 100
# A reversal's idempotency key wraps the operator's: "reversal:" + the
# original's receipt id + ":" (receipt ids are ~30 characters).
reversal_key_overhead_chars_max: Final = 64
# The reason a reversal gives (shown in its receipt's usage_description).
reversal_reason_chars_max: Final = 500

# Customer webhooks (threshold alerts).
# Stripe allows 16 webhook endpoints per account; each event goes to every one.
webhook_endpoints_per_customer_max: Final = 16
webhook_url_chars_max: Final = 2_048
alert_thresholds_max: Final = 10
# Above 100: a soft quota can be overrun, and its customer may want to know.
alert_threshold_pct_max: Final = 1_000
# Stripe's own page bound for list endpoints.
outbound_events_page_max: Final = 100
# One POST to a customer's endpoint (Stripe waits at most ~20 s).
webhook_timeout_ms_max: Final = 30_000
# How long a rotated-out secret still signs (Stripe: up to 7 days for a roll).
webhook_secret_overlap_s_max: Final = 7 * 86_400

# Gateway.
jwks_bytes_max: Final = 1024 * 1024
# API keys cached (for API_KEY_CACHE_TTL_S each, ~700 B each): a key used
# more rarely than 10,000 others in the TTL is read from the store again.
api_key_cache_entries_max: Final = 10_000
# In flight per customer up to which nobody counts as heavy (Admission.refuse_if_saturated).
light_inflight_max: Final = 4
# Net container allocations before a young collection (CPython's default: 700).
gc_young_allocations_max: Final = 20_000

# SQLite and local adapters.
# The writer's page cache. Random receipt ids and idempotency keys dirty about
# one index leaf per receipt; keeping the indexes' hot pages cached avoids
# re-reading them for every batch (measured ~2x receipts/s over the 2 MiB default).
writer_cache_kib_max: Final = 128 * 1024
# Checkpoint every 64 MiB of WAL rather than SQLite's 4 MiB: with ~3-6 MiB of
# WAL per 512-receipt batch the default checkpoints (and fsyncs the main file)
# on almost every commit; a larger WAL lets a hot index page be copied once per
# checkpoint instead of once per batch. Also the bound on the WAL's size.
wal_autocheckpoint_pages_max: Final = 16_384
# Customers whose archived receipt ids the file archive keeps in memory
# (ledger.local.FileArchive); one dropped is read from its file again.
archive_customers_cached_max: Final = 10_000
# Read connections kept open between reads; more may be open at a peak, and
# those close when given back.
reader_idle_max: Final = 32
# Keys, pairs and tile keys per SQLite statement: chunks well under SQLite's
# host-parameter limit (sqlite_host_parameters_fixed_max below), so one query
# answers a whole commit batch's keys in one or two statements.
sqlite_receipt_keys_per_query_max: Final = 500  # plus the customer id
sqlite_refusal_pairs_per_query_max: Final = 250  # two parameters a pair
sqlite_tile_keys_per_query_max: Final = 400  # two parameters a key
# fixed: SQLite's SQLITE_MAX_VARIABLE_NUMBER default before 3.32 (the floor any
# build we may meet allows); only here for the cross-checks at the end.
sqlite_host_parameters_fixed_max: Final = 999
# Files of the local archive open at once between two syncs: well under the
# usual 1,024 open files (a relay pass may carry 2,000 customers).
archive_files_per_sync_max: Final = 256
# Checkpoint files (one per 65,536 tree sizes) whose checkpoint ids the local
# archive keeps for idempotency: the newest and the one before it, so a retry
# that straddles a file boundary is still recognised, however old the log.
archive_checkpoint_files_remembered_max: Final = 2

# Google Cloud adapters.
# Firestore refuses more than 500 writes in one batch.
firestore_batch_writes_max: Final = 500

# The web app (gateway/web): what one page lists, how long a browser session
# lasts, how many days the usage chart spans.
api_keys_listed_max: Final = 200
share_links_listed_max: Final = 200
usage_days_max: Final = 31
web_receipts_page_max: Final = 50
web_session_s_max: Final = 12 * 3600
# The OIDC sign-in's round trip (state, nonce, PKCE verifier held in a cookie).
oidc_login_s_max: Final = 600
oidc_http_timeout_s: Final = 10.0


def setting_problems(
    *, admission_queue_max: int, customer_inflight_max: int, commit_batch_receipts_max: int
) -> list[str]:
    """What is wrong with these values together (empty: nothing), one line each.

    Not checked, on purpose: a customer bound or a commit batch above the
    admission bound (or its queues) is harmless, the smaller bound wins, and
    a small admission bound is a deliberate choice (overload tests use 16).
    A customer bound below a full batch request is allowed too: the batch
    route then takes at most that many events (413 above it), so a batch is
    never held back forever.
    """
    problems: list[str] = []
    if commit_batch_receipts_max < sign_batch_receipts_max:
        problems.append(
            f"commit_batch_receipts_max {commit_batch_receipts_max} is below a signed"
            f" batch ({sign_batch_receipts_max} receipts)"
        )
    return problems


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(f"limits: {message}")


for _problem in setting_problems(
    admission_queue_max=admission_queue_max,
    customer_inflight_max=customer_inflight_max,
    commit_batch_receipts_max=commit_batch_receipts_max,
):
    _check(False, _problem)
_check(amount_minor_max < balance_minor_max, "one charge must fit in a balance")
_check(balance_minor_max // amount_minor_max > 1_000, "a balance must absorb many charges")
_check(balance_minor_max < json_safe_integer_max, "balances must stay JSON-exact")
_check(quota_minor_max <= json_safe_integer_max, "quotas must stay JSON-exact")
_check(customer_inflight_max <= admission_queue_max, "a customer bound above the global one")
_check(lagging_inflight_max <= admission_queue_max, "a lagging bound above the global one")
_check(commit_batch_receipts_max <= writer_queue_max, "a batch larger than its queue")
_check(batch_events_max <= admission_queue_max, "a batch request larger than admission")
_check(batch_events_max * 2048 <= body_bytes_max * 4, "batch count out of line with body size")
_check(json_depth_max >= 4, "depth too small for a batch request")
_check(
    sign_reply_timeout_ms < actor_ask_timeout_ms,
    "a hung signing process must be given up (retry-safe) before the request times out",
)
_check(
    kms_call_deadline_ms < actor_ask_timeout_ms,
    "a Cloud KMS signature must be given up (retry-safe) before the request times out",
)
_check(
    checkpoint_sign_timeout_ms < actor_ask_timeout_ms,
    "a commit must give up on its signature before the request times out",
)
_check(log_batches_inflight_max >= 1, "the ledger writer needs a batch in flight")
_check(
    dispute_activity_log_chars_max + 10_000 <= dispute_evidence_chars_max,
    "the activity log leaves room for the other dispute evidence fields",
)
_check(dispute_bundle_bytes_max < dispute_file_bytes_max, "bundles must fit in one evidence file")
_check(
    sqlite_receipt_keys_per_query_max + 1 <= sqlite_host_parameters_fixed_max,
    "a receipt key query over SQLite's parameter limit",
)
_check(
    sqlite_refusal_pairs_per_query_max * 2 <= sqlite_host_parameters_fixed_max,
    "a refusal pair query over SQLite's parameter limit",
)
_check(
    sqlite_tile_keys_per_query_max * 2 <= sqlite_host_parameters_fixed_max,
    "a tile key query over SQLite's parameter limit",
)
_check(archive_checkpoint_files_remembered_max >= 1, "the archive must remember its newest file")


# --- Spanner adapter ----------------------------------------------------------
# Usage rows one dashboard query reads: one row per day and entitlement, so
# 16 entitlements charged a day over the longest window.
spanner_usage_rows_max: Final = usage_days_max * 16
# The emulator aborts an overlapping transaction disguised as another error
# (ledger._spanner_base._call): retried this many times before it is one.
spanner_disguised_abort_retries_max: Final = 30
# Outbox rows one commit writes: per receipt its sinks' messages (at most 4
# topics), the checkpoint's included.
spanner_outbox_messages_max: Final = commit_batch_receipts_max * 4

# --- Reconciler -----------------------------------------------------------------
# Customers a reconciler round audits by default, and the most a caller may
# ask for: a round over 100,000 customers would outlast any interval.
reconcile_round_customers_max: Final = 100
reconcile_round_customers_asked_max: Final = 100_000
# The background audit's most CPU time, as a share of the wall time
# (actors.integrity.reconciler._Pacer). At 1,000,000 receipts a pass costs
# ~40 s of CPU on the 2-core machine (the log ~11 s, the customers ~27 s):
# capped at a quarter, ~160 s of a 240 s pass.
audit_busy_share_max: Final = 0.25
