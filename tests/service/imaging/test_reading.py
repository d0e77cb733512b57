"""Reading whole numbers: segmentation on made pictures (each kind people send, each way
segmentation fails), classified by a real bundled model, and the bounds on what it accepts."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from PIL import Image

from benchmarks import numbers
from service.errors import BadImage, PayloadTooLarge
from service.imaging.form_lines import remove_form_lines
from service.imaging.reading import Candidates, choose_reading, find_candidates
from service.imaging.segments import find_atoms
from tests.service.imaging.conftest import DATA_DIR, MAX_PIXELS, Mnist

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(
    not (DATA_DIR / "t10k-images-idx3-ubyte.gz").exists(), reason="MNIST files absent"
)


@pytest.fixture(scope="module")
def model() -> torch.jit.ScriptModule:
    """The bundled default model, as the service loads it."""
    loaded: torch.jit.ScriptModule = torch.jit.load(
        str(REPO / "models" / "default" / "1" / "model.pt"), map_location="cpu"
    )
    return loaded.eval()


def read(
    model: torch.jit.ScriptModule, data: bytes, length: int | None = None, max_digits: int = 32
) -> str:
    candidates = find_candidates(data, max_pixels=MAX_PIXELS, max_digits=max_digits)
    return choose_reading(candidates, classify(model, candidates), length=length).number


def classify(model: torch.jit.ScriptModule, candidates: Candidates) -> NDArray[np.float32]:
    with torch.inference_mode():
        logits = model(torch.from_numpy(candidates.images[:, None]))
    return np.asarray(torch.softmax(logits, dim=1).numpy(), dtype=np.float32)


def png(grey: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG")
    return buffer.getvalue()


def on_paper(mnist: Mnist, indices: list[int], *, gap: int, scale: int = 3) -> NDArray[np.uint8]:
    """MNIST test digits side by side, cropped to their ink columns, ``gap`` px apart (at 28
    px a digit; negative: overlapping), dark on white, ``scale`` times larger."""
    strip = np.zeros((28, 0), dtype=np.uint8)
    for index in indices:
        digit = mnist[0][index]
        columns = np.flatnonzero(digit.max(axis=0) > 0)
        digit = digit[:, columns[0] : columns[-1] + 1]
        if strip.shape[1] == 0:
            strip = digit.copy()
            continue
        start = strip.shape[1] + gap
        width = max(strip.shape[1], start + digit.shape[1])
        grown = np.zeros((28, width), dtype=np.uint8)
        grown[:, : strip.shape[1]] = strip
        grown[:, start : start + digit.shape[1]] = np.maximum(
            grown[:, start : start + digit.shape[1]], digit
        )
        strip = grown
    padded = np.pad(strip, 10)
    big = cv2.resize(padded, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return np.asarray(255 - big, dtype=np.uint8)


def first_of(mnist: Mnist, label: int, skip: int = 0) -> int:
    return int(np.flatnonzero(mnist[1] == label)[skip])


def number_of(mnist: Mnist, text: str) -> list[int]:
    return [first_of(mnist, int(c)) for c in text]


# ---- each kind ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "at_least"),
    [
        ("spaced", 8),
        ("tight", 8),
        ("touching", 5),
        ("form_baseline", 8),
        ("form_box", 8),
        ("form_comb", 9),
        ("photo", 8),
    ],
)
def test_each_kind_reads_mostly_right(
    model: torch.jit.ScriptModule, kind: str, at_least: int
) -> None:
    """Ten numbers of each kind from the benchmark's set (MNIST test digits)."""
    samples = [numbers.make(kind, seed, source="test") for seed in range(10)]
    right = sum(read(model, s.body) == s.label for s in samples)
    assert right >= at_least


def test_a_given_length_is_kept_or_the_reading_has_no_confidence(
    model: torch.jit.ScriptModule,
) -> None:
    sample = numbers.make("spaced", 3, source="test")
    candidates = find_candidates(sample.body, max_pixels=MAX_PIXELS)
    probabilities = classify(model, candidates)
    exact = choose_reading(candidates, probabilities, length=len(sample.label))
    assert exact.number == sample.label and exact.confidence > 0.5
    for length in (1, len(sample.label) + 1):  # one digit cannot cover six; seven may fit
        reading = choose_reading(candidates, probabilities, length=length)
        assert len(reading.number) == length or reading.confidence == 0.0


# ---- each way segmentation fails -------------------------------------------------------------


def test_spaced_digits(model: torch.jit.ScriptModule, mnist: Mnist) -> None:
    assert read(model, png(on_paper(mnist, number_of(mnist, "4096"), gap=6))) == "4096"


def test_tight_digits_whose_boxes_overlap(model: torch.jit.ScriptModule, mnist: Mnist) -> None:
    assert read(model, png(on_paper(mnist, number_of(mnist, "4096"), gap=0))) == "4096"


def test_a_touching_pair_is_cut(model: torch.jit.ScriptModule, mnist: Mnist) -> None:
    picture = on_paper(mnist, number_of(mnist, "230"), gap=-2)  # each pair overlaps by 2 px
    atoms = find_atoms(_strokes(picture), max_atoms=96)
    assert atoms.count > 1  # the one piece of ink was cut at seams
    assert read(model, png(picture)) == "230"


def test_a_narrow_one_beside_a_wide_digit(model: torch.jit.ScriptModule, mnist: Mnist) -> None:
    assert read(model, png(on_paper(mnist, number_of(mnist, "101"), gap=2))) == "101"


def test_a_five_with_its_top_bar_detached(model: torch.jit.ScriptModule) -> None:
    paper = np.full((120, 240), 255, dtype=np.uint8)
    for x in (20, 130):  # two 5s drawn in two strokes: the bar apart from the body
        cv2.line(paper, (x + 22, 18), (x + 62, 18), 0, 7, cv2.LINE_AA)
        cv2.line(paper, (x + 20, 30), (x + 16, 56), 0, 7, cv2.LINE_AA)
        cv2.ellipse(paper, (x + 36, 76), (24, 24), 0, -150, 150, 0, 7, cv2.LINE_AA)
    assert read(model, png(paper)) == "55"


def test_a_baseline_under_the_digits_is_erased(model: torch.jit.ScriptModule, mnist: Mnist) -> None:
    picture = on_paper(mnist, number_of(mnist, "3852"), gap=5)
    bottom = int(np.flatnonzero((picture < 128).any(axis=1))[-1])
    cv2.line(picture, (5, bottom + 2), (picture.shape[1] - 5, bottom + 2), 0, 3)  # touching
    assert read(model, png(picture)) == "3852"


def test_a_box_around_the_digits_is_erased(model: torch.jit.ScriptModule, mnist: Mnist) -> None:
    picture = on_paper(mnist, number_of(mnist, "9170"), gap=5)
    height, width = picture.shape
    cv2.rectangle(picture, (6, 6), (width - 7, height - 7), 0, 2)
    ink = _strokes(picture)
    cleaned = remove_form_lines(ink)
    assert cleaned[6:9, width // 2].max() == 0  # the box's top line is gone
    assert cleaned.sum() > 0.8 * (ink.sum() - 4 * 2 * (width + height))  # the digits stay
    assert read(model, png(picture)) == "9170"


@pytest.mark.parametrize("degrees", [-3.0, 2.5])
def test_a_form_photographed_askew_loses_its_lines(
    model: torch.jit.ScriptModule, mnist: Mnist, degrees: float
) -> None:
    picture = on_paper(mnist, number_of(mnist, "9170"), gap=5)
    height, width = picture.shape
    cv2.rectangle(picture, (6, 6), (width - 7, height - 7), 0, 2)
    bottom = int(np.flatnonzero((picture[10:-10] < 128).any(axis=1))[-1]) + 10
    cv2.line(picture, (12, bottom + 2), (width - 12, bottom + 2), 0, 2)  # and a baseline
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    askew = cv2.warpAffine(picture, turn, (width, height), borderValue=255)
    assert read(model, png(np.asarray(askew, dtype=np.uint8))) == "9170"


def test_comb_cells_one_per_digit(model: torch.jit.ScriptModule, mnist: Mnist) -> None:
    cell, digits = 84, "2468"
    paper = np.full((110, cell * len(digits) + 20), 255, dtype=np.uint8)
    for position, text in enumerate(digits):
        digit = 255 - cv2.resize(mnist[0][first_of(mnist, int(text))], (84, 84))
        left = 10 + position * cell
        paper[14:98, left : left + 84] = np.minimum(paper[14:98, left : left + 84], digit)
        cv2.line(paper, (left, 8), (left, 102), 0, 2)
    cv2.rectangle(paper, (10, 8), (10 + cell * len(digits), 102), 0, 2)
    assert read(model, png(paper)) == digits


def test_a_photo_with_uneven_light(model: torch.jit.ScriptModule) -> None:
    sample = numbers.make("photo", 1, source="test")
    assert read(model, sample.body) == sample.label


# ---- choosing the reading --------------------------------------------------------------------


def test_the_reading_is_as_weak_as_its_weakest_digit(
    model: torch.jit.ScriptModule, mnist: Mnist
) -> None:
    candidates = find_candidates(
        png(on_paper(mnist, number_of(mnist, "12"), gap=8)), max_pixels=MAX_PIXELS
    )
    probabilities = classify(model, candidates)
    reading = choose_reading(candidates, probabilities)
    assert reading.number == "12"
    assert reading.confidence <= min(d.confidence for d in reading.digits)
    assert [d.box[0] for d in reading.digits] == sorted(d.box[0] for d in reading.digits)


def test_no_reading_of_the_length_asked_has_no_confidence(
    model: torch.jit.ScriptModule, mnist: Mnist
) -> None:
    candidates = find_candidates(
        png(on_paper(mnist, number_of(mnist, "7"), gap=0)), max_pixels=MAX_PIXELS
    )
    reading = choose_reading(candidates, classify(model, candidates), length=9)
    assert reading.number == "7" and reading.confidence == 0.0


# ---- bounds ----------------------------------------------------------------------------------


def test_a_blank_picture_has_no_digit() -> None:
    with pytest.raises(BadImage) as raised:
        find_candidates(png(np.full((100, 300), 255, dtype=np.uint8)), max_pixels=MAX_PIXELS)
    assert raised.value.code == "no_digit"


def test_more_digits_than_allowed(model: torch.jit.ScriptModule, mnist: Mnist) -> None:
    picture = png(on_paper(mnist, list(range(12)), gap=8, scale=2))
    with pytest.raises(BadImage) as raised:
        read(model, picture, max_digits=8)
    assert raised.value.code == "too_many_digits"


def test_thousands_of_specks_are_refused_or_bounded() -> None:
    rng = np.random.default_rng(7)
    paper = np.full((600, 800), 255, dtype=np.uint8)
    for y, x in zip(rng.integers(0, 598, 3000), rng.integers(0, 798, 3000), strict=True):
        paper[y : y + 2, x : x + 2] = 0
    try:
        candidates = find_candidates(png(paper), max_pixels=MAX_PIXELS, max_digits=32)
    except BadImage as refused:
        assert refused.code in {"no_digit", "too_many_digits"}
    else:
        assert len(candidates.spans) <= 5 * 3 * 32  # spans per atom, atoms per digit, digits


def test_noise_is_refused_or_read_within_bounds() -> None:
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (300, 500), dtype=np.uint8)
    try:
        candidates = find_candidates(png(noise), max_pixels=MAX_PIXELS)
    except BadImage as refused:
        assert refused.code in {"no_digit", "too_many_digits"}
    else:
        assert candidates.images.shape[1:] == (28, 28)


def test_a_picture_over_the_pixel_limit_is_refused_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge):
        find_candidates(png(np.full((1000, 1000), 255, dtype=np.uint8)), max_pixels=999_999)


def _strokes(picture: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Dark-on-white 8-bit -> strokes bright on exactly black, as the reader sees them."""
    ink = (255 - picture).astype(np.float32) / 255.0
    ink[ink < 0.12] = 0.0
    return ink
