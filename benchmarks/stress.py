"""``make soak`` / ``make overload``: the service held at its sustainable load for a while, and
pushed to four times that load, as real processes driven by ``wrk``.

soak
    Warm up, then drive ``--seconds`` (60) at the sustainable concurrency (64 connections),
    sampling resident memory every few seconds. Promise: no answer but 200, and resident
    memory within 10 % of its post-warm-up size.
overload
    A small queue (``DIGITS_QUEUE_SIZE=64``). Three phases on one server: *sustainable* (64
    connections), *overload* (4 x 64 connections), *recovery* (64 again). Then a second
    server with a short deadline (``DIGITS_REQUEST_TIMEOUT_MS=20``) and the default queue,
    overloaded the same way. Promises: under overload only 200 and 503 (each 503 with
    ``Retry-After`` and code ``overloaded``), the p99 of accepted requests under a stated
    bound, memory bounded, full throughput again afterwards; with the deadline, old
    requests become 504 (``digits_dropped_total{reason="deadline"}`` counts them) and no
    request waits much past the deadline inside the service.

``wrk`` counts answers by status but keeps one latency histogram for all of them, and 503s
are faster than 200s, so in the overload and deadline phases 32 of the connections are
*probe* clients (threads beside wrk, closed-loop like wrk's connections) that time every
answer by status and read the 503s' headers and bodies.

The server runs on CPU 0 and the load on CPU 1, as in ``benchmarks.load``.

``python -m benchmarks.stress soak|overload [--seconds N] [--quick] [--model-dir models]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmarks.digit_image import BENCHMARK_PNG, CONTENT_TYPE, benchmark_png
from benchmarks.load import LENET5, LOAD_CPU, SERVER_CPU, service
from benchmarks.prometheus_text import mean_batch_size, sample_sum
from benchmarks.servers import RunningServer, ServerSpec, running
from benchmarks.wrk import LoadResult, WrkMissing, run_wrk, wrk_version

logger = logging.getLogger("benchmarks.stress")

MiB = 1024 * 1024
#: Most growth of resident memory the soak and the overload allow over the warm size.
MEMORY_GROWTH_LIMIT = 0.10
#: Share of the sustainable throughput the recovery phase must reach.
RECOVERY_SHARE = 0.90


@dataclass(frozen=True)
class StressPlan:
    """Durations and sizes of one stress run."""

    connections: int = 64
    """The sustainable load: the concurrency ``benchmarks.load`` shows answered without errors."""
    overload_factor: int = 4
    warmup_s: float = 10.0
    soak_s: float = 60.0
    sample_every_s: float = 5.0
    phase_s: float = 15.0
    """Each of sustainable, overload, recovery and deadline."""
    queue_size: int = 64
    max_batch_size: int | None = None  # the service's default (64)
    in_flight: int = 128
    """``DIGITS_MAX_IN_FLIGHT`` of the overload server (the default: queue + batch size)."""
    deadline_ms: float = 20.0
    deadline_queue_size: int = 1024
    probes: int = 32
    """Of the overload's connections, how many are probe clients (the rest are wrk's)."""
    pinned: bool = True

    @property
    def overload_connections(self) -> int:
        return self.connections * self.overload_factor


FULL = StressPlan()
QUICK = StressPlan(warmup_s=1.0, soak_s=5.0, sample_every_s=1.0, phase_s=2.0)


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


@dataclass(frozen=True)
class Verdict:
    promise: str
    measured: str
    met: bool


@dataclass
class StressRun:
    """Everything one ``soak`` or ``overload`` run measured, in order."""

    kind: str
    plan: StressPlan
    commands: list[str] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    warm_resident_bytes: dict[str, int] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)


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


# --- the server and the load ----------------------------------------------------------------


def stress_service(
    model_dir: Path,
    *,
    selftest: bool,
    queue_size: int | None = None,
    max_batch_size: int | None = None,
    request_timeout_ms: float | None = None,
    in_flight: int | None = None,
    name: str | None = None,
) -> ServerSpec:
    """The load benchmark's lenet5 service, logging only warnings, with stress settings."""
    spec = service(model_dir, LENET5, selftest=selftest, queue_size=queue_size)
    env = {**spec.env, "DIGITS_LOG_LEVEL": "WARNING"}
    if max_batch_size is not None:
        env["DIGITS_MAX_BATCH_SIZE"] = str(max_batch_size)
    if request_timeout_ms is not None:
        env["DIGITS_REQUEST_TIMEOUT_MS"] = f"{request_timeout_ms:g}"
    if in_flight is not None:
        env["DIGITS_MAX_IN_FLIGHT"] = str(in_flight)
    return replace(spec, env=env, name=name or spec.name)


class Probes:
    """Client threads that behave like wrk's connections (each sends its next request as soon
    as its answer arrives) and record every answer: status, time, Retry-After, error code."""

    def __init__(self, server: RunningServer, count: int, cpus: str | None):
        self._server = server
        self._count = count
        self._cpus = cpus
        self._stop = threading.Event()
        self._answers: list[ProbeAnswer] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Probes:
        body = benchmark_png()
        for index in range(self._count):
            thread = threading.Thread(
                target=self._probe, args=(body,), name=f"probe-{index}", daemon=True
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

    def _probe(self, body: bytes) -> None:
        if self._cpus is not None:  # pid 0: this thread only
            os.sched_setaffinity(0, {int(c) for c in self._cpus.split(",")})
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self._server.port, timeout=30)
            answer, keep = _one_request(connection, self._server.spec.predict_path, body)
            if not keep:
                connection.close()
                connection = None
            with self._lock:
                self._answers.append(answer)
        if connection is not None:
            connection.close()


def _one_request(
    connection: http.client.HTTPConnection, path: str, body: bytes
) -> tuple[ProbeAnswer, bool]:
    """POST ``body``; the answer and whether the connection may be used again."""
    started = time.perf_counter()
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": CONTENT_TYPE})
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
    """Runs phases against one server: wrk on the load CPU, probes and memory beside it."""

    def __init__(self, server: RunningServer, plan: StressPlan) -> None:
        self.server = server
        self.plan = plan
        self._load_cpus = LOAD_CPU if plan.pinned else None

    def warm_up(self, connections: int, seconds: float) -> LoadResult:
        return self._wrk(connections, seconds)

    def phase(self, name: str, connections: int, seconds: float, *, probes: int = 0) -> Phase:
        """``connections`` in all: ``probes`` probe clients and the rest wrk's."""
        before = scrape(self.server)
        with (
            Probes(self.server, probes, self._load_cpus) as probe,
            MemorySampler(self.server, self.plan.sample_every_s) as memory,
        ):
            load = self._wrk(connections - probes, seconds)
        phase = Phase(
            name, load, probes, probe.answers, memory.samples, before, scrape(self.server)
        )
        logger.info(
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
            body=BENCHMARK_PNG,
            content_type=CONTENT_TYPE,
            concurrency=connections,
            duration_s=seconds,
            cpus=self._load_cpus,
        )


def scrape(server: RunningServer) -> str:
    return server.get("/metrics").decode()


@contextmanager
def started(spec: ServerSpec, plan: StressPlan, run: StressRun, log_dir: Path) -> Iterator[Driver]:
    run.commands.append(describe_command(spec, plan.pinned))
    log_path = log_dir / f"{spec.name.replace(' ', '-')}.log"
    with running(spec, cpus=SERVER_CPU if plan.pinned else None, log_path=log_path) as server:
        yield Driver(server, plan)


def describe_command(spec: ServerSpec, pinned: bool) -> str:
    env = " ".join(f"{k}={v}" for k, v in spec.env.items() if k != "DIGITS_PORT")
    argv = " ".join(spec.argv).replace(sys.executable, "python")
    return f"{env} {'taskset -c ' + SERVER_CPU + ' ' if pinned else ''}{argv}"


# --- soak -----------------------------------------------------------------------------------


def soak(model_dir: Path, plan: StressPlan, log_dir: Path, *, selftest: bool = True) -> StressRun:
    """Warm up, then hold the sustainable load for ``plan.soak_s``, sampling memory."""
    run = StressRun("soak", plan)
    spec = stress_service(model_dir, selftest=selftest, name="service (lenet5)")
    with started(spec, plan, run, log_dir) as driver:
        driver.warm_up(plan.connections, plan.warmup_s)
        run.warm_resident_bytes["soak"] = driver.server.resident_bytes()
        run.phases.append(driver.phase("soak", plan.connections, plan.soak_s))
    run.verdicts = soak_verdicts(run)
    return run


def soak_verdicts(run: StressRun) -> list[Verdict]:
    phase = run.phases[0]
    warm = run.warm_resident_bytes["soak"]
    end = phase.memory[-1].resident_bytes if phase.memory else warm
    growth = max(end, phase.max_resident_bytes) / warm - 1.0
    return [
        Verdict(
            "no answer but 200 (and no socket error or timeout)",
            f"{phase.load.requests:,} requests, not 200: {phase.load.describe_errors()}",
            phase.load.errors == 0 and phase.load.requests > 0,
        ),
        Verdict(
            f"resident memory flat: max and end within {MEMORY_GROWTH_LIMIT:.0%} of warm",
            f"{warm / MiB:.1f} MiB warm, {end / MiB:.1f} MiB end, "
            f"{phase.max_resident_bytes / MiB:.1f} MiB max ({growth:+.1%})",
            growth <= MEMORY_GROWTH_LIMIT,
        ),
    ]


# --- overload -------------------------------------------------------------------------------


def overload(
    model_dir: Path,
    plan: StressPlan,
    log_dir: Path,
    *,
    selftest: bool = True,
    with_deadline: bool = True,
) -> StressRun:
    """Sustainable -> overload -> recovery on a small queue; then a short-deadline server."""
    run = StressRun("overload", plan)
    small_queue = stress_service(
        model_dir,
        selftest=selftest,
        queue_size=plan.queue_size,
        max_batch_size=plan.max_batch_size,
        in_flight=plan.in_flight,
        name=f"service (lenet5, queue {plan.queue_size}, in flight {plan.in_flight})",
    )
    with started(small_queue, plan, run, log_dir) as driver:
        driver.warm_up(plan.connections, plan.warmup_s)
        run.warm_resident_bytes["queue"] = driver.server.resident_bytes()
        run.phases.append(driver.phase("sustainable", plan.connections, plan.phase_s))
        run.phases.append(
            driver.phase("overload", plan.overload_connections, plan.phase_s, probes=plan.probes)
        )
        run.phases.append(driver.phase("recovery", plan.connections, plan.phase_s))
    if with_deadline:
        short_deadline = stress_service(
            model_dir,
            selftest=selftest,
            queue_size=plan.deadline_queue_size,
            max_batch_size=plan.max_batch_size,
            request_timeout_ms=plan.deadline_ms,
            name=f"service (lenet5, deadline {plan.deadline_ms:g} ms)",
        )
        with started(short_deadline, plan, run, log_dir) as driver:
            driver.warm_up(plan.connections, plan.warmup_s)
            run.phases.append(
                driver.phase(
                    "deadline", plan.overload_connections, plan.phase_s, probes=plan.probes
                )
            )
    run.verdicts = overload_verdicts(run)
    return run


def accepted_p99_bound_ms(sustainable: Phase, over: Phase, plan: StressPlan) -> float:
    """What the p99 of accepted requests may be under overload.

    The admission limit lets at most ``in_flight`` requests in at once, so an accepted
    request has at most that many ahead of it, served at the rate the service keeps while
    it also refuses the excess, on top of what a request costs at the sustainable load:
    bound = 2 x p99(sustainable) + 1000 x in_flight / accepted rate. It holds whatever the
    offered load; without admission control the wait grows with it instead (Little's law:
    4x the connections, about 4x the latency). The accepted rate is measured, not assumed:
    each refusal costs the event loop most of what an HTTP exchange costs, so a flood of
    clients that retry at once (wrk ignores Retry-After) lowers it.
    """
    p99 = sustainable.load.latency_ms["p99"]
    rate = over.accepted_per_s
    return 2.0 * p99 + (1000.0 * plan.in_flight / rate if rate else math.inf)


def overload_verdicts(run: StressRun) -> list[Verdict]:
    phases = {phase.name: phase for phase in run.phases}
    sustainable, over, recovery = phases["sustainable"], phases["overload"], phases["recovery"]
    verdicts = [
        _only_statuses(over, {200, 503}),
        _rejections_explained(over, 503, "overloaded", need_retry_after=True),
        _accepted_p99(sustainable, over, run.plan),
        _memory_bounded(run.warm_resident_bytes["queue"], [sustainable, over, recovery]),
        _recovered(sustainable, recovery),
    ]
    if "deadline" in phases:
        verdicts += _deadline_verdicts(phases["deadline"], run.plan)
    return verdicts


def _only_statuses(phase: Phase, allowed: set[int]) -> Verdict:
    others = {s: n for s, n in phase.load.statuses.items() if s not in allowed}
    sockets = sum(phase.load.socket_errors.values())
    probe_others = sum(1 for p in phase.probes if p.status not in allowed)
    counts = ", ".join(f"{s}: {n:,}" for s, n in sorted(phase.load.statuses.items()))
    return Verdict(
        f"{phase.name}: answers only {' or '.join(map(str, sorted(allowed)))}",
        f"wrk {counts}; socket errors {sockets}; probes other {probe_others}",
        not others and sockets == 0 and probe_others == 0 and phase.load.requests > 0,
    )


def _rejections_explained(
    phase: Phase, status: int, code: str, *, need_retry_after: bool
) -> Verdict:
    rejected = [p for p in phase.probes if p.status == status]
    bad = [
        p
        for p in rejected
        if p.code != code or (need_retry_after and not (p.retry_after or "").isdigit())
    ]
    header = " and Retry-After" if need_retry_after else ""
    return Verdict(
        f"{phase.name}: every {status} has code {code!r}{header} (probes' sample)",
        f"{len(rejected)} sampled, {len(bad)} without"
        + (
            f"; Retry-After seen: {sorted({p.retry_after or '(none)' for p in rejected})}"
            if rejected
            else ""
        ),
        not bad,
    )


def _accepted_p99(sustainable: Phase, over: Phase, plan: StressPlan) -> Verdict:
    bound = accepted_p99_bound_ms(sustainable, over, plan)
    p99 = over.probe_latency_ms(200, 99)
    accepted = sum(1 for p in over.probes if p.status == 200)
    return Verdict(
        "overload: p99 of accepted (200) requests <= 2 x p99(sustainable) "
        "+ in-flight limit / accepted rate",
        f"{_ms(p99)} ms over {accepted} probe answers; bound {bound:.0f} ms "
        f"({over.accepted_per_s:,.0f} accepted/s, "
        f"{over.accepted_per_s / sustainable.load.requests_per_s:.0%} of sustainable; "
        f"wrk p99 of all answers {over.load.latency_ms['p99']:.0f} ms)",
        p99 is not None and p99 <= bound,
    )


def _memory_bounded(warm: int, phases: Sequence[Phase]) -> Verdict:
    peak = max(phase.max_resident_bytes for phase in phases)
    growth = peak / warm - 1.0
    return Verdict(
        f"memory bounded: max within {MEMORY_GROWTH_LIMIT:.0%} of warm",
        f"{warm / MiB:.1f} MiB warm, {peak / MiB:.1f} MiB max ({growth:+.1%})",
        growth <= MEMORY_GROWTH_LIMIT,
    )


def _recovered(sustainable: Phase, recovery: Phase) -> Verdict:
    share = recovery.load.requests_per_s / sustainable.load.requests_per_s
    return Verdict(
        f"recovery: >= {RECOVERY_SHARE:.0%} of the sustainable throughput, no errors",
        f"{recovery.load.requests_per_s:,.0f} vs {sustainable.load.requests_per_s:,.0f} req/s "
        f"({share:.0%}); not 200: {recovery.load.describe_errors()}",
        share >= RECOVERY_SHARE and recovery.load.errors == 0,
    )


def _deadline_verdicts(phase: Phase, plan: StressPlan) -> list[Verdict]:
    dropped = phase.counter_delta("digits_dropped_total", reason="deadline")
    batch_ms = phase.mean_batch_ms or 0.0
    wait_limit_s = (plan.deadline_ms + batch_ms) / 1000.0
    queue_share = histogram_share_within(
        phase.scrape_before, phase.scrape_after, "digits_queue_wait_seconds", wait_limit_s
    )
    late = [p for p in phase.probes if p.status == 504]
    return [
        _only_statuses(phase, {200, 503, 504}),
        _rejections_explained(phase, 504, "deadline_exceeded", need_retry_after=False),
        Verdict(
            "deadline: old requests dropped before the model "
            '(digits_dropped_total{reason="deadline"})',
            f"{dropped:,.0f} dropped; wrk 504s: {phase.load.statuses.get(504, 0):,}",
            dropped > 0,
        ),
        Verdict(
            "deadline: no batched request waited in the queue past deadline + one batch",
            f"{_share(queue_share)} of queue waits <= the bucket at "
            f"{plan.deadline_ms:g} + {batch_ms:.1f} ms (client-side p99 of 504s: "
            f"{_ms(percentile_of([p.latency_ms for p in late], 99))} ms)",
            queue_share is not None and queue_share >= 1.0,
        ),
    ]


# --- Markdown -------------------------------------------------------------------------------


def render(run: StressRun, environment: Mapping[str, str]) -> str:
    title = "Soak" if run.kind == "soak" else "Overload"
    parts = [
        f"## {title}",
        "\n".join(f"- {key}: {value}" for key, value in environment.items()),
        "Servers:\n\n" + "\n".join(f"- `{command}`" for command in run.commands),
        _phase_table(run.phases),
    ]
    if any(phase.probes for phase in run.phases):
        parts.append(
            "Probe clients (closed loop like wrk's connections, timed per answer):\n\n"
            + _probe_table(run.phases)
        )
    if run.kind == "soak" and run.phases:
        parts.append("Resident memory during the soak:\n\n" + _memory_table(run))
    parts.append(_verdict_table(run.verdicts))
    return "\n\n".join(parts) + "\n"


def _phase_table(phases: Sequence[Phase]) -> str:
    lines = [
        "| phase | conn. | s | requests | req/s | p50 ms | p99 ms | statuses | socket errors "
        "| mean batch | batch ms | RSS max MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for phase in phases:
        load = phase.load
        statuses = ", ".join(f"{s}: {n:,}" for s, n in sorted(load.statuses.items()))
        sockets = ", ".join(f"{k}: {n}" for k, n in load.socket_errors.items() if n) or "0"
        probes = f" + {phase.probe_clients}" if phase.probe_clients else ""
        lines.append(
            f"| {phase.name} | {load.concurrency}{probes} | {load.duration_s:.1f} "
            f"| {load.requests:,} "
            f"| {load.requests_per_s:,.0f} | {load.latency_ms['p50']:.1f} "
            f"| {load.latency_ms['p99']:.1f} | {statuses} | {sockets} "
            f"| {_number(phase.mean_batch)} | {_number(phase.mean_batch_ms)} "
            f"| {phase.max_resident_bytes / MiB:.1f} |"
        )
    return "\n".join(lines)


def _probe_table(phases: Sequence[Phase]) -> str:
    lines = [
        "| phase | status | answers | p50 ms | p99 ms | max ms | codes | Retry-After |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for phase in phases:
        for status in sorted({p.status for p in phase.probes}):
            answers = [p for p in phase.probes if p.status == status]
            latencies = [p.latency_ms for p in answers]
            codes = ", ".join(sorted({p.code for p in answers if p.code})) or "-"
            retry = ", ".join(sorted({p.retry_after for p in answers if p.retry_after})) or "-"
            lines.append(
                f"| {phase.name} | {status or 'no answer'} | {len(answers)} "
                f"| {_ms(percentile_of(latencies, 50))} | {_ms(percentile_of(latencies, 99))} "
                f"| {max(latencies):.1f} | {codes} | {retry} |"
            )
    return "\n".join(lines)


def _memory_table(run: StressRun) -> str:
    warm = run.warm_resident_bytes.get("soak", 0)
    lines = ["| s after warm-up | RSS MiB | vs warm |", "|---:|---:|---:|"]
    lines.append(f"| 0 | {warm / MiB:.1f} | - |")
    for sample in run.phases[0].memory:
        growth = sample.resident_bytes / warm - 1.0 if warm else 0.0
        lines.append(f"| {sample.at_s:.0f} | {sample.resident_bytes / MiB:.1f} | {growth:+.1%} |")
    return "\n".join(lines)


def _verdict_table(verdicts: Sequence[Verdict]) -> str:
    lines = ["| promise | measured | |", "|---|---|---|"]
    lines += [f"| {v.promise} | {v.measured} | {'PASS' if v.met else 'FAIL'} |" for v in verdicts]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


# --- main -----------------------------------------------------------------------------------


def describe_environment(plan: StressPlan, kind: str) -> dict[str, str]:
    cpu = next(
        (
            line.partition(":")[2].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    environment = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "wrk": wrk_version(),
        "load average before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "pinning": f"server on CPU {SERVER_CPU}, wrk and probes on CPU {LOAD_CPU}"
        if plan.pinned
        else "none",
    }
    if kind == "soak":
        environment["plan"] = (
            f"{plan.warmup_s:g} s warm-up, then {plan.soak_s:g} s at {plan.connections} "
            f"connections, resident memory every {plan.sample_every_s:g} s"
        )
    else:
        environment["plan"] = (
            f"{plan.warmup_s:g} s warm-up, then {plan.phase_s:g} s each: sustainable "
            f"({plan.connections} connections), overload ({plan.overload_connections}), "
            f"recovery ({plan.connections}); deadline server: {plan.phase_s:g} s at "
            f"{plan.overload_connections}; of the overload's connections {plan.probes} are "
            "probe clients"
        )
    return environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stress",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=["soak", "overload"])
    parser.add_argument("--quick", action="store_true", help="short phases (about 20 s)")
    parser.add_argument(
        "--seconds", type=float, help="soak: seconds under load; overload: seconds per phase"
    )
    parser.add_argument("--connections", type=int, help="the sustainable concurrency (64)")
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--logs", type=Path, help="server logs (default: a temporary folder)")
    parser.add_argument("--no-selftest", action="store_true", help="DIGITS_SELFTEST=false")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    plan = QUICK if args.quick else FULL
    if args.seconds is not None:
        plan = replace(plan, **{"soak_s" if args.kind == "soak" else "phase_s": args.seconds})
    if args.connections is not None:
        plan = replace(plan, connections=args.connections)
    if (os.cpu_count() or 1) < 2:
        plan = replace(plan, pinned=False)
    try:
        environment = describe_environment(plan, args.kind)
    except WrkMissing as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    if not any((args.model_dir / LENET5).glob("*/metadata.json")):
        sys.stderr.write(f"no package {LENET5!r} in {args.model_dir}: train it (make train)\n")
        return 2
    model_dir = args.model_dir.resolve()
    measure: Callable[..., StressRun] = soak if args.kind == "soak" else overload
    with tempfile.TemporaryDirectory(prefix="digits-stress-") as scratch:
        run = measure(model_dir, plan, args.logs or Path(scratch), selftest=not args.no_selftest)
    environment["load average after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    write_stdout(render(run, environment))
    return 0 if all(v.met for v in run.verdicts) else 1


def write_stdout(text: str) -> None:
    """The CLI's actual output."""
    sys.stdout.write(text)


if __name__ == "__main__":
    sys.exit(main())
