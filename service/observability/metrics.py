"""Prometheus metrics. One registry per app, so tests can build many apps in one process.

Every metric about a model labels it ``model`` (its name) and ``version``; a request that
named no model served (refused before one was chosen, or ``model=all``) has both empty, or
``model="all"``. ``route`` is the route's path template, also for requests shed before
routing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

#: (model name, version, queue depth, queue capacity) of every served model.
QueueReading = tuple[str, str, int, int]


class BatchFacts(Protocol):
    """What a batcher reports after each batch (``service.inference.batcher.BatchReport``)."""

    @property
    def batch_size(self) -> int: ...
    @property
    def queue_wait_s(self) -> tuple[float, ...]: ...
    @property
    def inference_s(self) -> float: ...
    @property
    def dropped_expired(self) -> int: ...
    @property
    def dropped_cancelled(self) -> int: ...


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


#: (the admission's limit on requests in progress, requests in progress, body bytes reserved).
AdmissionReading = tuple[float, int, int]


class _AdmissionCollector(Collector):
    def __init__(self, read: Callable[[], AdmissionReading]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        limit, in_flight, reserved = self._read()
        yield GaugeMetricFamily(
            "digits_admission_limit",
            "Requests the admission lets be in progress now (adapts to the latency target).",
            value=limit,
        )
        yield GaugeMetricFamily(
            "digits_in_flight", "Admitted requests in progress.", value=in_flight
        )
        yield GaugeMetricFamily(
            "digits_body_bytes_reserved",
            "Memory reserved for the bodies of admitted requests.",
            value=reserved,
        )


class ServiceMetrics:
    """The service's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "digits_requests",
            "HTTP requests answered, by route, model, version and status.",
            ["route", "model", "version", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "digits_request_latency_seconds",
            "Time from request received to response ready.",
            ["route", "model", "version"],
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

        #: Children of ``requests`` and ``latency`` by their labels: looked up once each.
        self._request_children: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}
        self.worker_failures = Counter(
            "digits_worker_failures",
            "Batching workers that died, by whether they were restarted.",
            ["model", "version", "restarted"],
            registry=self.registry,
        )

    def watch_queues(self, read: Callable[[], list[QueueReading]]) -> None:
        self.registry.register(_QueueCollector(read))

    def watch_admission(self, read: Callable[[], AdmissionReading]) -> None:
        self.registry.register(_AdmissionCollector(read))

    def observe_batch(self, name: str, version: str, report: BatchFacts) -> None:
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

    def observe_request(
        self, route: str, model: str, version: str, status: int, seconds: float
    ) -> None:
        key = (route, model, version, status)
        children = self._request_children.get(key)
        if children is None:  # prometheus_client's labels() checks and locks: once a key
            children = (
                self.requests.labels(route, model, version, str(status)),
                self.latency.labels(route, model, version),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_worker_failure(self, name: str, version: str, restarted: bool) -> None:
        self.worker_failures.labels(name, version, "true" if restarted else "false").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
