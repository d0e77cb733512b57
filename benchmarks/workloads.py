"""What the load benchmark posts: named lists of bodies that wrk rotates through, from one
image (the single-image rows) to the hundreds of the realistic mix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from benchmarks.digit_image import BENCHMARK_PNG, CONTENT_TYPE, OFF_CENTRE_PNG
from benchmarks.mix import MixBody, by_workload
from benchmarks.wrk import Body


@dataclass(frozen=True)
class Workload:
    name: str
    bodies: tuple[Body, ...]


EXACT_MNIST: Final = Workload("exact MNIST PNG", ((BENCHMARK_PNG, CONTENT_TYPE),))
OFF_CENTRE_7: Final = Workload("off-centre 7", ((OFF_CENTRE_PNG, CONTENT_TYPE),))


def mix_workloads(folder: Path, entries: Sequence[MixBody]) -> list[Workload]:
    """ "all mixed", then one workload per group, from the mix written into ``folder``."""
    return [
        Workload(name, tuple((folder / e.file, e.content_type) for e in chosen))
        for name, chosen in by_workload(entries).items()
    ]
