"""``make bench``: the service under HTTP load beside reference servers, one Markdown report.

Every server runs as a real process, as ``make serve`` runs the service, and is driven over
HTTP by ``wrk`` from another process: pinned (server on CPU 0, wrk on CPU 1) and unpinned.
At each point: a warm-up run, then three measured runs (one with ``--quick``), of which the
median by requests a second is reported. In this order:

1. In process, one thread on CPU 0: the forward pass and decode + preprocess + forward per
   batch size; then ``preprocess()`` time per kind of image, on the realistic mix's bodies.
2. The realistic mix (``benchmarks.mix``: 40 bodies of each of the ten image kinds, each from
   its own MNIST test digit), pinned, at 16 connections, rotated through by wrk: "all mixed"
   and each group, on the default model, against
   - decode-only  the ceiling's stack decoding each body fully with Pillow (the floor), and
   - naive        decode + preprocess + forward per request inside the handler;
   then the service on "all mixed" unpinned (both cores).
3. LeNet-5 with a 28x28 PNG that is not laid out as MNIST (``benchmarks/digit7_28px.png``):
   the service at 1, 16, 64 and 256 connections (and its memory after 100,000 requests), and
   at 1 and 64 connections
   - ceiling   FastAPI + uvicorn answering a constant after reading the body (the HTTP limit),
   - naive, and
   - litserve  LitServe with its dynamic batching (max batch 64, 5 ms timeout);
   one row with the exact MNIST PNG (``mnist_test_0009.png``), and the service with a queue of
   64 at 256 connections.
4. The default model with the exact MNIST PNG at 1 and 64 connections (service and naive),
   to compare with its in-process throughput.
5. Unpinned at 64 connections: the ceiling, naive and the LeNet-5 service with the 28x28 PNG,
   the default-model service with the exact one.

To keep a full run near 20 minutes beside the mix, the older sweeps were trimmed: the
references and the default model run at 1 and 64 connections (were 1, 16, 64, 256), and the
unpinned sweeps at 64 only (were all four).

``python -m benchmarks.load [--quick | --smoke] [--model-dir models] [--output FILE]``
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
from typing import Any

from benchmarks.image_kinds import default_data_dir, load_mnist_test
from benchmarks.inprocess import InProcessResult, KindTiming
from benchmarks.measurements import CpuUse, LoadPoint, MemoryCheck, Run
from benchmarks.mix import write_mix
from benchmarks.prometheus_text import mean_batch_size, requests_answered
from benchmarks.report import CEILING, DECODE_ONLY, MIX_CONCURRENCY, render
from benchmarks.servers import RunningServer, ServerSpec, ThreadCpu, python_module, running
from benchmarks.workloads import EXACT_MNIST, OFF_CENTRE_7, Workload, mix_workloads
from benchmarks.wrk import MIX_LUA_SCRIPT, LoadResult, WrkMissing, run_wrk, wrk_version

logger = logging.getLogger("benchmarks.load")

SERVER_CPU = "0"
LOAD_CPU = "1"
LENET5 = "lenet5"
DEFAULT = "default"
#: A queue (the smallest allowed: one full batch) well under the load's concurrency, to show
#: what happens beyond the queue bound.
OVERLOAD_QUEUE = 64


#: The references and the default model's single-image rows: one client, and enough for
#: full batches.
PAIR = (1, 64)
UNPINNED = 64


@dataclass(frozen=True)
class Plan:
    concurrencies: tuple[int, ...]  # the LeNet-5 service's sweep; the largest also overloads
    duration_s: float
    warmup_s: float
    rounds: int
    inprocess_seconds: float
    memory_requests: int
    mix_per_kind: int
    kind_repeats: int  # timed preprocess() calls per body for the per-kind table


FULL = Plan(
    concurrencies=(1, 16, 64, 256),
    duration_s=8.0,
    warmup_s=2.0,
    rounds=3,
    inprocess_seconds=1.5,
    memory_requests=100_000,
    mix_per_kind=40,
    kind_repeats=3,
)
QUICK = Plan(
    concurrencies=(1, 64, 256),
    duration_s=2.0,
    warmup_s=1.0,
    rounds=1,
    inprocess_seconds=0.3,
    memory_requests=10_000,
    mix_per_kind=10,
    kind_repeats=1,
)
#: Every point once for a second, without warm-up: that the whole run works, not figures.
SMOKE = Plan(
    concurrencies=(1, 64, 256),
    duration_s=1.0,
    warmup_s=0.0,
    rounds=1,
    inprocess_seconds=0.1,
    memory_requests=500,
    mix_per_kind=2,
    kind_repeats=1,
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
    return ServerSpec(CEILING, python_module("benchmarks.reference.ceiling", "--port", "{port}"))


def decode_only() -> ServerSpec:
    argv = python_module("benchmarks.reference.decode_only", "--port", "{port}")
    return ServerSpec(DECODE_ONLY, argv)


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
        loads: Sequence[tuple[Workload, int]],
        memory: bool = False,
    ) -> None:
        """Start ``spec``, measure it on each (workload, concurrency) in turn, stop it. With
        ``memory``, compare its resident set after warm-up (on the first workload, at the
        highest concurrency) with that after ``memory_requests`` more requests."""
        where = "pinned" if pinned else "unpinned"
        self._note_command(spec, pinned)
        log_path = self.log_dir / f"{_slug(spec.name)}-{where}.log"
        with running(spec, cpus=SERVER_CPU if pinned else None, log_path=log_path) as server:
            warm: tuple[int, int] | None = None
            if memory:  # warmed at the highest concurrency: every buffer has grown once
                busiest = max(concurrency for _, concurrency in loads)
                self._load(server, loads[0][0], busiest, max(1.0, self.plan.warmup_s), pinned)
                warm = (server.resident_bytes(), requests_answered(_metrics(server)))
            for workload, concurrency in loads:
                if self.plan.warmup_s > 0:
                    self._load(server, workload, concurrency, self.plan.warmup_s, pinned)
                point = self._measure(server, workload, concurrency, pinned)
                self.run.points.append(point)
                logger.info(
                    "%s %s, %s, c=%d: %.0f req/s, p99 %.1f ms, errors %s, mean batch %s",
                    spec.name,
                    where,
                    workload.name,
                    concurrency,
                    point.result.requests_per_s,
                    point.result.latency_ms["p99"],
                    point.result.describe_errors(),
                    f"{point.mean_batch:.1f}" if point.mean_batch else "-",
                )
            if warm is not None:
                self.run.memory.append(self._memory(server, loads[0][0], *warm, pinned=pinned))

    def _measure(
        self, server: RunningServer, workload: Workload, concurrency: int, pinned: bool
    ) -> LoadPoint:
        scrape_before = _metrics(server)
        cpu_before, started = server.thread_cpu(), time.monotonic()
        rounds = [
            self._load(server, workload, concurrency, self.plan.duration_s, pinned)
            for _ in range(self.plan.rounds)
        ]
        cpu = _cpu_use(cpu_before, server.thread_cpu(), time.monotonic() - started)
        scrape_after = _metrics(server)
        rates = [r.requests_per_s for r in rounds]
        median = sorted(rounds, key=lambda r: r.requests_per_s)[len(rounds) // 2]
        return LoadPoint(
            server=server.spec.name,
            workload=workload.name,
            pinned=pinned,
            result=median,
            round_rates=tuple(rates),
            mean_batch=mean_batch_size(scrape_before, scrape_after) if scrape_before else None,
            cpu=cpu,
        )

    def _memory(
        self,
        server: RunningServer,
        workload: Workload,
        warm_bytes: int,
        warm_count: int,
        *,
        pinned: bool,
    ) -> MemoryCheck:
        """Load the server until ``memory_requests`` were answered since warm-up; compare RSS."""
        wanted = self.plan.memory_requests
        while (done := requests_answered(_metrics(server)) - warm_count) < wanted:
            seconds = max(1.0, min(30.0, (wanted - done) / 2000))
            self._load(server, workload, 64, seconds, pinned)
        return MemoryCheck(server.spec.name, warm_bytes, server.resident_bytes(), done)

    def _load(
        self,
        server: RunningServer,
        workload: Workload,
        concurrency: int,
        seconds: float,
        pinned: bool,
    ) -> LoadResult:
        return run_wrk(
            server.predict_url,
            body=workload.bodies,
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
    models = ("--model-dir", str(model_dir), "--model", LENET5, "--model", DEFAULT)
    rows = _inprocess_json(*models, "--seconds", str(plan.inprocess_seconds))
    return [InProcessResult(**row) for row in rows]


def measure_kinds(mix: Path, plan: Plan) -> list[KindTiming]:
    """``benchmarks.inprocess --kinds`` on the mix's bodies, pinned to the server's CPU."""
    rows = _inprocess_json("--kinds", "--mix", str(mix), "--repeats", str(plan.kind_repeats))
    return [KindTiming(**row) for row in rows]


def _inprocess_json(*args: str) -> list[dict[str, Any]]:
    argv = python_module("benchmarks.inprocess", *args, "--cpu", SERVER_CPU, "--json")
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


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
            f"{plan.warmup_s:g} s warm-up; LeNet-5 service at concurrency "
            f"{', '.join(map(str, plan.concurrencies))}, references and the default model at "
            f"{', '.join(map(str, PAIR))}, the mix at {MIX_CONCURRENCY}, unpinned at {UNPINNED}; "
            f"mix: {plan.mix_per_kind} bodies per kind"
        ),
        "wrk command": (
            f"taskset -c {LOAD_CPU} wrk --threads 1 --connections C --duration "
            f"{plan.duration_s:g}s --timeout 10s --script {_relative(MIX_LUA_SCRIPT)} "
            "http://127.0.0.1:PORT/predict -- LIST (the workload's bodies, one "
            '"<content type><TAB><file>" a line, sent in rotation)'
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
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--quick", action="store_true", help="short runs (about 4 minutes)")
    length.add_argument(
        "--smoke", action="store_true", help="every point once for 1 s: that it all runs"
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="MNIST IDX files, for the mix (default: $DIGITS_DATA_DIR, else ../shared/data/mnist)",
    )
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
    plan = SMOKE if args.smoke else QUICK if args.quick else FULL
    try:
        environment = describe_environment(plan)
    except WrkMissing as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    problem = _missing_inputs(args.model_dir, args.data_dir)
    if problem:
        sys.stderr.write(problem + "\n")
        return 2
    with tempfile.TemporaryDirectory(prefix="digits-bench-") as scratch:
        run = Run(environment=environment, commands=[])
        bench = Bench(plan, run, args.logs or Path(scratch))
        measure_all(
            bench,
            args.model_dir.resolve(),
            args.data_dir,
            Path(scratch) / "mix",
            litserve_too=not args.no_litserve,
            selftest=not args.no_selftest,
        )
    run.environment["load average after"] = _load_average()
    report = render(run)
    sys.stdout.write(report)
    if args.output:
        args.output.write_text(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(run), indent=1, default=str))
    return 0


def _missing_inputs(model_dir: Path, data_dir: Path) -> str | None:
    """What stops a run before it starts, said so that it can be fixed; ``None``: nothing."""
    for name in (LENET5, DEFAULT):
        if not any((model_dir / name).glob("*/metadata.json")):
            return f"no package {name!r} in {model_dir}: train it (make train)"
    if not (data_dir / "t10k-images-idx3-ubyte.gz").is_file():
        return f"no MNIST test set in {data_dir} (for the mix): pass --data-dir or DIGITS_DATA_DIR"
    if (os.cpu_count() or 1) < 2:
        return "pinning needs 2 CPUs (server on 0, wrk on 1)"
    return None


def measure_all(
    bench: Bench,
    model_dir: Path,
    data_dir: Path,
    mix_dir: Path,
    *,
    litserve_too: bool,
    selftest: bool,
) -> None:
    """Every measurement of the module docstring's plan, in its order, into ``bench.run``."""
    plan, run = bench.plan, bench.run
    logger.info("in-process throughput")
    run.inprocess = measure_inprocess(model_dir, plan)
    logger.info("writing the realistic mix (%d bodies per kind)", plan.mix_per_kind)
    images, labels = load_mnist_test(data_dir)
    entries = write_mix(mix_dir, images, labels, per_kind=plan.mix_per_kind)
    mix = mix_workloads(mix_dir, entries)
    run.workload_bodies = {w.name: len(w.bodies) for w in mix}
    logger.info("preprocess time per kind")
    run.kinds = measure_kinds(mix_dir, plan)

    lenet5 = service(model_dir, LENET5, selftest=selftest)
    default = service(model_dir, DEFAULT, selftest=selftest)
    on_mix = [(workload, MIX_CONCURRENCY) for workload in mix]
    default_loads = [*on_mix, *((EXACT_MNIST, c) for c in PAIR)]
    bench.sweep(decode_only(), pinned=True, loads=on_mix)
    bench.sweep(default, pinned=True, loads=default_loads)
    bench.sweep(naive(model_dir, DEFAULT), pinned=True, loads=default_loads)

    off_centre = [(OFF_CENTRE_7, c) for c in PAIR]
    references = [ceiling(), naive(model_dir, LENET5)]
    if litserve_too:
        references.append(litserve(model_dir, LENET5))
    for spec in references:
        bench.sweep(spec, pinned=True, loads=off_centre)
    lenet5_loads = [*((OFF_CENTRE_7, c) for c in plan.concurrencies), (EXACT_MNIST, 64)]
    bench.sweep(lenet5, pinned=True, loads=lenet5_loads, memory=True)
    overload = service(model_dir, LENET5, selftest=selftest, queue_size=OVERLOAD_QUEUE)
    bench.sweep(overload, pinned=True, loads=[(OFF_CENTRE_7, max(plan.concurrencies))])

    for spec in (ceiling(), naive(model_dir, LENET5), lenet5):
        bench.sweep(spec, pinned=False, loads=[(OFF_CENTRE_7, UNPINNED)])
    bench.sweep(default, pinned=False, loads=[on_mix[0], (EXACT_MNIST, UNPINNED)])


if __name__ == "__main__":
    sys.exit(main())
