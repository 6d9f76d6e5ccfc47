"""Prometheus metrics of one server: requests, errors, stage latencies, batch sizes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["ServerMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """The counters and histograms a server updates, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sparsepipe_requests",
            "Requests by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "sparsepipe_request_errors",
            "Failed requests by endpoint and error kind",
            ["endpoint", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sparsepipe_request_latency_seconds",
            "Request latency by stage (total, queue, pre, engine, post)",
            ["endpoint", "stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "sparsepipe_batch_size",
            "Items per pipeline call",
            ["endpoint"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)
