"""How well the served models read each kind of image, after the service's imaging stage.

For N MNIST test digits (the same digits for every kind), make each image kind from
``benchmarks.image_kinds`` (bytes, as a client would send them), run ``preprocess`` and every
model in ``--model-dir`` (the newest version of each, loaded with plain ``torch.jit.load``),
and print a table of accuracy per kind per model. The first row, ``reference``, feeds the
raw MNIST arrays to the models without any preprocessing: the kinds should come close to it.

    python -m benchmarks.preprocess_accuracy --model-dir models --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from benchmarks.image_kinds import KINDS, default_data_dir, load_mnist_test
from service.errors import ServiceError
from service.imaging import encode_png, preprocess
from service.packages.card import TORCHSCRIPT_FILENAME, version_key

logger = logging.getLogger(__name__)

REFERENCE = "reference"
#: Generous: the photos are 640x480; the service's own limit is a setting.
MAX_PIXELS = 50_000_000


@dataclass
class KindResult:
    """Outcome of one image kind: inputs the models saw, rejections and timings."""

    kind: str
    images: NDArray[np.float32]  # (N, 28, 28); zeros where preprocessing refused the image
    accepted: NDArray[np.bool_]  # (N,)
    preprocess_us: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


def newest_models(model_dir: Path) -> dict[str, Path]:
    """``{name: path of model.pt}`` for the newest numeric version of every model."""
    found: dict[str, Path] = {}
    for name_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
        versions = [
            v
            for v in name_dir.iterdir()
            if v.is_dir() and v.name.isdigit() and (v / TORCHSCRIPT_FILENAME).is_file()
        ]
        if versions:
            newest = max(versions, key=lambda v: version_key(v.name))
            found[name_dir.name] = newest / TORCHSCRIPT_FILENAME
    return found


def load_model(path: Path, device: str) -> torch.jit.ScriptModule:
    """A package's TorchScript file, as the service loads it, in eval mode."""
    with warnings.catch_warnings():  # TorchScript is the packages' format; torch calls it old
        warnings.simplefilter("ignore", FutureWarning)
        module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
            str(path), map_location=device
        )
    return module.eval()


def run_kind(kind: str, digits: NDArray[np.uint8], seeds: Sequence[int]) -> KindResult:
    """Make every digit into ``kind`` and preprocess it, timing ``preprocess`` alone."""
    maker = KINDS[kind]
    images = np.zeros((len(digits), 28, 28), dtype=np.float32)
    accepted = np.zeros(len(digits), dtype=bool)
    result = KindResult(kind, images, accepted)
    for row, (digit, seed) in enumerate(zip(digits, seeds, strict=True)):
        data = maker(digit, seed)
        start = time.perf_counter()
        try:
            images[row] = preprocess(data, max_pixels=MAX_PIXELS)
            accepted[row] = True
        except ServiceError as exc:
            result.errors[exc.code] = result.errors.get(exc.code, 0) + 1
        result.preprocess_us.append((time.perf_counter() - start) * 1e6)
    return result


@torch.inference_mode()
def predict(
    model: torch.jit.ScriptModule, images: NDArray[np.float32], device: str
) -> NDArray[np.int64]:
    """Argmax class of each ``(N, 28, 28)`` image, in batches."""
    predictions = []
    for start in range(0, len(images), 512):
        batch = torch.from_numpy(images[start : start + 512]).unsqueeze(1).to(device)  # (B,1,28,28)
        predictions.append(model(batch).argmax(dim=1).cpu().numpy())
    return np.concatenate(predictions)


def save_misreads(
    out_dir: Path, result: KindResult, predicted: NDArray[np.int64], labels: NDArray[np.uint8]
) -> None:
    """Write what the model saw for each misread image, named by kind, index and classes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for row in np.flatnonzero((predicted != labels) & result.accepted)[:50]:
        name = f"{result.kind}_{row}_true{labels[row]}_read{predicted[row]}.png"
        (out_dir / name).write_bytes(encode_png(result.images[row]))


def format_table(
    models: Sequence[str],
    accuracy: dict[str, dict[str, float]],
    results: dict[str, KindResult],
    count: int,
) -> str:
    """Markdown table: one row per kind, accuracy (%) per model, rejections, preprocess time."""
    header = ["kind", *models, "rejected", "preprocess median (us)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind, per_model in accuracy.items():
        cells = [kind, *(f"{100 * per_model[m]:.2f}" for m in models)]
        if kind in results:
            result = results[kind]
            rejected = count - int(result.accepted.sum())
            errors = ", ".join(f"{code}: {n}" for code, n in sorted(result.errors.items()))
            cells.append(f"{rejected}" + (f" ({errors})" if errors else ""))
            cells.append(f"{statistics.median(result.preprocess_us):.0f}")
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_output(text: str) -> None:
    """The report is this CLI's output: write it to stdout (logs go to stderr)."""
    sys.stdout.write(text)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="MNIST IDX files (default: $DIGITS_DATA_DIR, else ../shared/data/mnist)",
    )
    parser.add_argument("--per-kind", type=int, default=1000, help="digits per image kind")
    parser.add_argument("--seed", type=int, default=0, help="picks the digits and their images")
    parser.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=list(KINDS))
    parser.add_argument("--save-misreads", type=Path, help="folder for what misread images became")
    args = parser.parse_args(argv)
    if args.per_kind <= 0:
        parser.error("--per-kind must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_files = newest_models(args.model_dir)
    if not model_files:
        logger.error("no model packages with %s under %s", TORCHSCRIPT_FILENAME, args.model_dir)
        return 1
    models = {name: load_model(path, device) for name, path in model_files.items()}
    logger.info("models: %s on %s", ", ".join(f"{n} ({p})" for n, p in model_files.items()), device)

    images, labels = load_mnist_test(args.data_dir)
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(len(images), size=min(args.per_kind, len(images)), replace=False)
    digits, truth = images[chosen], labels[chosen]
    seeds = [args.seed * 1_000_003 + int(i) for i in chosen]

    reference = digits.astype(np.float32) / 255.0
    accuracy: dict[str, dict[str, float]] = {
        REFERENCE: {
            n: float(np.mean(predict(m, reference, device) == truth)) for n, m in models.items()
        }
    }
    results: dict[str, KindResult] = {}
    for kind in args.kinds:
        start = time.perf_counter()
        result = run_kind(kind, digits, seeds)
        results[kind] = result
        accuracy[kind] = {}
        for name, model in models.items():
            predicted = predict(model, result.images, device)
            correct = (predicted == truth) & result.accepted  # a refused image is a miss
            accuracy[kind][name] = float(np.mean(correct))
            if args.save_misreads is not None:
                save_misreads(args.save_misreads / name, result, predicted, truth)
        logger.info("%s: %d images in %.1f s", kind, len(digits), time.perf_counter() - start)
    write_output(format_table(list(models), accuracy, results, len(digits)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
