"""The handwritten numbers the reader is measured on: deterministic, of the lengths and formats
they claim, ``tight`` inks never touching and ``touching`` with exactly one touching pair (by
the generator's own masks); and ``benchmarks.read_accuracy`` and ``read_speed`` running on a
few of them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import pytest
from PIL import Image

from benchmarks import read_accuracy, read_speed
from benchmarks.image_kinds import default_data_dir
from benchmarks.numbers import KINDS, Mask, NumberSample, make

REPOSITORY: Final = Path(__file__).resolve().parents[2]
SEEDS: Final = range(6)


@pytest.fixture(scope="module")
def mnist() -> None:
    """Skips the test where there are no MNIST files to make numbers of."""
    if not (default_data_dir() / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no MNIST test set in {default_data_dir()} (set DIGITS_DATA_DIR)")


def opened(sample: NumberSample) -> Image.Image:
    image = Image.open(io.BytesIO(sample.body))
    image.load()
    return image


def full_masks(sample: NumberSample) -> list[Mask]:
    """Each digit's ink as a mask of the whole image."""
    width, height = opened(sample).size
    masks = []
    for (x, y, w, h), mask in zip(sample.boxes, sample.masks, strict=True):
        whole = np.zeros((height, width), dtype=bool)
        whole[y : y + h, x : x + w] = mask
        masks.append(whole)
    return masks


def distance(a: Mask, b: Mask) -> int:
    """Chessboard distance between two inks: 0 overlapping, 1 touching, 2 one pixel apart."""
    to_a = cv2.distanceTransform((~a).astype(np.uint8), cv2.DIST_C, 3)
    return int(to_a[b].min())


def test_the_kinds() -> None:
    assert list(KINDS) == [
        "spaced",
        "tight",
        "touching",
        "form_baseline",
        "form_box",
        "form_comb",
        "photo",
    ]


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_is_deterministic_and_an_image_of_its_number(kind: str, mnist: None) -> None:
    samples = [make(kind, seed) for seed in SEEDS]
    assert samples == [make(kind, seed) for seed in SEEDS]  # body, label, kind and boxes
    assert len({s.body for s in samples}) == len(samples)
    for sample in samples:
        image = opened(sample)
        assert image.format == ("JPEG" if kind == "photo" else "PNG")
        if kind == "photo":
            assert image.size in ((640, 480), (800, 600))
        else:
            assert 40 <= image.height <= 400 and 40 <= image.width <= 2500, image.size
        assert sample.kind == kind and sample.label.isdigit()
        assert len(sample.boxes) == len(sample.masks) == len(sample.label)
        for (x, y, w, h), mask in zip(sample.boxes, sample.masks, strict=True):
            assert 0 <= x <= x + w <= image.width and 0 <= y <= y + h <= image.height
            assert mask.shape == (h, w) and mask[0].any() and mask[:, 0].any()
        lefts = [x for x, *_ in sample.boxes]
        assert lefts == sorted(lefts)  # left to right
        heights = [h for *_, h in sample.boxes]
        assert max(heights) <= 1.6 * min(heights)  # one writer


def test_kinds_and_sources_make_different_numbers(mnist: None) -> None:
    assert len({make(kind, 0).body for kind in KINDS}) == len(KINDS)
    if not (default_data_dir() / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("no MNIST training set")
    train = make("spaced", 0, source="train")
    assert train == make("spaced", 0, source="train")
    assert train.body != make("spaced", 0).body


@pytest.mark.parametrize(("kind", "shortest"), [("spaced", 1), ("touching", 2)])
def test_lengths_go_from_shortest_to_ten(kind: str, shortest: int, mnist: None) -> None:
    lengths = {len(make(kind, seed).label) for seed in range(40)}
    assert min(lengths) >= shortest and max(lengths) <= 10
    assert len(lengths) >= 7


def test_tight_inks_keep_1_to_3_px_apart(mnist: None) -> None:
    for seed in range(10):
        masks = full_masks(make("tight", seed))
        for i in range(1, len(masks)):
            assert all(distance(masks[j], masks[i]) >= 2 for j in range(i)), seed
            # as close as it goes: 1-3 px of paper from the digits before it
            assert 2 <= distance(np.logical_or.reduce(masks[:i]), masks[i]) <= 4, seed


def test_touching_has_exactly_one_touching_pair_and_it_is_adjacent(mnist: None) -> None:
    for seed in range(10):
        masks = full_masks(make("touching", seed))
        pairs = {
            (i, j): distance(masks[i], masks[j])
            for i in range(len(masks))
            for j in range(i + 1, len(masks))
        }
        touching = [pair for pair, d in pairs.items() if d == 0]
        assert len(touching) == 1, seed
        (i, j) = touching[0]
        assert j == i + 1
        assert all(d >= 2 for pair, d in pairs.items() if pair != (i, j)), seed


def test_per_digit_accuracy_counts_edits() -> None:
    assert read_accuracy.levenshtein("1234", "1234") == 0
    assert read_accuracy.levenshtein("12734", "1234") == 1
    assert read_accuracy.digits_right("123", "1234") == 3
    assert read_accuracy.digits_right("", "12") == 0
    assert read_accuracy.digits_right("9999999", "12") == 0


def test_read_accuracy_runs_on_a_few_numbers(
    mnist: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "read.md"
    argv = ["--per-kind", "2", "--models", "lenet5", "--kinds", "spaced", "photo"]
    argv += ["--model-dir", str(REPOSITORY / "models"), "--output", str(table)]
    argv += ["--misreads", str(tmp_path / "misreads")]
    assert read_accuracy.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed == table.read_text()
    rows = [line for line in printed.splitlines() if line.startswith("| lenet5 |")]
    assert [row.split(" | ")[1:3] for row in rows] == [
        ["spaced", "2"],
        ["photo", "2"],
        ["**all**", "4"],
    ]
    for row in rows:
        exact, with_length, per_digit = (float(c) for c in row.split(" | ")[3:6])
        assert 0 <= exact <= 100 and 0 <= with_length <= 100 and 0 <= per_digit <= 100
    for misread in (tmp_path / "misreads").glob("lenet5/*"):
        truth, read = misread.stem.split("_true")[1].split("_read")
        assert truth != read


def test_calibration_error_is_the_weighted_gap_between_confidence_and_exactness() -> None:
    assert read_accuracy.calibration_error([(1.0, True), (0.0, False)]) == 0.0
    # One bin at 0.95 holding one right and one wrong reading: a gap of 0.45.
    assert read_accuracy.calibration_error([(0.95, True), (0.95, False)]) == pytest.approx(0.45)
    assert read_accuracy.calibration_error([]) == 0.0


def test_read_speed_times_the_preprocessing_of_each_kind(
    mnist: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The preprocessing part only: the load part needs wrk and a free core (BENCHMARKS.md)."""
    assert read_speed.main(["--per-kind", "1", "--no-load"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    names = [row.split(" | ")[0].lstrip("| ") for row in rows[1:]]  # after the header
    assert names[1] == "6-digit canvas (spaced)" and names[2:] == list(KINDS)
    for row in rows[1:]:
        median_ms, candidates = float(row.split(" | ")[2]), float(row.split(" | ")[4].rstrip(" |"))
        assert median_ms > 0 and candidates >= 1
