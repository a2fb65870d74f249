"""Observability: structured logs, Prometheus metrics, health probes, systemd notify."""
