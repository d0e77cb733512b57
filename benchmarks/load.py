"""``make bench``: the service under HTTP load beside three reference servers, one Markdown report.

Every server runs as a real process, as ``make serve`` runs the service, and is driven over
HTTP by ``wrk`` from another process: pinned (server on CPU 0, wrk on CPU 1) and unpinned.
At each concurrency: a warm-up run, then three measured runs (one with ``--quick``), of which
the median by requests a second is reported. The references, on the same model and image:

- ceiling   FastAPI + uvicorn answering a constant after reading the body (the HTTP limit);
- naive     decode + forward per request inside the handler (no batching);
- litserve  LitServe with its dynamic batching (max batch 64, 5 ms timeout).

``python -m benchmarks.load [--quick] [--model-dir models] [--output BENCHMARKS-run.md]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from benchmarks.digit_image import BENCHMARK_PNG, CONTENT_TYPE
from benchmarks.inprocess import InProcessResult
from benchmarks.measurements import CpuUse, LoadPoint, MemoryCheck, Run
from benchmarks.prometheus_text import mean_batch_size, requests_answered
from benchmarks.report import render
from benchmarks.servers import RunningServer, ServerSpec, ThreadCpu, python_module, running
from benchmarks.wrk import LUA_SCRIPT, LoadResult, WrkMissing, run_wrk, wrk_version

logger = logging.getLogger("benchmarks.load")

SERVER_CPU = "0"
LOAD_CPU = "1"
LENET5 = "lenet5"
DEFAULT = "default"
#: A queue (the smallest allowed: one full batch) well under the load's concurrency, to show
#: what happens beyond the queue bound.
OVERLOAD_QUEUE = 64


@dataclass(frozen=True)
class Plan:
    concurrencies: tuple[int, ...]
    duration_s: float
    warmup_s: float
    rounds: int
    inprocess_seconds: float
    memory_requests: int


FULL = Plan(
    concurrencies=(1, 16, 64, 256),
    duration_s=8.0,
    warmup_s=2.0,
    rounds=3,
    inprocess_seconds=1.5,
    memory_requests=100_000,
)
QUICK = Plan(
    concurrencies=(1, 64, 256),
    duration_s=2.0,
    warmup_s=1.0,
    rounds=1,
    inprocess_seconds=0.3,
    memory_requests=10_000,
)


# --- the servers ----------------------------------------------------------------------------


def service(
    model_dir: Path, model: str, *, selftest: bool, queue_size: int | None = None
) -> ServerSpec:
    """``python -m service`` serving ``model_dir`` with ``model`` as the default model."""
    env = {
        "DIGITS_HOST": "127.0.0.1",
        "DIGITS_PORT": "{port}",
        "DIGITS_MODEL_DIR": str(model_dir),
        "DIGITS_DEFAULT_MODEL": model,
    }
    if not selftest:
        env["DIGITS_SELFTEST"] = "false"
    name = f"service ({model})"
    if queue_size is not None:
        env["DIGITS_QUEUE_SIZE"] = str(queue_size)
        name = f"service ({model}, queue {queue_size})"
    return ServerSpec(
        name=name,
        argv=python_module("service"),
        env=env,
        ready_path="/readyz",
        metrics_path="/metrics",
    )


def ceiling() -> ServerSpec:
    return ServerSpec("ceiling", python_module("benchmarks.reference.ceiling", "--port", "{port}"))


def naive(model_dir: Path, model: str) -> ServerSpec:
    argv = python_module(
        "benchmarks.reference.naive", "--model-dir", str(model_dir), "--model", model
    )
    return ServerSpec(f"naive ({model})", (*argv, "--port", "{port}"))


def litserve(model_dir: Path, model: str) -> ServerSpec:
    argv = python_module(
        "benchmarks.reference.litserve_app", "--model-dir", str(model_dir), "--model", model
    )
    return ServerSpec(f"litserve ({model})", (*argv, "--port", "{port}"), ready_path="/health")


# --- measuring ------------------------------------------------------------------------------


class Bench:
    """Runs servers one after another and collects what they measure into a :class:`Run`."""

    def __init__(self, plan: Plan, run: Run, log_dir: Path) -> None:
        self.plan = plan
        self.run = run
        self.log_dir = log_dir

    def sweep(
        self,
        spec: ServerSpec,
        *,
        pinned: bool,
        concurrencies: Sequence[int] | None = None,
        memory: bool = False,
    ) -> None:
        """Start ``spec``, measure it at each concurrency, stop it."""
        where = "pinned" if pinned else "unpinned"
        self._note_command(spec, pinned)
        log_path = self.log_dir / f"{_slug(spec.name)}-{where}.log"
        with running(spec, cpus=SERVER_CPU if pinned else None, log_path=log_path) as server:
            levels = concurrencies or self.plan.concurrencies
            warm: tuple[int, int] | None = None
            if memory:  # warmed at the highest concurrency: every buffer has grown once
                self._load(server, max(levels), self.plan.warmup_s, pinned)
                warm = (server.resident_bytes(), requests_answered(_metrics(server)))
            for concurrency in levels:
                self._load(server, concurrency, self.plan.warmup_s, pinned)
                point = self._measure(server, concurrency, pinned)
                self.run.points.append(point)
                logger.info(
                    "%s %s c=%d: %.0f req/s, p99 %.1f ms, errors %s, mean batch %s",
                    spec.name,
                    where,
                    concurrency,
                    point.result.requests_per_s,
                    point.result.latency_ms["p99"],
                    point.result.describe_errors(),
                    f"{point.mean_batch:.1f}" if point.mean_batch else "-",
                )
            if warm is not None:
                self.run.memory.append(self._memory(server, *warm, pinned=pinned))

    def _measure(self, server: RunningServer, concurrency: int, pinned: bool) -> LoadPoint:
        scrape_before = _metrics(server)
        cpu_before, started = server.thread_cpu(), time.monotonic()
        rounds = [
            self._load(server, concurrency, self.plan.duration_s, pinned)
            for _ in range(self.plan.rounds)
        ]
        cpu = _cpu_use(cpu_before, server.thread_cpu(), time.monotonic() - started)
        scrape_after = _metrics(server)
        rates = [r.requests_per_s for r in rounds]
        median = sorted(rounds, key=lambda r: r.requests_per_s)[len(rounds) // 2]
        return LoadPoint(
            server=server.spec.name,
            pinned=pinned,
            result=median,
            round_rates=tuple(rates),
            mean_batch=mean_batch_size(scrape_before, scrape_after) if scrape_before else None,
            cpu=cpu,
        )

    def _memory(
        self, server: RunningServer, warm_bytes: int, warm_count: int, *, pinned: bool
    ) -> MemoryCheck:
        """Load the server until ``memory_requests`` were answered since warm-up; compare RSS."""
        wanted = self.plan.memory_requests
        while (done := requests_answered(_metrics(server)) - warm_count) < wanted:
            self._load(server, 64, max(1.0, min(30.0, (wanted - done) / 2000)), pinned)
        return MemoryCheck(server.spec.name, warm_bytes, server.resident_bytes(), done)

    def _load(
        self, server: RunningServer, concurrency: int, seconds: float, pinned: bool
    ) -> LoadResult:
        return run_wrk(
            server.predict_url,
            body=BENCHMARK_PNG,
            content_type=CONTENT_TYPE,
            concurrency=concurrency,
            duration_s=seconds,
            cpus=LOAD_CPU if pinned else None,
        )

    def _note_command(self, spec: ServerSpec, pinned: bool) -> None:
        env = " ".join(f"{k}={v}" for k, v in spec.env.items())
        argv = " ".join(spec.argv).replace(sys.executable, "python")
        taskset = f"taskset -c {SERVER_CPU} " if pinned else ""
        command = f"{env} {taskset}{argv}".strip()
        if command not in self.run.commands:
            self.run.commands.append(command)


def _metrics(server: RunningServer) -> str:
    if server.spec.metrics_path is None:
        return ""
    return server.get(server.spec.metrics_path).decode()


def _cpu_use(before: list[ThreadCpu], after: list[ThreadCpu], seconds: float) -> CpuUse:
    start = {t.tid: t.seconds for t in before}
    loop = sum(t.seconds - start.get(t.tid, 0.0) for t in after if t.main)
    others = sum(t.seconds - start.get(t.tid, 0.0) for t in after if not t.main)
    return CpuUse(event_loop=loop / seconds, other_threads=others / seconds)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def measure_inprocess(model_dir: Path, plan: Plan) -> list[InProcessResult]:
    """``benchmarks.inprocess`` in its own process, pinned to the server's CPU."""
    argv = [
        *python_module("benchmarks.inprocess", "--model-dir", str(model_dir)),
        *("--model", LENET5, "--model", DEFAULT),
        *("--seconds", str(plan.inprocess_seconds), "--cpu", SERVER_CPU, "--json"),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return [InProcessResult(**json.loads(line)) for line in done.stdout.splitlines()]


# --- the environment ------------------------------------------------------------------------


def describe_environment(plan: Plan) -> dict[str, str]:
    versions = {
        name: metadata.version(name)
        for name in ("torch", "fastapi", "uvicorn", "starlette", "pydantic", "uvloop", "httptools")
    }
    try:
        versions["litserve"] = metadata.version("litserve")
    except metadata.PackageNotFoundError:
        versions["litserve"] = "not installed"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": _memory_total(),
        "os": platform.platform(),
        "python": platform.python_version(),
        **versions,
        "wrk": wrk_version(),
        "load average before": _load_average(),
        "plan": (
            f"{plan.rounds} round(s) of {plan.duration_s:g} s per point after a "
            f"{plan.warmup_s:g} s warm-up; concurrency {', '.join(map(str, plan.concurrencies))}"
        ),
        "wrk command": (
            f"taskset -c {LOAD_CPU} wrk --threads 1 --connections C --duration "
            f"{plan.duration_s:g}s --timeout 10s --script {_relative(LUA_SCRIPT)} "
            f"http://127.0.0.1:PORT/predict -- {_relative(BENCHMARK_PNG)} {CONTENT_TYPE}"
        ),
    }


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _memory_total() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short runs (about 2 minutes)")
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--output", type=Path, help="also write the Markdown report here")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument("--logs", type=Path, help="server logs (default: a temporary folder)")
    parser.add_argument("--no-litserve", action="store_true", help="skip the LitServe reference")
    parser.add_argument(
        "--no-selftest",
        action="store_true",
        help="DIGITS_SELFTEST=false (for untrained development packages)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    plan = QUICK if args.quick else FULL
    try:
        environment = describe_environment(plan)
    except WrkMissing as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    for name in (LENET5, DEFAULT):
        if not any((args.model_dir / name).glob("*/metadata.json")):
            sys.stderr.write(f"no package {name!r} in {args.model_dir}: train it (make train)\n")
            return 2
    if (os.cpu_count() or 1) < 2:
        sys.stderr.write("pinning needs 2 CPUs (server on 0, wrk on 1)\n")
        return 2
    model_dir = args.model_dir.resolve()
    run = Run(environment=environment, commands=[])
    with tempfile.TemporaryDirectory(prefix="digits-bench-") as scratch:
        bench = Bench(plan, run, args.logs or Path(scratch))
        logger.info("in-process throughput")
        run.inprocess = measure_inprocess(model_dir, plan)
        selftest = not args.no_selftest
        lenet5 = service(model_dir, LENET5, selftest=selftest)
        default = service(model_dir, DEFAULT, selftest=selftest)
        overload = service(model_dir, LENET5, selftest=selftest, queue_size=OVERLOAD_QUEUE)
        references = [ceiling(), naive(model_dir, LENET5)]
        if not args.no_litserve:
            references.append(litserve(model_dir, LENET5))
        for spec in references:
            bench.sweep(spec, pinned=True)
        bench.sweep(lenet5, pinned=True, memory=True)
        bench.sweep(overload, pinned=True, concurrencies=[max(plan.concurrencies)])
        bench.sweep(default, pinned=True)
        bench.sweep(naive(model_dir, DEFAULT), pinned=True, concurrencies=[1, 64])
        for spec in (ceiling(), naive(model_dir, LENET5), lenet5, default):
            bench.sweep(spec, pinned=False)
    run.environment["load average after"] = _load_average()
    report = render(run)
    sys.stdout.write(report)
    if args.output:
        args.output.write_text(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(run), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
