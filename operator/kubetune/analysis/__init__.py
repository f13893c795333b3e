"""Canary analysis: PromQL over the router's metrics, a Prometheus client, and a pure verdict."""
