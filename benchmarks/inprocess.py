"""Raw throughput in one process and one thread, no HTTP: what a core can do at best.

Per batch size: the forward pass alone (with softmax, as the service runs it), and the whole
per-image work the service does outside HTTP: decode + preprocess each image, stack the
batch, forward. ``python -m benchmarks.inprocess --model-dir models --model lenet5``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.digit_image import benchmark_png
from benchmarks.reference.package import load_model
from service.preprocess import preprocess

MAX_PIXELS = 40_000_000
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class InProcessResult:
    model: str
    batch_size: int
    forward_images_per_s: float
    end_to_end_images_per_s: float
    preprocess_us: float  # decode + preprocess, per image


def images_per_s(work: Callable[[], object], images: int, seconds: float) -> float:
    """Images a second of ``work`` (which handles ``images`` each call): median of 3 rounds
    of at least ``seconds / 3`` each, after a warm-up call."""
    work()
    rates = []
    for _ in range(3):
        calls = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / 3:
            work()
            calls += 1
        rates.append(calls * images / elapsed)
    return statistics.median(rates)


def measure(
    model_name: str,
    model: torch.jit.ScriptModule,
    png: bytes,
    batch_sizes: Sequence[int],
    seconds: float,
) -> list[InProcessResult]:
    def decode() -> np.ndarray:
        return preprocess(png, max_pixels=MAX_PIXELS)  # (28, 28)

    preprocess_us = 1e6 / images_per_s(decode, 1, seconds)
    results = []
    with torch.inference_mode():
        for size in batch_sizes:
            batch = torch.from_numpy(np.stack([decode()] * size))[:, None]  # (B, 1, 28, 28)

            def forward(batch: torch.Tensor = batch) -> np.ndarray:
                return torch.softmax(model(batch), dim=1).numpy()  # (B, 10)

            def end_to_end(size: int = size) -> np.ndarray:
                images = [decode() for _ in range(size)]
                return forward(torch.from_numpy(np.stack(images))[:, None])

            results.append(
                InProcessResult(
                    model=model_name,
                    batch_size=size,
                    forward_images_per_s=images_per_s(forward, size, seconds),
                    end_to_end_images_per_s=images_per_s(end_to_end, size, seconds),
                    preprocess_us=preprocess_us,
                )
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inprocess", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--model", action="append", help="repeatable; default: lenet5, default")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--seconds", type=float, default=1.5, help="per measurement")
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    parser.add_argument("--json", action="store_true", help="print JSON lines, not a table")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    torch.set_num_threads(1)
    png = benchmark_png()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    results = []
    for name in args.model or ["lenet5", "default"]:
        results += measure(name, load_model(args.model_dir, name), png, sizes, args.seconds)
    if args.json:
        _write("".join(json.dumps(asdict(r)) + "\n" for r in results))
    else:
        _write(markdown_table(results) + "\n")
    return 0


def markdown_table(results: Sequence[InProcessResult]) -> str:
    """One row per model and batch size."""
    lines = [
        "| model | batch | forward img/s | decode + preprocess + forward img/s "
        "| decode + preprocess us/img |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.batch_size} | {r.forward_images_per_s:,.0f} "
            f"| {r.end_to_end_images_per_s:,.0f} | {r.preprocess_us:.1f} |"
        )
    return "\n".join(lines)


def _write(text: str) -> None:
    """This CLI's output, on stdout on purpose."""
    sys.stdout.write(text)


if __name__ == "__main__":
    sys.exit(main())
