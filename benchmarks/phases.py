"""One phase of a stress run: ``wrk`` on the load CPU, probe clients beside it that time every
answer by status (wrk keeps one latency histogram for all answers, and 503s are faster than
200s), and the server's resident memory sampled; and readings of the Prometheus scrapes
taken before and after. ``benchmarks.stress`` composes phases into runs."""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import cycle

from benchmarks.prometheus_text import mean_batch_size, sample_sum
from benchmarks.servers import RunningServer
from benchmarks.wrk import Body, LoadResult, run_wrk

_logger = logging.getLogger("benchmarks.stress")
MiB = 1024 * 1024

# --- what one phase measured ----------------------------------------------------------------


@dataclass(frozen=True)
class ProbeAnswer:
    """One request of a probe client: its status (0: no answer), time and 503/504 details."""

    status: int
    latency_ms: float
    retry_after: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class MemorySample:
    at_s: float
    resident_bytes: int


@dataclass(frozen=True)
class Phase:
    """One wrk run with the probes and the memory sampler running beside it."""

    name: str
    load: LoadResult
    """wrk's part of the load (``connections - probe_clients`` connections)."""
    probe_clients: int
    probes: tuple[ProbeAnswer, ...]
    memory: tuple[MemorySample, ...]
    scrape_before: str
    scrape_after: str

    def probe_latency_ms(self, status: int, percentile: float) -> float | None:
        """The probes' latency percentile for answers with ``status``; None without any."""
        return percentile_of([p.latency_ms for p in self.probes if p.status == status], percentile)

    @property
    def accepted_per_s(self) -> float:
        """200s a second, wrk's and the probes' together."""
        seconds = self.load.duration_s
        probed = sum(1 for p in self.probes if p.status == 200)
        return (self.load.statuses.get(200, 0) + probed) / seconds if seconds else 0.0

    def counter_delta(self, name: str, **labels: str) -> float:
        return labelled_sum(self.scrape_after, name, labels) - labelled_sum(
            self.scrape_before, name, labels
        )

    @property
    def mean_batch(self) -> float | None:
        return mean_batch_size(self.scrape_before, self.scrape_after)

    @property
    def mean_batch_ms(self) -> float | None:
        """Mean time of one forward pass (the batcher's inference thread) in this phase."""
        count = self.counter_delta("digits_inference_seconds_count")
        seconds = self.counter_delta("digits_inference_seconds_sum")
        return 1000.0 * seconds / count if count else None

    @property
    def max_resident_bytes(self) -> int:
        return max((s.resident_bytes for s in self.memory), default=0)


# --- helpers on numbers and scrapes ---------------------------------------------------------


def percentile_of(values: Sequence[float], percentile: float) -> float | None:
    """Nearest-rank percentile (``99`` for p99); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100.0 * len(ordered)))
    return ordered[rank - 1]


def labelled_sum(exposition: str, name: str, labels: Mapping[str, str]) -> float:
    """Sum of the samples of ``name`` whose labels include every pair of ``labels``."""
    if not labels:
        return sample_sum(exposition, name)
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    total = 0.0
    for line in exposition.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text = line[len(name) + 1 : line.rindex("}")]
        if all(pair in label_text.split(",") for pair in wanted):
            total += float(line[line.rindex("}") + 1 :].split()[0])
    return total


def histogram_share_within(before: str, after: str, name: str, upper_s: float) -> float | None:
    """Share of the observations of histogram ``name`` between two scrapes that were at most
    ``upper_s`` (the bucket bound ``le`` at or just above it); None without observations."""
    count = sample_sum(after, name + "_count") - sample_sum(before, name + "_count")
    if count <= 0:
        return None
    bounds = sorted(
        {
            float(line.split('le="')[1].split('"')[0])
            for line in after.splitlines()
            if line.startswith(name + "_bucket{") and 'le="+Inf"' not in line
        }
    )
    bound = next((b for b in bounds if b >= upper_s), None)
    if bound is None:
        return 1.0
    le = {"le": _prometheus_float(bound)}
    within = labelled_sum(after, name + "_bucket", le) - labelled_sum(before, name + "_bucket", le)
    return within / count


def _prometheus_float(value: float) -> str:
    return repr(float(value))  # prometheus_client writes bucket bounds with repr: 0.05, 1.0


class Probes:
    """Client threads that behave like wrk's connections (each sends its next request as soon
    as its answer arrives) and record every answer: status, time, Retry-After, error code."""

    def __init__(self, server: RunningServer, count: int, cpus: str | None, bodies: Sequence[Body]):
        self._server = server
        self._count = count
        # Read once; each probe starts at its own place in the rotation.
        self._bodies = [(path.read_bytes(), media_type) for path, media_type in bodies]
        self._cpus = cpus
        self._stop = threading.Event()
        self._answers: list[ProbeAnswer] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Probes:
        for index in range(self._count):
            start = index * len(self._bodies) // max(1, self._count)
            mine = self._bodies[start:] + self._bodies[:start]
            thread = threading.Thread(
                target=self._probe, args=(mine,), name=f"probe-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    @property
    def answers(self) -> tuple[ProbeAnswer, ...]:
        with self._lock:
            return tuple(self._answers)

    def _probe(self, bodies: list[tuple[bytes, str]]) -> None:
        if self._cpus is not None:  # pid 0: this thread only
            os.sched_setaffinity(0, {int(c) for c in self._cpus.split(",")})
        connection: http.client.HTTPConnection | None = None
        rotation = cycle(bodies)
        while not self._stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self._server.port, timeout=30)
            body, media_type = next(rotation)
            path = self._server.spec.predict_path
            answer, keep = _one_request(connection, path, body, media_type)
            if not keep:
                connection.close()
                connection = None
            with self._lock:
                self._answers.append(answer)
        if connection is not None:
            connection.close()


def _one_request(
    connection: http.client.HTTPConnection, path: str, body: bytes, media_type: str
) -> tuple[ProbeAnswer, bool]:
    """POST ``body``; the answer and whether the connection may be used again."""
    started = time.perf_counter()
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": media_type})
        reply = connection.getresponse()
        payload = reply.read()
    except (OSError, http.client.HTTPException):
        return ProbeAnswer(0, 1000.0 * (time.perf_counter() - started)), False
    latency_ms = 1000.0 * (time.perf_counter() - started)
    code = None
    if reply.status != 200:
        try:
            code = str(json.loads(payload)["error"]["code"])
        except (ValueError, KeyError, TypeError):
            code = "(not the service's error JSON)"
    answer = ProbeAnswer(reply.status, latency_ms, reply.getheader("Retry-After"), code)
    return answer, not reply.will_close


class MemorySampler:
    """Samples the server's resident memory every ``every_s`` seconds in a thread."""

    def __init__(self, server: RunningServer, every_s: float) -> None:
        self._server = server
        self._every_s = every_s
        self._stop = threading.Event()
        self._samples: list[MemorySample] = []
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._started = 0.0

    def __enter__(self) -> MemorySampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        self._record()  # one last sample at the end of the phase

    @property
    def samples(self) -> tuple[MemorySample, ...]:
        return tuple(self._samples)

    def _sample(self) -> None:
        while not self._stop.wait(self._every_s):
            self._record()

    def _record(self) -> None:
        at_s = time.monotonic() - self._started
        self._samples.append(MemorySample(at_s, self._server.resident_bytes()))


class Driver:
    """Runs phases against one server: wrk on ``load_cpus``, probes and memory beside it, all
    posting ``bodies`` in rotation."""

    def __init__(
        self,
        server: RunningServer,
        *,
        bodies: Sequence[Body],
        load_cpus: str | None,
        sample_every_s: float,
    ) -> None:
        self.server = server
        self.bodies = tuple(bodies)
        self._load_cpus = load_cpus
        self._sample_every_s = sample_every_s

    def warm_up(self, connections: int, seconds: float) -> LoadResult:
        return self._wrk(connections, seconds)

    def phase(self, name: str, connections: int, seconds: float, *, probes: int = 0) -> Phase:
        """``connections`` in all: ``probes`` probe clients and the rest wrk's."""
        before = scrape(self.server)
        with (
            Probes(self.server, probes, self._load_cpus, self.bodies) as probe,
            MemorySampler(self.server, self._sample_every_s) as memory,
        ):
            load = self._wrk(connections - probes, seconds)
        phase = Phase(
            name, load, probes, probe.answers, memory.samples, before, scrape(self.server)
        )
        _logger.info(
            "%s: c=%d %.0f req/s, p99 %.1f ms, not 200: %s, RSS max %.1f MiB",
            name,
            connections,
            load.requests_per_s,
            load.latency_ms["p99"],
            load.describe_errors(),
            phase.max_resident_bytes / MiB,
        )
        return phase

    def _wrk(self, connections: int, seconds: float) -> LoadResult:
        return run_wrk(
            self.server.predict_url,
            body=self.bodies,
            concurrency=connections,
            duration_s=seconds,
            cpus=self._load_cpus,
        )


def scrape(server: RunningServer) -> str:
    return server.get("/metrics").decode()
