"""The gateway's Stripe rooms: its settings (`settings`), the parts it is
built from (`context`, `wiring`), the signed webhook receiver
(`webhook_routes`) and the billing routes (`routes`)."""
