"""Stripe: subscriptions decide entitlements (`sync`, `_plans`, `_reconcile`,
`_poll`), committed usage reaches the invoice (`usage`), and a dispute is
answered with our evidence (`disputes`, `_dispute_text`, `_dispute_pdf`)."""
