"""Contract suites: one per storage port, run against every adapter."""
