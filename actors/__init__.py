"""The actor layer: everything that runs between the gateway and the ledger.

Where to look:

- here, the charge path, one module per stage: `charges` (what a charge asks
  for and how it ends), `tickets` (every charge answered exactly once),
  `accounts` and `account` (one actor per customer, the only writer of its
  chain), `pipeline` and `pending` (a receipt on its way), `signer`
  (receipt-mode signing pool), `writer` and `receipt_log` (group commit, one
  signed checkpoint per commit), `stage_owner`, `ids`, `metrics`;
- `stripe/`: Stripe in and out (subscriptions to entitlements, usage to
  invoices, disputes answered with evidence);
- `integrity/`: audits at start-up and in the background, durable halts,
  dispute evidence bundles;
- `delivery/`: what leaves the service at least once after commit (outbox
  relay, archive feed, Admin API, customer webhooks and threshold alerts).
"""
