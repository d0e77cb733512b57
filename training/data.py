"""MNIST as in-memory uint8 tensors: verified IDX files -> train / validation / test splits.

The shared data directory holds the four gzipped IDX files (read-only). They are uncompressed
into ``<cache_dir>/MNIST/raw/``, the layout ``torchvision.datasets.MNIST`` reads, after their
SHA-256 has been checked against the digests of the original files. The whole data set then
lives in memory as uint8 tensors (about 55 MB) and batches are made by indexing, which on a CPU
is far faster than a per-sample ``DataLoader`` with PIL transforms.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.datasets import MNIST

logger = logging.getLogger(__name__)

#: SHA-256 of each *uncompressed* IDX file, as published in the data directory's SHA256SUMS.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Pixel statistics of the MNIST training images scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

VALIDATION_SIZE = 5_000
SPLIT_SEED = 20_240_601


class DatasetError(RuntimeError):
    """The MNIST files are missing, unreadable or not the expected bytes."""


@dataclass(frozen=True)
class DigitSet:
    """A set of digits held in memory."""

    images: torch.Tensor  # (N, 28, 28) uint8, white ink on black
    labels: torch.Tensor  # (N,) int64

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.shape[1:] != (28, 28):
            raise ValueError(f"images must be (N, 28, 28) uint8, got {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("one label per image is required")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, count: int) -> DigitSet:
        """The first ``count`` digits (for quick runs and tests)."""
        return DigitSet(self.images[:count], self.labels[:count])


@dataclass(frozen=True)
class MnistSplits:
    """The three splits: fit on ``train``, choose and calibrate on ``validation``, report on
    ``test`` (used once, never to tune)."""

    train: DigitSet
    validation: DigitSet
    test: DigitSet
    split_seed: int
    sha256: dict[str, str]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _find_source(data_dir: Path, name: str) -> Path:
    """The gzipped (preferred) or plain IDX file ``name`` in ``data_dir``."""
    for candidate in (data_dir / f"{name}.gz", data_dir / name):
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"MNIST file {name}.gz (or {name}) not found in {data_dir.resolve()}; "
        "point --data-dir (or DIGITS_DATA_DIR) at the folder with the four MNIST IDX files"
    )


def _uncompress(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target``, gunzipping it if needed; atomic via a temporary name."""
    partial = target.with_suffix(".partial")
    opener = gzip.open if source.suffix == ".gz" else Path.open
    try:
        with opener(source, "rb") as reader, partial.open("wb") as writer:
            shutil.copyfileobj(reader, writer)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        partial.unlink(missing_ok=True)
        raise DatasetError(f"cannot read MNIST file {source.resolve()}: {error}") from error
    partial.replace(target)


def prepare_raw_files(data_dir: Path, cache_dir: Path) -> Path:
    """Uncompress and verify the four IDX files into ``<cache_dir>/MNIST/raw``; returns it.

    A cached file whose digest matches is reused. Raises :class:`DatasetError` naming the
    folder it looked in when a file is missing, and the file when its bytes are wrong.
    """
    if not data_dir.is_dir():
        raise DatasetError(
            f"MNIST data directory {data_dir.resolve()} does not exist; point --data-dir "
            "(or DIGITS_DATA_DIR) at the folder with the four MNIST IDX .gz files"
        )
    raw_dir = cache_dir / "MNIST" / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, expected in MNIST_SHA256.items():
        target = raw_dir / name
        if target.is_file() and file_sha256(target) == expected:
            continue
        source = _find_source(data_dir, name)
        _uncompress(source, target)
        actual = file_sha256(target)
        if actual != expected:
            target.unlink()
            raise DatasetError(
                f"MNIST file {source.resolve()} is corrupt: its uncompressed SHA-256 is "
                f"{actual}, expected {expected}"
            )
        logger.info("uncompressed %s into %s", source, target)
    return raw_dir


def _load_split(cache_dir: Path, *, train: bool) -> DigitSet:
    dataset = MNIST(root=str(cache_dir), train=train, download=False)
    return DigitSet(dataset.data.contiguous(), dataset.targets.to(torch.int64))


def split_validation(
    digits: DigitSet, validation_size: int, seed: int
) -> tuple[DigitSet, DigitSet]:
    """Hold ``validation_size`` random digits out of ``digits``; the permutation is seeded so
    every run (and every architecture) sees the same split."""
    if not 0 < validation_size < len(digits):
        raise ValueError(f"validation_size must be in (0, {len(digits)}), got {validation_size}")
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(seed))
    held_out, kept = order[:validation_size], order[validation_size:]
    return (
        DigitSet(digits.images[kept], digits.labels[kept]),
        DigitSet(digits.images[held_out], digits.labels[held_out]),
    )


def load_mnist(
    data_dir: Path,
    cache_dir: Path,
    validation_size: int = VALIDATION_SIZE,
    split_seed: int = SPLIT_SEED,
) -> MnistSplits:
    """Verified MNIST in memory: 55,000 train, 5,000 validation, 10,000 test digits."""
    prepare_raw_files(data_dir, cache_dir)
    train, validation = split_validation(
        _load_split(cache_dir, train=True), validation_size, split_seed
    )
    test = _load_split(cache_dir, train=False)
    return MnistSplits(train, validation, test, split_seed, dict(MNIST_SHA256))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 28, 28)`` -> float32 ``(B, 1, 28, 28)`` in [0, 1] (the package's input)."""
    return images.unsqueeze(1).to(torch.float32).div_(255.0)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> zero-mean, unit-variance network input (same shape)."""
    return (pixels - MNIST_MEAN) / MNIST_STD


def iterate_batches(
    digits: DigitSet,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    limit: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(pixels (B, 1, 28, 28) float32 in [0, 1], labels (B,))`` batches.

    Shuffled when a ``generator`` is given (training), in order otherwise (evaluation).
    ``limit`` stops after that many batches (dry runs).
    """
    count = len(digits)
    order = torch.randperm(count, generator=generator) if generator is not None else None
    for batch_number, start in enumerate(range(0, count, batch_size)):
        if limit is not None and batch_number >= limit:
            return
        if order is None:
            index = slice(start, start + batch_size)
            yield to_float(digits.images[index]), digits.labels[index]
        else:
            chosen = order[start : start + batch_size]
            yield to_float(digits.images[chosen]), digits.labels[chosen]


def batch_count(digits: DigitSet, batch_size: int, limit: int | None = None) -> int:
    """How many batches :func:`iterate_batches` yields."""
    full = -(-len(digits) // batch_size)
    return full if limit is None else min(full, limit)
