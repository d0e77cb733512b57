"""How fast ``POST /read`` is, on the numbers people send (``benchmarks.numbers``).

Two parts, one run:

1. **Preprocessing** in-process on one core: the median time of
   :func:`service.imaging.reading.find_candidates` (decode, strokes, form lines, segmentation,
   every candidate laid out) per kind, for six-digit numbers on a canvas (``spaced``, the
   issue's target: <= 5 ms) and for the ideal single MNIST digit beside them.
2. **Throughput**: the service as a real process on one core, driven by wrk from the other,
   at a fixed concurrency: ``/read`` on the mix of every kind, ``/read`` on one six-digit
   canvas, and ``/predict`` on the same mix in the same run (one digit per picture), as the
   ratio that says what reading a whole number costs.

    python -m benchmarks.read_speed [--per-kind 20] [--duration 20] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import numbers
from benchmarks.image_kinds import content_type, default_data_dir, load_mnist_test, mnist_png
from benchmarks.load import LOAD_CPU, SERVER_CPU, service
from benchmarks.servers import running
from benchmarks.wrk import LoadResult, run_wrk, wrk_version
from service.imaging.reading import find_candidates

logger = logging.getLogger("benchmarks.read_speed")

_REPOSITORY = Path(__file__).resolve().parents[1]
MAX_PIXELS = 40_000_000
#: Pause after each wrk run: requests its connections left in flight finish first (else the
#: next run starts against their admission places and is partly refused).
_SETTLE_S = 2.0
#: The canvas of the issue's target: a six-digit number drawn on a web canvas.
CANVAS_KIND, CANVAS_LENGTH = "spaced", 6


@dataclass(frozen=True)
class Timed:
    name: str
    count: int
    median_ms: float
    p90_ms: float
    candidates: float


def samples_of(kind: str, count: int, *, length: int | None = None) -> list[numbers.NumberSample]:
    """The first ``count`` test-digit numbers of ``kind`` (of ``length`` digits when given)."""
    found: list[numbers.NumberSample] = []
    seed = 0
    while len(found) < count:
        sample = numbers.make(kind, seed, source="test")
        if length is None or len(sample.label) == length:
            found.append(sample)
        seed += 1
    return found


def time_preprocessing(name: str, bodies: Sequence[bytes], rounds: int = 5) -> Timed:
    """Median and 90th percentile of ``find_candidates`` over ``bodies`` (each ``rounds``
    times, after one warm-up pass)."""
    times: list[float] = []
    candidates: list[int] = []
    for body in bodies:
        find_candidates(body, max_pixels=MAX_PIXELS)
        for _ in range(rounds):
            start = time.perf_counter()
            found = find_candidates(body, max_pixels=MAX_PIXELS)
            times.append((time.perf_counter() - start) * 1000.0)
        candidates.append(len(found.spans))
    times.sort()
    return Timed(
        name,
        len(bodies),
        statistics.median(times),
        times[int(0.9 * (len(times) - 1))],
        statistics.mean(candidates),
    )


def write_bodies(folder: Path, named: Sequence[tuple[str, bytes]]) -> list[tuple[Path, str]]:
    """Each body as a file; the (path, content type) list wrk rotates through."""
    listing = []
    for name, body in named:
        path = folder / name
        path.write_bytes(body)
        listing.append((path, content_type(body)))
    return listing


def throughput(
    folder: Path,
    mix: Sequence[tuple[Path, str]],
    canvas: Sequence[tuple[Path, str]],
    args: argparse.Namespace,
) -> list[tuple[str, str, LoadResult]]:
    """The service on one core, wrk on the other: each (route, input) at one concurrency."""
    runs: list[tuple[str, str, LoadResult]] = []
    spec = service(_REPOSITORY / "models", "default", selftest=True)
    with running(spec, cpus=SERVER_CPU, log_path=folder / "server.log") as server:
        for route, label, bodies in (
            ("/read", "mix of kinds", mix),
            ("/read", "6-digit canvas", canvas),
            ("/predict", "mix of kinds", mix),
        ):
            run_wrk(
                server.base_url + route,
                body=bodies,
                concurrency=args.concurrency,
                duration_s=3,
                cpus=LOAD_CPU,
            )  # warm-up
            time.sleep(_SETTLE_S)  # the warm-up's last requests finish before the measured run
            result = run_wrk(
                server.base_url + route,
                body=bodies,
                concurrency=args.concurrency,
                duration_s=args.duration,
                cpus=LOAD_CPU,
            )
            logger.info("%s %s: %.1f req/s", route, label, result.requests_per_s)
            time.sleep(_SETTLE_S)
            runs.append((route, label, result))
    return runs


def report(
    timed: Sequence[Timed], runs: Sequence[tuple[str, str, LoadResult]], args: argparse.Namespace
) -> str:
    lines = [
        f"`python -m benchmarks.read_speed --per-kind {args.per_kind} --duration "
        f"{args.duration:g} --concurrency {args.concurrency}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "",
        "Preprocessing (find_candidates: decode, strokes, form lines, segmentation, layout), "
        "one core:",
        "",
        "| input | pictures | median ms | p90 ms | candidates per picture |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {t.name} | {t.count} | {t.median_ms:.2f} | {t.p90_ms:.2f} | {t.candidates:.1f} |"
        for t in timed
    ]
    if runs:
        predict = next(r for route, _, r in runs if route == "/predict")
        lines += [
            "",
            f"Throughput: the service (default model) on CPU {SERVER_CPU}, wrk on CPU "
            f"{LOAD_CPU}, {args.concurrency} connections, {args.duration:g} s:",
            "",
            "| route | input | req/s | vs /predict on the mix | p50 ms | p99 ms | non-200 |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for route, label, result in runs:
            ratio = result.requests_per_s / predict.requests_per_s
            lines.append(
                f"| {route} | {label} | {result.requests_per_s:.1f} | {ratio:.2f}x | "
                f"{result.latency_ms['p50']:.1f} | {result.latency_ms['p99']:.1f} | "
                f"{result.describe_errors()} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-kind", type=int, default=20, help="numbers of each kind")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load run")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-load", action="store_true", help="preprocessing only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    mnist = load_mnist_test(default_data_dir())[0]
    canvas = samples_of(CANVAS_KIND, args.per_kind, length=CANVAS_LENGTH)
    by_kind = {kind: samples_of(kind, args.per_kind) for kind in numbers.KINDS}
    timed = [time_preprocessing("one MNIST digit, 28x28 PNG (ideal)", [mnist_png(mnist[0], 0)])]
    timed.append(
        time_preprocessing(
            f"{CANVAS_LENGTH}-digit canvas ({CANVAS_KIND})", [s.body for s in canvas]
        )
    )
    timed += [time_preprocessing(kind, [s.body for s in found]) for kind, found in by_kind.items()]
    runs: list[tuple[str, str, LoadResult]] = []
    if not args.no_load:
        wrk_version()
        with tempfile.TemporaryDirectory(prefix="digits-read-speed-") as scratch:
            folder = Path(scratch)
            mix = write_bodies(
                folder,
                [
                    (f"{s.kind}_{i}", s.body)
                    for found in by_kind.values()
                    for i, s in enumerate(found)
                ],
            )
            canvas_files = write_bodies(
                folder, [(f"canvas_{i}", s.body) for i, s in enumerate(canvas)]
            )
            runs = throughput(folder, mix, canvas_files, args)
    sys.stdout.write(report(timed, runs, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
