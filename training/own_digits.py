"""A user's labelled images as fine-tuning data: read, hashed, seen as the service sees them,
split.

The images go through the service's own imaging stage (:func:`service.imaging.preprocess`,
with the service's default pixel limit), so the network learns exactly the 28x28 digits the
service will feed it. That is the slow part (about a millisecond an image on one core), so
the result is cached in the run folder, keyed by the data's hash: a resumed or repeated run
reads it back.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from digits_client.labelled import DIGITS, LabelledDataError, LabelledSet, Skipped
from tqdm import tqdm

from service.errors import BadImage
from service.imaging import preprocess
from service.settings import Settings
from training.data import DigitSet

logger = logging.getLogger(__name__)

#: The service's default limit on an image's width x height: fine-tuning reads what it reads.
MAX_IMAGE_PIXELS: int = Settings.model_fields["max_image_pixels"].default


@dataclass(frozen=True)
class OwnDigits:
    """The usable images of a labelled set as MNIST-style digits, with what identifies them."""

    digits: DigitSet  # (N, 28, 28) uint8, white on black, as the service preprocesses them
    sha256: str  # of the sorted "relative path, label, file sha256" lines
    bytes: int  # the image files' total size
    skipped: list[Skipped]  # unreadable by the imaging stage (or by read_labelled)

    def per_digit(self) -> dict[str, int]:
        """Images per label, every digit listed."""
        counts = torch.bincount(self.digits.labels, minlength=10).tolist()
        return {digit: int(count) for digit, count in zip(DIGITS, counts, strict=True)}


def data_sha256(labelled: LabelledSet) -> tuple[str, int]:
    """The set's identity, and its size in bytes: SHA-256 over its sorted lines
    ``relative path<TAB>label<TAB>file SHA-256`` (renaming the folder changes nothing)."""
    root = labelled.source if labelled.source.is_dir() else labelled.source.parent
    lines, size = [], 0
    for image in labelled.images:
        data = image.path.read_bytes()
        size += len(data)
        name = image.path.relative_to(root) if image.path.is_relative_to(root) else image.path
        lines.append(f"{name.as_posix()}\t{image.label}\t{hashlib.sha256(data).hexdigest()}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest(), size


def prepare(labelled: LabelledSet, cache_dir: Path, *, strict: bool = False) -> OwnDigits:
    """Every image of ``labelled`` through the service's imaging stage (or the cached result).

    An image the imaging stage refuses (corrupt, no digit found) is skipped and listed; with
    ``strict`` it is a :class:`LabelledDataError` instead.
    """
    digest, size = data_sha256(labelled)
    cache = cache_dir / f"own-digits-{digest[:16]}.pt"
    if cache.is_file():
        state = torch.load(cache, weights_only=False)
        logger.info("read %d preprocessed images from %s", len(state["labels"]), cache)
        digits = DigitSet(state["images"], state["labels"])
        skipped = [Skipped(Path(path), reason) for path, reason in state["skipped"]]
    else:
        digits, skipped = _preprocess(labelled)
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial")
        torch.save(
            {
                "images": digits.images,
                "labels": digits.labels,
                "skipped": [(str(s.path), s.reason) for s in skipped],
            },
            partial,
        )
        partial.replace(cache)
    if skipped:
        listed = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        count = f"{len(skipped)} image{'s' if len(skipped) > 1 else ''}"
        if strict:
            raise LabelledDataError(f"{count} the service cannot read (--strict): {listed}{more}")
        logger.warning("skipped %s the service cannot read: %s%s", count, listed, more)
    return OwnDigits(digits, digest, size, [*labelled.skipped, *skipped])


def _preprocess(labelled: LabelledSet) -> tuple[DigitSet, list[Skipped]]:
    images: list[np.ndarray] = []
    labels: list[int] = []
    skipped: list[Skipped] = []
    for image in tqdm(
        labelled.images, desc="imaging", unit="img", leave=False, disable=not sys.stderr.isatty()
    ):
        try:
            digit = preprocess(image.path.read_bytes(), max_pixels=MAX_IMAGE_PIXELS)
        except BadImage as exc:
            skipped.append(Skipped(image.path, f"{exc.code}: {exc.message}"))
            continue
        except OSError as exc:
            skipped.append(Skipped(image.path, f"unreadable: {exc.strerror}"))
            continue
        images.append(np.rint(digit * 255.0).astype(np.uint8))  # (28, 28)
        labels.append(int(image.label))
    if not images:
        raise LabelledDataError(f"{labelled.source}: the service reads none of the images")
    stacked = torch.from_numpy(np.stack(images))  # (N, 28, 28) uint8
    return DigitSet(stacked, torch.tensor(labels, dtype=torch.int64)), skipped


def stratified_split(
    digits: DigitSet, held_out_fraction: float, seed: int
) -> tuple[DigitSet, DigitSet]:
    """``(train, held_out)``: each digit's images permuted by ``seed`` and
    ``held_out_fraction`` of them (at least one, never all) held out."""
    generator = torch.Generator().manual_seed(seed)
    train_index, held_index = [], []
    for label in range(10):
        members = (digits.labels == label).nonzero().flatten()
        if len(members) == 0:
            continue
        if len(members) < 2:
            raise LabelledDataError(f"digit {label} has one image: nothing to hold out")
        members = members[torch.randperm(len(members), generator=generator)]
        held = min(len(members) - 1, max(1, round(held_out_fraction * len(members))))
        held_index.append(members[:held])
        train_index.append(members[held:])
    train, held_out = torch.cat(train_index).sort().values, torch.cat(held_index).sort().values
    return (
        DigitSet(digits.images[train], digits.labels[train]),
        DigitSet(digits.images[held_out], digits.labels[held_out]),
    )
