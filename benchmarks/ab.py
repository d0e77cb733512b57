"""``python -m benchmarks.ab --before DIR``: the service of another checkout (``DIR``, e.g. a
``git worktree`` of the commit before a change) against this one's, the same loads, the same
model packages, alternating (and which goes first, round by round) so that the machine's
drift hits both alike.

Loads: the realistic mix (default model, 16 connections) and one exact MNIST PNG (LeNet-5,
64 connections), each server pinned to CPU 0 and wrk to CPU 1, ``--rounds`` times. Prints a
Markdown table of req/s and p50/p99 per round and the median ratio after/before. This is how
a refactoring shows it is no slower.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.image_kinds import default_data_dir, load_mnist_test
from benchmarks.load import DEFAULT, LENET5, LOAD_CPU, SERVER_CPU, service
from benchmarks.mix import write_mix
from benchmarks.servers import ServerSpec, running
from benchmarks.workloads import EXACT_MNIST, mix_workloads
from benchmarks.wrk import Body, LoadResult, run_wrk

logger = logging.getLogger("benchmarks.ab")


@dataclass(frozen=True)
class Load:
    name: str
    model: str
    bodies: tuple[Body, ...]
    connections: int


def from_checkout(spec: ServerSpec, checkout: Path | None) -> ServerSpec:
    """``spec`` run from ``checkout``'s ``service`` package (``None``: this one)."""
    if checkout is None:
        return replace(spec, name=f"{spec.name}, after")
    code = (
        f"import runpy, sys; sys.path.insert(0, {str(checkout)!r}); "
        "runpy.run_module('service', run_name='__main__')"
    )
    return replace(spec, argv=(sys.executable, "-c", code), name=f"{spec.name}, before")


def measure(
    load: Load, checkout: Path | None, model_dir: Path, seconds: float, logs: Path
) -> LoadResult:
    base = service(model_dir, load.model, selftest=False)
    spec = from_checkout(replace(base, env={**base.env, "DIGITS_LOG_LEVEL": "WARNING"}), checkout)
    log = logs / f"{spec.name.replace(' ', '-').replace(',', '')}.log"
    with running(spec, cpus=SERVER_CPU, log_path=log) as server:
        run_wrk(
            server.predict_url,
            body=load.bodies,
            concurrency=load.connections,
            duration_s=2.0,
            cpus=LOAD_CPU,
        )  # warm-up
        return run_wrk(
            server.predict_url,
            body=load.bodies,
            concurrency=load.connections,
            duration_s=seconds,
            cpus=LOAD_CPU,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    model_dir = args.model_dir.resolve()
    rows: list[str] = []
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="digits-ab-") as scratch:
        images, labels = load_mnist_test(args.data_dir)
        entries = write_mix(Path(scratch) / "mix", images, labels, per_kind=10)
        mix = mix_workloads(Path(scratch) / "mix", entries)[0].bodies  # "all mixed"
        loads = [
            Load("realistic mix, default", DEFAULT, mix, 16),
            Load("exact MNIST PNG, lenet5", LENET5, EXACT_MNIST.bodies, 64),
        ]
        for round_ in range(1, args.rounds + 1):
            for load in loads:
                sides: list[tuple[str, Path | None]] = [
                    ("before", args.before.resolve()),
                    ("after", None),
                ]
                if round_ % 2 == 0:  # alternate which goes first: the machine drifts
                    sides.reverse()
                results = {
                    side: measure(load, checkout, model_dir, args.seconds, Path(scratch))
                    for side, checkout in sides
                }
                before, after = results["before"], results["after"]
                ratio = after.requests_per_s / before.requests_per_s
                ratios.setdefault(load.name, []).append(ratio)
                rows.append(
                    f"| {round_} | {load.name} | {load.connections} "
                    f"| {before.requests_per_s:,.0f} ({before.latency_ms['p50']:.1f} / "
                    f"{before.latency_ms['p99']:.1f}) | {after.requests_per_s:,.0f} "
                    f"({after.latency_ms['p50']:.1f} / {after.latency_ms['p99']:.1f}) "
                    f"| {ratio:.2f} | {before.describe_errors()} / {after.describe_errors()} |"
                )
                logger.info(rows[-1])
    out = [
        "| round | load | conn. | before req/s (p50 / p99 ms) | after req/s (p50 / p99 ms) "
        "| after / before | not 200 (before / after) |",
        "|---:|---|---:|---:|---:|---:|---|",
        *rows,
        "",
        *(
            f"- {name}: median after / before {statistics.median(r):.2f}"
            for name, r in ratios.items()
        ),
    ]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
