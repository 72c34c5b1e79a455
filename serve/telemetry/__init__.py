"""Telemetry: per-request records, Prometheus metrics, tracing and the drift monitor."""
