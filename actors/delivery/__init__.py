"""Delivery after commit, at least once and in order: the outbox relay
(`outbox`) to the broadcast, read model and archive, the archive feed
(`archive_feed`), entitlement changes to the Admin API (`admin_api`), and
customer webhooks (`webhooks`) with their threshold alerts
(`threshold_alerts`)."""
