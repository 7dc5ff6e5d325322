"""Integrity: the audit before ready (`startup_audit`), the continuous audit
(`reconciler`, `_audit`, `_copies`), the durable halt an audit failure
records (`halts`), and the evidence bundle of a receipt (`evidence`)."""
