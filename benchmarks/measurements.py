"""What one benchmark run measured, as plain data (written as JSON beside the Markdown)."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.inprocess import InProcessResult, KindTiming
from benchmarks.wrk import LoadResult


@dataclass(frozen=True)
class CpuUse:
    """Cores the server used during the measured rounds (CPU seconds / wall seconds)."""

    event_loop: float
    """The main thread: uvicorn's event loop (HTTP, routing, the batcher's coroutine)."""
    other_threads: float
    """Every other thread of the tree: inference, decode pool, child processes."""

    @property
    def total(self) -> float:
        return self.event_loop + self.other_threads


@dataclass(frozen=True)
class LoadPoint:
    """One server on one workload at one concurrency: the median of its rounds by requests a
    second."""

    server: str
    workload: str  # benchmarks.workloads.Workload.name
    pinned: bool
    result: LoadResult
    round_rates: tuple[float, ...]
    mean_batch: float | None
    cpu: CpuUse | None

    @property
    def concurrency(self) -> int:
        return self.result.concurrency


@dataclass(frozen=True)
class MemoryCheck:
    """Resident set of the service after warm-up and after many more requests."""

    server: str
    warm_bytes: int
    after_bytes: int
    requests_between: int

    @property
    def growth(self) -> float:
        return self.after_bytes / self.warm_bytes - 1.0


@dataclass
class Run:
    """Everything one ``python -m benchmarks.load`` measured."""

    environment: dict[str, str]
    commands: list[str]
    inprocess: list[InProcessResult] = field(default_factory=list)
    kinds: list[KindTiming] = field(default_factory=list)
    #: Bodies each workload rotates through, by workload name.
    workload_bodies: dict[str, int] = field(default_factory=dict)
    points: list[LoadPoint] = field(default_factory=list)
    memory: list[MemoryCheck] = field(default_factory=list)

    def point(
        self, server: str, concurrency: int, *, workload: str, pinned: bool = True
    ) -> LoadPoint | None:
        wanted = (server, workload, concurrency, pinned)
        for candidate in self.points:
            if (candidate.server, candidate.workload, candidate.concurrency, candidate.pinned) == (
                wanted
            ):
                return candidate
        return None
