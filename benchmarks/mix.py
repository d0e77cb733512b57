"""The realistic mix: what users send, as files for the load benchmark to post in rotation.

Every kind of :data:`benchmarks.image_kinds.KINDS` is made ``per_kind`` times, each body from
its own MNIST *test* digit (no digit is used twice), and written to a folder with a manifest,
``manifest.tsv`` (file, kind, group, content type, label). The kinds are grouped as users
send them (the groups of issue #11's table):

- exact MNIST 28x28 PNGs: ``mnist_png``;
- canvas exports: ``canvas_png``, ``canvas_wide_png``;
- paper, scanned or photographed: ``photo_jpeg``, ``notebook_jpeg``, ``scan_png``,
  ``scan_tiff``, ``paper_jpeg``;
- phone photos of a note: ``phone_photo_jpeg``;
- other encodings: ``odd_encoding``.

"all mixed" is every body once per rotation, so each *kind* has the same weight (1/10 of the
requests with the ten kinds: exact MNIST 10 %, canvas 20 %, paper 50 %, phone photos 10 %,
other encodings 10 %). The manifest lists the bodies round-robin by kind, so that a rotation
through it alternates kinds instead of sending forty of one kind in a row.

``python -m benchmarks.mix OUT [--per-kind 40] [--data-dir ../shared/data/mnist]``
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from benchmarks.image_kinds import KINDS, Digit, content_type, default_data_dir, load_mnist_test

logger = logging.getLogger(__name__)

ALL_MIXED: Final = "all mixed"
GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "exact MNIST 28x28 PNGs": ("mnist_png",),
    "canvas exports": ("canvas_png", "canvas_wide_png"),
    "paper, scanned or photographed": (
        "photo_jpeg",
        "notebook_jpeg",
        "scan_png",
        "scan_tiff",
        "paper_jpeg",
    ),
    "phone photos of a note": ("phone_photo_jpeg",),
    "other encodings": ("odd_encoding",),
}
GROUP_OF: Final[dict[str, str]] = {kind: group for group, kinds in GROUPS.items() for kind in kinds}
MANIFEST: Final = "manifest.tsv"
PER_KIND: Final = 40
_EXTENSIONS: Final = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/bmp": "bmp",
    "image/tiff": "tif",
    "image/gif": "gif",
}


@dataclass(frozen=True)
class MixBody:
    """One body of the mix, as the manifest lists it."""

    file: str  # relative to the mix's folder
    kind: str
    group: str
    content_type: str
    label: int


def make_bodies(
    images: Digit, labels: NDArray[np.uint8], *, per_kind: int = PER_KIND, seed: int = 0
) -> Iterator[tuple[MixBody, bytes]]:
    """Every kind ``per_kind`` times, round-robin by kind, each from a distinct MNIST digit
    (drawn with ``seed``); the ``n``-th body of a kind has the image seed ``seed * 1_000_003 +
    n``, so consecutive seeds take :func:`~benchmarks.image_kinds.odd_encoding` through all
    of its encodings."""
    if len(KINDS) != len(GROUP_OF) or set(KINDS) != set(GROUP_OF):
        raise ValueError("every kind needs exactly one group")
    chosen = np.random.default_rng(seed).choice(len(images), per_kind * len(KINDS), replace=False)
    digits = iter(chosen)
    for n in range(per_kind):
        for kind, make in KINDS.items():
            index = int(next(digits))
            body = make(images[index], seed * 1_000_003 + n)
            media_type = content_type(body)
            name = f"{n:03d}-{kind}-{index:05d}.{_EXTENSIONS[media_type]}"
            yield MixBody(name, kind, GROUP_OF[kind], media_type, int(labels[index])), body


def write_mix(
    folder: Path,
    images: Digit,
    labels: NDArray[np.uint8],
    *,
    per_kind: int = PER_KIND,
    seed: int = 0,
) -> list[MixBody]:
    """Write the mix's bodies and ``manifest.tsv`` into ``folder``; return the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for entry, body in make_bodies(images, labels, per_kind=per_kind, seed=seed):
        (folder / entry.file).write_bytes(body)
        entries.append(entry)
    with (folder / MANIFEST).open("w", newline="") as manifest:
        writer = csv.writer(manifest, delimiter="\t", lineterminator="\n")
        writer.writerow(f.name for f in fields(MixBody))
        writer.writerows(astuple(entry) for entry in entries)
    return entries


def read_manifest(folder: Path) -> list[MixBody]:
    """The manifest :func:`write_mix` wrote into ``folder``."""
    with (folder / MANIFEST).open(newline="") as manifest:
        rows = csv.DictReader(manifest, delimiter="\t")
        return [
            MixBody(row["file"], row["kind"], row["group"], row["content_type"], int(row["label"]))
            for row in rows
        ]


def by_workload(entries: Sequence[MixBody]) -> dict[str, list[MixBody]]:
    """``{"all mixed": every body, group: its bodies, ...}``, each in manifest order."""
    chosen = {ALL_MIXED: list(entries)}
    for group in GROUPS:
        chosen[group] = [e for e in entries if e.group == group]
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mix",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, help="folder to write the bodies and manifest into")
    parser.add_argument("--per-kind", type=int, default=PER_KIND)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images, labels = load_mnist_test(args.data_dir)
    entries = write_mix(args.out, images, labels, per_kind=args.per_kind, seed=args.seed)
    total = sum((args.out / e.file).stat().st_size for e in entries)
    logger.info("%d bodies, %.1f MiB, in %s", len(entries), total / 2**20, args.out)
    for group, count in Counter(e.group for e in entries).items():
        logger.info("  %s: %d", group, count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
