"""How well the service reads handwritten numbers: the reader in-process on ``benchmarks.numbers``.

For every kind of :mod:`benchmarks.numbers` and seeds ``--seed`` .. ``--seed + N - 1``, make the
number (bytes, as a client sends them), find its candidate digits once
(``service.imaging.reading.find_candidates``), classify them in one forward pass per model
and choose the reading (``choose_reading``), freely and with the number's length given. Prints
a markdown table per model and kind: exact-string accuracy, exact with the length given,
per-digit accuracy (per number ``max(0, len(truth) - levenshtein(read, truth))``, over all
truth digits), how many free readings are sure (confidence >= 0.9, the service's default
``uncertain`` threshold) and how many of those are exact, the expected calibration error of
the readings' confidence, mean candidates per reading; a refused image (``BadImage``) is a
misread.

    python -m benchmarks.read_accuracy --per-kind 200 --models default,lenet5 --source test
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import torch

from benchmarks.image_kinds import default_data_dir
from benchmarks.numbers import KINDS, NumberSample, make
from benchmarks.preprocess_accuracy import load_model, newest_models, write_output
from service.errors import ServiceError
from service.imaging.reading import Candidates, choose_reading, find_candidates
from service.packages.card import TORCHSCRIPT_FILENAME

logger = logging.getLogger(__name__)

MAX_PIXELS: Final = 40_000_000
ALL: Final = "all"


@dataclass
class Tally:
    """One model's readings of one kind (or of all kinds)."""

    numbers: int = 0
    exact: int = 0
    exact_with_length: int = 0
    digits_right: int = 0
    digits: int = 0
    candidates: int = 0  # over the images the reader took
    taken: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    readings: list[tuple[float, bool]] = field(default_factory=list)  # (confidence, exact)

    def add(self, other: Tally) -> None:
        self.numbers += other.numbers
        self.exact += other.exact
        self.exact_with_length += other.exact_with_length
        self.digits_right += other.digits_right
        self.digits += other.digits
        self.candidates += other.candidates
        self.taken += other.taken
        self.readings += other.readings
        for code, count in other.refused.items():
            self.refused[code] = self.refused.get(code, 0) + count


#: The service's default DIGITS_UNCERTAIN_BELOW: readings under it are routed to a person.
SURE: Final = 0.9


def calibration_error(readings: Sequence[tuple[float, bool]], bins: int = 10) -> float:
    """Expected calibration error of the readings' confidences: the mean gap, weighted by
    count, between confidence and exactness in ``bins`` equal-width bins."""
    total = 0.0
    for low in range(bins):
        inside = [
            (c, ok)
            for c, ok in readings
            if low / bins <= c < (low + 1) / bins or (low == bins - 1 and c == 1.0)
        ]
        if inside:
            gap = statistics.mean(c for c, _ in inside) - statistics.mean(ok for _, ok in inside)
            total += len(inside) * abs(gap)
    return total / max(1, len(readings))


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) between ``a`` and ``b``."""
    previous = list(range(len(b) + 1))
    for i, char in enumerate(a, start=1):
        current = [i]
        for j, other in enumerate(b, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char != other))
            )
        previous = current
    return previous[-1]


def digits_right(read: str, truth: str) -> int:
    """The truth's digits the reading got: its length less the edits between them, >= 0."""
    return max(0, len(truth) - levenshtein(read, truth))


@torch.inference_mode()
def read(
    model: torch.jit.ScriptModule, candidates: Candidates, length: int, device: str
) -> tuple[str, str, float]:
    """The number read freely and with ``length`` given ("" where the reader refuses it),
    and the free reading's confidence."""
    batch = torch.from_numpy(candidates.images[:, None]).to(device)  # (k, 1, 28, 28)
    # The packages' modules give logits (the temperature inside): softmax, as the service does.
    logits = model(batch)  # (k, 10)
    probabilities = np.asarray(torch.softmax(logits, dim=1).cpu().numpy(), dtype=np.float32)
    readings = []
    confidence = 0.0
    for given in (None, length):
        try:
            reading = choose_reading(candidates, probabilities, length=given)
        except ServiceError:
            readings.append("")
            continue
        readings.append(reading.number)
        if given is None:
            confidence = reading.confidence
    return readings[0], readings[1], confidence


def save_misread(out_dir: Path, sample: NumberSample, seed: int, reading: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".jpg" if sample.body.startswith(b"\xff\xd8") else ".png"
    name = f"{sample.kind}_{seed:05d}_true{sample.label}_read{reading or 'none'}{suffix}"
    (out_dir / name).write_bytes(sample.body)


def run_kind(
    kind: str,
    seeds: Sequence[int],
    models: dict[str, torch.jit.ScriptModule],
    args: argparse.Namespace,
) -> tuple[dict[str, Tally], list[float]]:
    """Every model's tally of ``kind``'s numbers, and the reader's time per number (ms)."""
    tallies = {name: Tally() for name in models}
    timings = []
    for seed in seeds:
        sample = make(kind, seed, args.source, args.data_dir)
        start = time.perf_counter()
        try:
            candidates: Candidates | None = find_candidates(sample.body, max_pixels=MAX_PIXELS)
        except ServiceError as exc:
            candidates, code = None, exc.code
        timings.append((time.perf_counter() - start) * 1e3)
        for name, model in models.items():
            tally = tallies[name]
            tally.numbers += 1
            tally.digits += len(sample.label)
            if candidates is None:
                tally.refused[code] = tally.refused.get(code, 0) + 1
                number = with_length = ""
                confidence = 0.0
            else:
                number, with_length, confidence = read(
                    model, candidates, len(sample.label), args.device
                )
                tally.taken += 1
                tally.candidates += len(candidates.images)
            tally.exact += number == sample.label
            tally.readings.append((confidence, number == sample.label))
            tally.exact_with_length += with_length == sample.label
            tally.digits_right += digits_right(number, sample.label)
            if number != sample.label and args.misreads is not None:
                save_misread(args.misreads / name, sample, seed, number)
    return tallies, timings


def format_table(results: dict[str, dict[str, Tally]], timings: dict[str, list[float]]) -> str:
    """Markdown: a row per model and kind, then the model's row over all kinds."""
    header = ["model", "kind", "numbers", "exact %", "exact, length given %", "per-digit %"]
    header += ["sure %", "exact when sure %", "ECE"]
    header += ["candidates / reading", "refused", "find ms (median)"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for model, per_kind in results.items():
        for kind, tally in per_kind.items():
            every = (
                [t for k in per_kind if k != ALL for t in timings[k]]
                if kind == ALL
                else timings[kind]
            )
            refused = sum(tally.refused.values())
            codes = ", ".join(f"{code}: {n}" for code, n in sorted(tally.refused.items()))
            cells = [model, f"**{kind}**" if kind == ALL else kind, str(tally.numbers)]
            cells += [
                f"{100 * n / max(1, tally.numbers):.1f}"
                for n in (tally.exact, tally.exact_with_length)
            ]
            cells.append(f"{100 * tally.digits_right / max(1, tally.digits):.1f}")
            sure = [ok for c, ok in tally.readings if c >= SURE]
            cells.append(f"{100 * len(sure) / max(1, tally.numbers):.1f}")
            cells.append(f"{100 * sum(sure) / len(sure):.1f}" if sure else "-")
            cells.append(f"{calibration_error(tally.readings):.3f}")
            cells.append(f"{tally.candidates / max(1, tally.taken):.1f}")
            cells.append(f"{refused}" + (f" ({codes})" if codes else ""))
            cells.append(f"{statistics.median(every):.0f}" if every else "-")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-kind", type=int, default=200, help="numbers per kind")
    parser.add_argument("--models", default="default,lenet5", help="comma-separated model names")
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--source", choices=("test", "train"), default="test", help="MNIST digits")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--seed", type=int, default=0, help="the first seed of each kind")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="MNIST IDX files")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument("--misreads", type=Path, help="folder for the misread images")
    args = parser.parse_args(argv)
    if args.per_kind <= 0:
        parser.error("--per-kind must be positive")
    args.models = [name for name in args.models.split(",") if name]
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    found = newest_models(args.model_dir)
    missing = [name for name in args.models if name not in found]
    if missing or not args.models:
        logger.error(
            "no %s for %s under %s", TORCHSCRIPT_FILENAME, missing or "any model", args.model_dir
        )
        return 1
    models = {name: load_model(found[name], args.device) for name in args.models}
    logger.info("models: %s on %s", ", ".join(f"{n} ({found[n]})" for n in models), args.device)
    seeds = range(args.seed, args.seed + args.per_kind)
    results: dict[str, dict[str, Tally]] = {name: {} for name in models}
    timings: dict[str, list[float]] = {}
    for kind in args.kinds:
        start = time.perf_counter()
        tallies, timings[kind] = run_kind(kind, seeds, models, args)
        for name, tally in tallies.items():
            results[name][kind] = tally
        logger.info("%s: %d numbers in %.1f s", kind, len(seeds), time.perf_counter() - start)
    for per_kind in results.values():
        overall = Tally()
        for tally in per_kind.values():
            overall.add(tally)
        per_kind[ALL] = overall
    table = format_table(results, timings)
    write_output(table)
    if args.output is not None:
        args.output.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
