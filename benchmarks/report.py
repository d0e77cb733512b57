"""A benchmark :class:`~benchmarks.measurements.Run` -> Markdown: set-up, tables, targets."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.inprocess import InProcessResult, markdown_table
from benchmarks.measurements import LoadPoint, Run

CEILING = "ceiling"
SERVICE = "service (lenet5)"
SERVICE_DEFAULT = "service (default)"
NAIVE = "naive (lenet5)"
LITSERVE = "litserve (lenet5)"


@dataclass(frozen=True)
class Target:
    what: str
    measured: str
    met: bool | None  # None: nothing to decide (a figure to show), or not measured


def render(run: Run) -> str:
    sections = [
        "## Set-up\n\n" + _environment(run),
        "## In-process throughput (one thread on CPU 0, no HTTP)\n\n"
        + markdown_table(run.inprocess),
        "## Over HTTP, pinned: server on CPU 0, wrk on CPU 1\n\n"
        + _load_table([p for p in run.points if p.pinned], run),
        "## Over HTTP, unpinned: server and wrk share both CPUs\n\n"
        + _load_table([p for p in run.points if not p.pinned], run),
        "## Memory\n\n" + _memory_table(run),
        "## Targets\n\n" + _targets_table(targets(run)),
    ]
    return "\n\n".join(sections) + "\n"


def _environment(run: Run) -> str:
    lines = [f"- {key}: {value}" for key, value in run.environment.items()]
    lines.append("- servers:")
    lines += [f"  - `{command}`" for command in run.commands]
    return "\n".join(lines)


def _load_table(points: Sequence[LoadPoint], run: Run) -> str:
    lines = [
        "| server | conc. | req/s | x ceiling | p50 ms | p90 ms | p99 ms | errors "
        "| mean batch | CPU: loop + other threads |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for p in points:
        ceiling = run.point(CEILING, p.concurrency, pinned=p.pinned)
        ratio = (
            f"{p.result.requests_per_s / ceiling.result.requests_per_s:.2f}"
            if ceiling and ceiling.result.requests_per_s
            else "-"
        )
        latency = p.result.latency_ms
        cpu = f"{p.cpu.event_loop:.2f} + {p.cpu.other_threads:.2f}" if p.cpu else "-"
        lines.append(
            f"| {p.server} | {p.concurrency} | {p.result.requests_per_s:,.0f} | {ratio} "
            f"| {latency['p50']:.2f} | {latency['p90']:.2f} | {latency['p99']:.2f} "
            f"| {p.result.describe_errors()} "
            f"| {f'{p.mean_batch:.1f}' if p.mean_batch else '-'} | {cpu} |"
        )
    return "\n".join(lines)


def _memory_table(run: Run) -> str:
    lines = [
        "| server | RSS after warm-up | RSS after N more requests | N | growth |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in run.memory:
        lines.append(
            f"| {m.server} | {m.warm_bytes / 2**20:.1f} MiB | {m.after_bytes / 2**20:.1f} MiB "
            f"| {m.requests_between:,} | {m.growth:+.1%} |"
        )
    return "\n".join(lines)


def _targets_table(rows: Sequence[Target]) -> str:
    mark = {True: "met", False: "**not met**", None: "-"}
    lines = ["| target | measured | |", "|---|---|---|"]
    lines += [f"| {t.what} | {t.measured} | {mark[t.met]} |" for t in rows]
    return "\n".join(lines)


# --- targets --------------------------------------------------------------------------------


def targets(run: Run) -> list[Target]:
    """The issue's targets (LeNet-5, pinned), each checked against this run."""
    return [
        *_at_64(run),
        *_at_1(run),
        *_at_256(run),
        _default_model(run),
        _unpinned(run),
        *_memory(run),
    ]


def _rate(run: Run, server: str, concurrency: int, *, pinned: bool = True) -> float | None:
    point = run.point(server, concurrency, pinned=pinned)
    return point.result.requests_per_s if point else None


def _ratio_target(what: str, ours: float | None, theirs: float | None, at_least: float) -> Target:
    if ours is None or not theirs:
        return Target(what, "not measured", None)
    ratio = ours / theirs
    return Target(what, f"{ours:,.0f} / {theirs:,.0f} = {ratio:.2f}x", ratio >= at_least)


def _at_64(run: Run) -> list[Target]:
    ours = _rate(run, SERVICE, 64)
    point = run.point(SERVICE, 64)
    rows = [
        _ratio_target("c=64: >= 0.5x the ceiling", ours, _rate(run, CEILING, 64), 0.5),
        _ratio_target("c=64: >= 2x naive", ours, _rate(run, NAIVE, 64), 2.0),
        _ratio_target("c=64: >= 4x LitServe", ours, _rate(run, LITSERVE, 64), 4.0),
    ]
    if point is None:
        return rows
    p99 = point.result.latency_ms["p99"]
    rows.append(Target("c=64: p99 <= 30 ms", f"{p99:.1f} ms", p99 <= 30.0))
    rows.append(Target("c=64: no errors", point.result.describe_errors(), point.result.errors == 0))
    return rows


def _at_1(run: Run) -> list[Target]:
    ours, theirs = run.point(SERVICE, 1), run.point(NAIVE, 1)
    if ours is None or theirs is None:
        return [Target("c=1: no batching tax", "not measured", None)]
    gap = ours.result.latency_ms["p50"] - theirs.result.latency_ms["p50"]
    return [
        Target(
            "c=1: p50 within 0.2 ms of naive's",
            f"{ours.result.latency_ms['p50']:.2f} vs {theirs.result.latency_ms['p50']:.2f} ms "
            f"({gap:+.2f})",
            gap <= 0.2,
        ),
        _ratio_target(
            "c=1: req/s >= 0.9x naive's",
            ours.result.requests_per_s,
            theirs.result.requests_per_s,
            0.9,
        ),
    ]


def _at_256(run: Run) -> list[Target]:
    rows = []
    within = run.point(SERVICE, 256)
    if within is not None:
        rows.append(
            Target(
                "c=256 (queue 1024): no errors",
                within.result.describe_errors(),
                within.result.errors == 0,
            )
        )
    beyond = next((p for p in run.points if p.server.startswith("service (lenet5, queue")), None)
    if beyond is not None:
        statuses = beyond.result.statuses
        other = {s for s in statuses if s not in (200, 503)}
        clean = not other and not sum(beyond.result.socket_errors.values())
        rows.append(
            Target(
                f"c={beyond.concurrency} beyond the queue ({beyond.server}): 503s only",
                f"{statuses.get(200, 0):,} x 200, {statuses.get(503, 0):,} x 503, other: "
                f"{'none' if clean else beyond.result.describe_errors()}",
                # Without a 503 the queue bound was never reached: nothing was shown.
                clean and statuses.get(503, 0) > 0,
            )
        )
    return rows


def _default_model(run: Run) -> Target:
    what = "default model c=64: >= 0.8x its in-process throughput at the service's batch size"
    point = run.point(SERVICE_DEFAULT, 64)
    rows = [r for r in run.inprocess if r.model == "default"]
    if point is None or point.mean_batch is None or not rows:
        return Target(what, "not measured", None)
    reference = interpolated_throughput(rows, point.mean_batch)
    ratio = point.result.requests_per_s / reference
    return Target(
        what,
        f"{point.result.requests_per_s:,.0f} req/s at mean batch {point.mean_batch:.1f} vs "
        f"{reference:,.0f} img/s in-process = {ratio:.2f}x",
        ratio >= 0.8,
    )


def interpolated_throughput(rows: Sequence[InProcessResult], batch: float) -> float:
    """In-process end-to-end images/s at a (fractional) batch size, linear in log2(batch)."""
    ordered = sorted(rows, key=lambda r: r.batch_size)
    if batch <= ordered[0].batch_size:
        return ordered[0].end_to_end_images_per_s
    for low, high in itertools.pairwise(ordered):
        if batch <= high.batch_size:
            share = (math.log2(batch) - math.log2(low.batch_size)) / (
                math.log2(high.batch_size) - math.log2(low.batch_size)
            )
            return low.end_to_end_images_per_s + share * (
                high.end_to_end_images_per_s - low.end_to_end_images_per_s
            )
    return ordered[-1].end_to_end_images_per_s


def _unpinned(run: Run) -> Target:
    pinned, unpinned = run.point(SERVICE, 64), run.point(SERVICE, 64, pinned=False)
    if pinned is None or unpinned is None or unpinned.cpu is None:
        return Target("unpinned: use of the second core", "not measured", None)
    gain = unpinned.result.requests_per_s / pinned.result.requests_per_s
    return Target(
        "unpinned c=64: what the second core gives",
        f"{unpinned.result.requests_per_s:,.0f} vs {pinned.result.requests_per_s:,.0f} req/s "
        f"pinned ({gain:.2f}x); server CPU {unpinned.cpu.event_loop:.2f} (event loop) + "
        f"{unpinned.cpu.other_threads:.2f} (other threads) cores",
        None,
    )


def _memory(run: Run) -> list[Target]:
    return [
        Target(
            f"memory: RSS after {m.requests_between:,} requests within 10% of after warm-up",
            f"{m.warm_bytes / 2**20:.1f} -> {m.after_bytes / 2**20:.1f} MiB ({m.growth:+.1%})",
            abs(m.growth) <= 0.10,
        )
        for m in run.memory
    ]
