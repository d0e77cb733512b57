"""Prometheus metrics. One registry per app, so tests can build many apps in one process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.batcher import BatchReport

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

#: (model name, version, queue depth, queue capacity) of every served model.
QueueReading = tuple[str, str, int, int]


class _QueueCollector(Collector):
    """Reads queue depths when scraped, so nothing is updated per request."""

    def __init__(self, read: Callable[[], list[QueueReading]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "digits_queue_depth", "Requests waiting for a batch.", labels=["model", "version"]
        )
        capacity = GaugeMetricFamily(
            "digits_queue_capacity", "Requests that may wait.", labels=["model", "version"]
        )
        for name, version, queued, size in self._read():
            depth.add_metric([name, version], queued)
            capacity.add_metric([name, version], size)
        yield depth
        yield capacity


class ServiceMetrics:
    """The service's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "digits_requests",
            "HTTP requests answered, by route, model and status.",
            ["route", "model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "digits_request_latency_seconds",
            "Time from request received to response ready.",
            ["route", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "digits_queue_wait_seconds",
            "Time a request waited for its batch to start.",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "digits_inference_seconds",
            "Forward pass time per batch.",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "digits_batch_size",
            "Images per forward pass.",
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.dropped = Counter(
            "digits_dropped",
            "Requests dropped before inference (deadline passed, or client gone).",
            ["model", "version", "reason"],
            registry=self.registry,
        )

    def watch_queues(self, read: Callable[[], list[QueueReading]]) -> None:
        self.registry.register(_QueueCollector(read))

    def observe_batch(self, name: str, version: str, report: BatchReport) -> None:
        """Called by each batcher after a batch (on the event loop)."""
        if report.batch_size:
            self.batch_size.labels(name, version).observe(report.batch_size)
            self.inference.labels(name, version).observe(report.inference_s)
            wait = self.queue_wait.labels(name, version)
            for seconds in report.queue_wait_s:
                wait.observe(seconds)
        if report.dropped_expired:
            self.dropped.labels(name, version, "deadline").inc(report.dropped_expired)
        if report.dropped_cancelled:
            self.dropped.labels(name, version, "client_gone").inc(report.dropped_cancelled)

    def observe_request(self, route: str, model: str, status: int, seconds: float) -> None:
        self.requests.labels(route, model, str(status)).inc()
        self.latency.labels(route, model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
