"""Raw throughput in one process and one thread, no HTTP: what a core can do at best.

Per batch size: the forward pass alone (with softmax, as the service runs it), and the whole
per-image work the service does outside HTTP: decode + preprocess each image, stack the
batch, forward. ``python -m benchmarks.inprocess --model-dir models --model lenet5``

With ``--kinds``: the median and mean time of ``preprocess()`` (decode included) per kind of
image, on the bodies of the load benchmark's realistic mix (``benchmarks.mix``; ``--mix DIR``
for one already written, else one is made from ``--data-dir``), next to Pillow's full decode
alone (the decode-only server's work). ``python -m benchmarks.inprocess --kinds --cpu 0``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.digit_image import benchmark_png
from benchmarks.image_kinds import default_data_dir, load_mnist_test
from benchmarks.mix import ALL_MIXED, PER_KIND, MixBody, read_manifest, write_mix
from benchmarks.reference import MAX_PIXELS
from benchmarks.reference.decode_only import decode_fully
from benchmarks.reference.package import load_model
from service.errors import ServiceError
from service.imaging import preprocess

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


@dataclass(frozen=True)
class KindTiming:
    """``preprocess()`` (decode included) on one kind's bodies of the mix, per call."""

    kind: str
    bodies: int
    mean_kib: float
    preprocess_median_us: float
    preprocess_mean_us: float
    decode_median_us: float  # Pillow's full decode alone
    rejected: int  # bodies preprocess refused (the service answers 4xx)


def time_kinds(folder: Path, entries: Sequence[MixBody], repeats: int) -> list[KindTiming]:
    """One row per kind of the mix in ``folder``, then one for all its bodies (each body once:
    the mix's weights). Each body is preprocessed once to warm up, then timed ``repeats``
    times, as is its decode alone."""
    times = {e.file: _time_body((folder / e.file).read_bytes(), repeats) for e in entries}
    kinds = dict.fromkeys(e.kind for e in entries)
    rows = [_summary(kind, [times[e.file] for e in entries if e.kind == kind]) for kind in kinds]
    return [*rows, _summary(ALL_MIXED, list(times.values()))]


@dataclass(frozen=True)
class _BodyTimes:
    size: int
    refused: bool
    preprocess_us: list[float]
    decode_us: list[float]


def _time_body(body: bytes, repeats: int) -> _BodyTimes:
    refused = not _preprocess_or_refuse(body)
    return _BodyTimes(
        size=len(body),
        refused=refused,
        preprocess_us=[_call_us(lambda: _preprocess_or_refuse(body)) for _ in range(repeats)],
        decode_us=[_call_us(lambda: decode_fully(body)) for _ in range(repeats)],
    )


def _summary(kind: str, bodies: Sequence[_BodyTimes]) -> KindTiming:
    preprocess_us = [t for b in bodies for t in b.preprocess_us]
    return KindTiming(
        kind=kind,
        bodies=len(bodies),
        mean_kib=statistics.fmean(b.size for b in bodies) / 1024,
        preprocess_median_us=statistics.median(preprocess_us),
        preprocess_mean_us=statistics.fmean(preprocess_us),
        decode_median_us=statistics.median(t for b in bodies for t in b.decode_us),
        rejected=sum(b.refused for b in bodies),
    )


def _preprocess_or_refuse(body: bytes) -> bool:
    """Whether ``preprocess`` took ``body`` (a refusal is work the service does too)."""
    try:
        preprocess(body, max_pixels=MAX_PIXELS)
    except ServiceError:
        return False
    return True


def _call_us(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) * 1e6


def kinds_table(rows: Sequence[KindTiming]) -> str:
    """One row per kind of the mix and one for all of it."""
    lines = [
        "| kind | bodies | mean KiB | preprocess median us | preprocess mean us "
        "| Pillow decode median us | refused |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.kind} | {r.bodies} | {r.mean_kib:,.1f} | {r.preprocess_median_us:,.0f} "
            f"| {r.preprocess_mean_us:,.0f} | {r.decode_median_us:,.0f} | {r.rejected} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.inprocess",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--model", action="append", help="repeatable; default: lenet5, default")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--seconds", type=float, default=1.5, help="per measurement")
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    parser.add_argument("--json", action="store_true", help="print JSON lines, not a table")
    parser.add_argument("--kinds", action="store_true", help="preprocess time per image kind")
    parser.add_argument("--mix", type=Path, help="with --kinds: a folder benchmarks.mix wrote")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--per-kind", type=int, default=PER_KIND, help="with --kinds, no --mix")
    parser.add_argument("--repeats", type=int, default=3, help="with --kinds: timed calls a body")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    torch.set_num_threads(1)
    if args.kinds:
        timings = _time_mix(args.mix, args.data_dir, args.per_kind, args.repeats)
        _write_results(timings, kinds_table(timings), as_json=args.json)
        return 0
    png = benchmark_png()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    results = []
    for name in args.model or ["lenet5", "default"]:
        results += measure(name, load_model(args.model_dir, name), png, sizes, args.seconds)
    _write_results(results, markdown_table(results), as_json=args.json)
    return 0


def _write_results(
    results: Sequence[InProcessResult | KindTiming], table: str, *, as_json: bool
) -> None:
    """JSON lines (what ``benchmarks.load`` reads), or the Markdown table."""
    if as_json:
        _write("".join(json.dumps(asdict(r)) + "\n" for r in results))
    else:
        _write(table + "\n")


def _time_mix(mix: Path | None, data_dir: Path, per_kind: int, repeats: int) -> list[KindTiming]:
    """:func:`time_kinds` on the mix in ``mix``, or on one written to a temporary folder."""
    if mix is not None:
        return time_kinds(mix, read_manifest(mix), repeats)
    with tempfile.TemporaryDirectory(prefix="digits-mix-") as scratch:
        images, labels = load_mnist_test(data_dir)
        entries = write_mix(Path(scratch), images, labels, per_kind=per_kind)
        return time_kinds(Path(scratch), entries, repeats)


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
