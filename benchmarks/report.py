"""A benchmark :class:`~benchmarks.measurements.Run` -> Markdown: set-up, tables, targets.

Every ratio in the report is computed here, from points of the same run: the mix's rows to
the decode-only floor on the same bodies, the LeNet-5 rows to the empty endpoint (the
ceiling) and to the naive server at the same concurrency.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from benchmarks.inprocess import InProcessResult, kinds_table, markdown_table
from benchmarks.measurements import LoadPoint, Run
from benchmarks.mix import ALL_MIXED, GROUPS
from benchmarks.workloads import EXACT_MNIST, OFF_CENTRE_7

CEILING = "ceiling"
DECODE_ONLY = "decode-only"
SERVICE = "service (lenet5)"
SERVICE_DEFAULT = "service (default)"
NAIVE = "naive (lenet5)"
NAIVE_DEFAULT = "naive (default)"
LITSERVE = "litserve (lenet5)"
#: The LeNet-5 rows: the service and the references it is compared with.
LENET5_SERVERS: Final = (CEILING, NAIVE, LITSERVE, SERVICE)
#: The servers of the mix, in the order their rows are shown.
MIX_SERVERS: Final = (DECODE_ONLY, SERVICE_DEFAULT, NAIVE_DEFAULT)
MIX_CONCURRENCY: Final = 16
MIX_WORKLOADS: Final = (ALL_MIXED, *GROUPS)


@dataclass(frozen=True)
class Target:
    what: str
    measured: str
    met: bool | None  # None: nothing to decide (a figure to show), or not measured


@dataclass(frozen=True)
class Column:
    header: str
    align: str  # "---" or "---:"
    cell: Callable[[LoadPoint], str]


def render(run: Run) -> str:
    pinned = [p for p in run.points if p.pinned]
    lenet5 = [p for p in pinned if p.server in LENET5_SERVERS]
    others = [p for p in pinned if p.server not in LENET5_SERVERS and not _on_mix(p)]
    sections = [
        "## Set-up\n\n" + _environment(run),
        f"## The realistic mix: default model, {MIX_CONCURRENCY} connections\n\n"
        + _mix_description(run)
        + "\n\n"
        + _mix_table(run),
        "### Per group (pinned)\n\n" + _group_table(run),
        "### Preprocessing per kind, in process (one thread on CPU 0)\n\n" + kinds_table(run.kinds),
        f"## LeNet-5, a 28x28 PNG not laid out as MNIST ({OFF_CENTRE_7.name}), pinned\n\n"
        + _table(lenet5, _lenet5_columns(run)),
        "## The default model and the queue bound, single images, pinned\n\n"
        + _table(others, _single_image_columns(run)),
        "## In-process throughput (one thread on CPU 0, no HTTP)\n\n"
        + markdown_table(run.inprocess),
        "## Over HTTP, unpinned: server and wrk share both CPUs\n\n"
        + _table(
            [p for p in run.points if not p.pinned and not _on_mix(p)], _single_image_columns(run)
        ),
        "## Memory\n\n" + _memory_table(run),
        "## Targets\n\n" + _targets_table(targets(run)),
    ]
    return "\n\n".join(sections) + "\n"


def _environment(run: Run) -> str:
    lines = [f"- {key}: {value}" for key, value in run.environment.items()]
    lines.append("- servers:")
    lines += [f"  - `{command}`" for command in run.commands]
    return "\n".join(lines)


def _on_mix(point: LoadPoint) -> bool:
    return point.workload in MIX_WORKLOADS


# --- tables ---------------------------------------------------------------------------------


def _table(points: Sequence[LoadPoint], columns: Sequence[Column]) -> str:
    if not points:
        return "Not measured."
    lines = [
        "| " + " | ".join(c.header for c in columns) + " |",
        "|" + "|".join(c.align for c in columns) + "|",
    ]
    lines += ["| " + " | ".join(c.cell(p) for c in columns) + " |" for p in points]
    return "\n".join(lines)


def _ms(percentile: str) -> Column:
    return Column(f"{percentile} ms", "---:", lambda p: f"{p.result.latency_ms[percentile]:.2f}")


def _ratio(header: str, reference: Callable[[LoadPoint], LoadPoint | None]) -> Column:
    """``point's req/s / reference's``, or ``-`` where the reference was not measured."""

    def cell(point: LoadPoint) -> str:
        other = reference(point)
        if other is None or not other.result.requests_per_s:
            return "-"
        return f"{point.result.requests_per_s / other.result.requests_per_s:.2f}"

    return Column(header, "---:", cell)


SERVER = Column("server", "---", lambda p: p.server)
BODY = Column("body", "---", lambda p: p.workload)
CONCURRENCY = Column("conc.", "---:", lambda p: str(p.concurrency))
CORES = Column("server on", "---", lambda p: "CPU 0" if p.pinned else "both CPUs")
RATE = Column("req/s", "---:", lambda p: f"{p.result.requests_per_s:,.0f}")
ERRORS = Column("errors", "---", lambda p: p.result.describe_errors())
BATCH = Column("mean batch", "---:", lambda p: f"{p.mean_batch:.1f}" if p.mean_batch else "-")
CPU = Column(
    "CPU: loop + other threads",
    "---",
    lambda p: f"{p.cpu.event_loop:.2f} + {p.cpu.other_threads:.2f}" if p.cpu else "-",
)


def _decode_only_ratio(run: Run) -> Column:
    """To the floor on the same bodies at the same concurrency, pinned (where it ran)."""
    return _ratio(
        "x decode-only",
        lambda p: run.point(DECODE_ONLY, p.concurrency, workload=p.workload, pinned=True),
    )


def _ceiling_ratio(run: Run, header: str = "x ceiling") -> Column:
    """To the ceiling at the same concurrency and pinning. It answers without looking at the
    body, so it ran with the 28x28 PNG only; the other bodies are of the same size."""
    return _ratio(
        header,
        lambda p: _lenet5_point(run, CEILING, p.concurrency, pinned=p.pinned),
    )


def _mix_description(run: Run) -> str:
    total = run.workload_bodies.get(ALL_MIXED, 0)
    if not total:
        return "Not measured."
    shares = ", ".join(
        f"{group} {run.workload_bodies.get(group, 0) / total:.0%}" for group in GROUPS
    )
    return (
        f"{total} distinct bodies (`benchmarks.mix`), each kind the same number of times; wrk "
        f'sends them in rotation. Shares of "{ALL_MIXED}": {shares}. Ratios are to the '
        "decode-only server (Pillow's full decode, constant answer) on the same bodies, pinned."
    )


def _mix_table(run: Run) -> str:
    rows = [run.point(s, MIX_CONCURRENCY, workload=ALL_MIXED) for s in MIX_SERVERS]
    rows.append(run.point(SERVICE_DEFAULT, MIX_CONCURRENCY, workload=ALL_MIXED, pinned=False))
    columns = (SERVER, CORES, RATE, _ms("p50"), _ms("p99"), ERRORS, BATCH, CPU)
    return _table([p for p in rows if p], (*columns, _decode_only_ratio(run)))


def _group_table(run: Run) -> str:
    total = run.workload_bodies.get(ALL_MIXED, 0)
    group = Column("group", "---", lambda p: p.workload)
    share = Column(
        "share of the mix",
        "---:",
        lambda p: f"{run.workload_bodies.get(p.workload, 0) / total:.0%}" if total else "-",
    )
    rows = [
        run.point(server, MIX_CONCURRENCY, workload=name)
        for name in GROUPS
        for server in MIX_SERVERS
    ]
    columns = (group, share, SERVER, RATE, _ms("p50"), _ms("p99"), ERRORS, BATCH)
    return _table([p for p in rows if p], (*columns, _decode_only_ratio(run)))


def _lenet5_columns(run: Run) -> tuple[Column, ...]:
    naive = _ratio("x naive", lambda p: _lenet5_point(run, NAIVE, p.concurrency, pinned=p.pinned))
    return _single_image_columns(run, (_ceiling_ratio(run, "x empty endpoint"), naive))


def _single_image_columns(run: Run, ratios: Sequence[Column] | None = None) -> tuple[Column, ...]:
    """A row per server, body and concurrency; ``ratios`` (default: to the ceiling) after
    the rate."""
    chosen = (_ceiling_ratio(run),) if ratios is None else tuple(ratios)
    latency = (_ms("p50"), _ms("p90"), _ms("p99"))
    return (SERVER, BODY, CONCURRENCY, RATE, *chosen, *latency, ERRORS, BATCH, CPU)


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
    """The issues' targets, each checked against this run: the mix's (issue #11), then
    issue #4's on LeNet-5 (with the 28x28 PNG not laid out as MNIST), pinned."""
    return [
        *_mix(run),
        *_at_64(run),
        *_at_1(run),
        *_at_256(run),
        _default_model(run),
        _unpinned(run),
        *_memory(run),
    ]


def _lenet5_point(
    run: Run, server: str, concurrency: int, *, pinned: bool = True
) -> LoadPoint | None:
    return run.point(server, concurrency, workload=OFF_CENTRE_7.name, pinned=pinned)


def _rate(run: Run, server: str, concurrency: int, *, pinned: bool = True) -> float | None:
    point = _lenet5_point(run, server, concurrency, pinned=pinned)
    return point.result.requests_per_s if point else None


def _mix(run: Run) -> list[Target]:
    pinned = run.point(SERVICE_DEFAULT, MIX_CONCURRENCY, workload=ALL_MIXED)
    unpinned = run.point(SERVICE_DEFAULT, MIX_CONCURRENCY, workload=ALL_MIXED, pinned=False)
    floor = run.point(DECODE_ONLY, MIX_CONCURRENCY, workload=ALL_MIXED)
    rows = [
        _ratio_target(
            f"mix c={MIX_CONCURRENCY}: unpinned >= 1.6x pinned",
            unpinned.result.requests_per_s if unpinned else None,
            pinned.result.requests_per_s if pinned else None,
            1.6,
        ),
    ]
    if pinned is not None:
        rows.append(
            Target(
                f"mix c={MIX_CONCURRENCY}: no errors",
                pinned.result.describe_errors(),
                pinned.result.errors == 0,
            )
        )
    if pinned is not None and floor is not None:
        rows.append(
            Target(
                f"mix c={MIX_CONCURRENCY}: the service against the decode-only floor",
                f"{pinned.result.requests_per_s:,.0f} / {floor.result.requests_per_s:,.0f} = "
                f"{pinned.result.requests_per_s / floor.result.requests_per_s:.2f}x",
                None,
            )
        )
    return rows


def _ratio_target(what: str, ours: float | None, theirs: float | None, at_least: float) -> Target:
    if ours is None or not theirs:
        return Target(what, "not measured", None)
    ratio = ours / theirs
    return Target(what, f"{ours:,.0f} / {theirs:,.0f} = {ratio:.2f}x", ratio >= at_least)


def _at_64(run: Run) -> list[Target]:
    ours = _rate(run, SERVICE, 64)
    point = _lenet5_point(run, SERVICE, 64)
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
    ours, theirs = _lenet5_point(run, SERVICE, 1), _lenet5_point(run, NAIVE, 1)
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
    within = _lenet5_point(run, SERVICE, 256)
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
    point = run.point(SERVICE_DEFAULT, 64, workload=EXACT_MNIST.name)
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
    pinned = _lenet5_point(run, SERVICE, 64)
    unpinned = _lenet5_point(run, SERVICE, 64, pinned=False)
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
