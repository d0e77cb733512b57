"""``POST /read``: whole numbers from one picture, in-process through httpx's ASGI transport
on the bundled, trained default model (and once against a real server process).

The pictures are numbers made from MNIST test digits (``benchmarks.numbers``). The reader is
still being tuned, so exact answers are asserted only for clear numbers that read right
(spaced, and written in a form's comb of cells); elsewhere the shape of the answer is.
"""

from __future__ import annotations

import base64
import functools
import io
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks import image_kinds, numbers
from benchmarks.numbers import NumberSample
from service.api.schemas import Reading
from tests.service.api.test_routes import assert_error
from tests.service.conftest import copy_bundled, digit_png, running_app

pytestmark = pytest.mark.anyio

#: Settings().request_timeout_ms: no request here may take longer than that.
REQUEST_TIMEOUT_S = 5.0
#: Numbers the bundled default model reads right: (kind, seed).
CLEAR_NUMBERS = [("spaced", 1), ("spaced", 4), ("spaced", 6), ("form_comb", 2), ("form_comb", 7)]


@functools.cache
def number(kind: str, seed: int) -> NumberSample:
    """A number made of MNIST test digits (skips when the MNIST test set is not here)."""
    data_dir = image_kinds.default_data_dir()
    if not (data_dir / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no MNIST test set in {data_dir} (set DIGITS_DATA_DIR)")
    return numbers.make(kind, seed, source="test")


def size_of(body: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(body)) as picture:
        return picture.size


def png(pixels: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(body: bytes) -> bytes:
    """The picture flattened onto white paper and saved as JPEG."""
    with Image.open(io.BytesIO(body)) as picture:
        rgba = picture.convert("RGBA")
    paper = Image.new("RGB", rgba.size, "white")
    paper.paste(rgba, mask=rgba.getchannel("A"))
    buffer = io.BytesIO()
    paper.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def assert_reading(response: httpx.Response, picture: bytes) -> Reading:
    """A 200 whose body is a valid ``Reading`` that agrees with itself and the picture."""
    assert response.status_code == 200, response.text
    reading = Reading.model_validate(response.json())
    width, height = size_of(picture)
    assert reading.number == "".join(str(d.digit) for d in reading.digits)
    assert len(reading.digits) >= 1
    for digit in reading.digits:
        assert sum(digit.probabilities) == pytest.approx(1.0, abs=1e-4)
        assert digit.confidence == digit.probabilities[digit.digit] == max(digit.probabilities)
        box = digit.box
        assert box.x + box.width <= width and box.y + box.height <= height, (box, width, height)
    lefts = [d.box.x for d in reading.digits]
    assert lefts == sorted(lefts), "digits come left to right"
    assert reading.confidence <= min(d.confidence for d in reading.digits) + 1e-9
    assert reading.uncertain == (reading.confidence < 0.9)
    assert reading.candidates >= len(reading.digits)
    assert reading.batch_size >= reading.candidates  # all candidates in one forward pass
    assert reading.timing_ms.total >= reading.timing_ms.inference >= 0
    return reading


def assert_reads(response: httpx.Response, sample: NumberSample) -> Reading:
    """A right reading of ``sample``: its number, and each digit's box on that digit's ink."""
    reading = assert_reading(response, sample.body)
    assert reading.number == sample.label
    for (x, y, w, h), digit in zip(sample.boxes, reading.digits, strict=True):
        box = digit.box
        assert box.x <= x + w / 2 <= box.x + box.width, (digit.box, (x, y, w, h))
        assert box.y <= y + h / 2 <= box.y + box.height, (digit.box, (x, y, w, h))
    return reading


@pytest.fixture
def default_model_dir(model_dir: Path) -> Path:
    """The bundled default model, served as ``default`` (the service's default name)."""
    copy_bundled(model_dir, "default")
    return model_dir


# ---- reading numbers -------------------------------------------------------------------------


async def test_read_raw_png_numbers(default_model_dir: Path) -> None:
    async with running_app(model_dir=default_model_dir) as client:
        for kind, seed in CLEAR_NUMBERS:
            sample = number(kind, seed)
            response = await client.post(
                "/read", content=sample.body, headers={"content-type": "image/png"}
            )
            reading = assert_reads(response, sample)
            assert reading.model.name == "default"
            assert all(d.image is None for d in reading.digits)
            assert "image" not in response.json()["digits"][0]


async def test_read_accepts_jpeg_multipart_and_json_bodies(default_model_dir: Path) -> None:
    sample = number("form_comb", 2)
    photo = jpeg(sample.body)
    encoded = base64.b64encode(sample.body).decode()
    async with running_app(model_dir=default_model_dir) as client:
        responses = {
            "jpeg": await client.post(
                "/read", content=photo, headers={"content-type": "image/jpeg"}
            ),
            "multipart": await client.post(
                "/read", files={"file": ("number.png", sample.body, "image/png")}
            ),
            "json": await client.post("/read", json={"image": encoded}),
            "data-url": await client.post(
                "/read", json={"image": "data:image/png;base64," + encoded}
            ),
            "untyped": await client.post(
                "/read", content=sample.body, headers={"content-type": ""}
            ),
        }
    for how, response in responses.items():
        assert assert_reading(response, sample.body).number == sample.label, how


async def test_length_asks_for_that_many_digits(default_model_dir: Path) -> None:
    sample = number("spaced", 1)
    async with running_app(model_dir=default_model_dir) as client:
        exact = await client.post(f"/read?length={len(sample.label)}", content=sample.body)
        assert_reads(exact, sample)
        for length in (1, len(sample.label) - 1, len(sample.label) + 1, 32):
            response = await client.post(f"/read?length={length}", content=sample.body)
            reading = assert_reading(response, sample.body)
            # That many digits, or (no reading has that many) the best with confidence 0.
            if len(reading.digits) != length:
                assert reading.confidence == 0.0 and reading.uncertain, length


@pytest.mark.parametrize("length", ["0", "-1", "33", "99", "abc", "2.5"])
async def test_length_out_of_range_is_invalid_parameter(
    default_model_dir: Path, length: str
) -> None:
    sample = number("spaced", 1)
    async with running_app(model_dir=default_model_dir) as client:
        response = await client.post(f"/read?length={length}", content=sample.body)
    error = assert_error(response, 422, "invalid_parameter")
    assert "length" in str(error["message"])


async def test_length_is_capped_by_max_read_digits(default_model_dir: Path) -> None:
    sample = number("spaced", 4)
    assert len(sample.label) == 5
    async with running_app(model_dir=default_model_dir, max_read_digits=5) as client:
        assert_reads(await client.post("/read?length=5", content=sample.body), sample)
        too_long = await client.post("/read?length=6", content=sample.body)
        assert_error(too_long, 422, "invalid_parameter")


async def test_more_digits_than_max_read_digits_is_too_many_digits(
    default_model_dir: Path,
) -> None:
    sample = number("spaced", 1)
    assert len(sample.label) == 6
    async with running_app(model_dir=default_model_dir, max_read_digits=3) as client:
        response = await client.post("/read", content=sample.body)
    assert_error(response, 400, "too_many_digits")


async def test_explain_returns_each_digits_28x28_image(default_model_dir: Path) -> None:
    sample = number("form_comb", 2)
    async with running_app(model_dir=default_model_dir) as client:
        response = await client.post("/read?explain=true", content=sample.body)
    reading = assert_reads(response, sample)
    for digit in reading.digits:
        assert digit.image is not None
        with Image.open(io.BytesIO(base64.b64decode(digit.image, validate=True))) as seen:
            assert seen.format == "PNG" and seen.size == (28, 28) and seen.mode == "L"
            pixels = np.asarray(seen)
        assert pixels.max() > 128 and pixels[0].max() < 64, "white ink on black, centred"


async def test_named_model_and_unknown_models(default_model_dir: Path) -> None:
    copy_bundled(default_model_dir, "lenet5")
    sample = number("spaced", 4)
    async with running_app(model_dir=default_model_dir) as client:
        named = await client.post("/read?model=lenet5&version=1", content=sample.body)
        assert assert_reading(named, sample.body).model.model_dump() == {
            "name": "lenet5",
            "version": "1",
        }
        assert_error(await client.post("/read?model=nope", content=sample.body), 404, "not_found")
        no_version = await client.post("/read?model=lenet5&version=7", content=sample.body)
        assert_error(no_version, 404, "not_found")
        bad_name = await client.post("/read?model=Bad%20Name", content=sample.body)
        assert_error(bad_name, 422, "invalid_parameter")
        bad_explain = await client.post("/read?explain=maybe", content=sample.body)
        assert_error(bad_explain, 422, "invalid_parameter")


async def test_concurrent_reads_and_predictions_each_get_their_own_answer(
    default_model_dir: Path,
) -> None:
    samples = [number(kind, seed) for kind, seed in CLEAR_NUMBERS]
    reads: dict[int, httpx.Response] = {}
    predictions: dict[int, httpx.Response] = {}
    async with running_app(model_dir=default_model_dir, max_wait_ms=5.0) as client:

        async def read(index: int) -> None:
            reads[index] = await client.post("/read", content=samples[index].body)

        async def predict(digit: int) -> None:
            predictions[digit] = await client.post("/predict", content=digit_png(digit))

        with anyio.fail_after(4 * REQUEST_TIMEOUT_S):
            async with anyio.create_task_group() as group:
                for index in range(len(samples)):
                    group.start_soon(read, index)
                for digit in range(10):
                    group.start_soon(predict, digit)
    for index, sample in enumerate(samples):
        assert_reads(reads[index], sample)
    for digit, response in predictions.items():
        assert response.status_code == 200, response.text
        assert response.json()["digit"] == digit


# ---- /predict says when a picture holds several digits ---------------------------------------


async def test_predict_counts_the_digits_it_sees(default_model_dir: Path) -> None:
    sample = number("spaced", 1)
    async with running_app(model_dir=default_model_dir) as client:
        several = await client.post("/predict", content=sample.body)
        one = await client.post("/predict", content=digit_png(3))
    assert several.status_code == 200, several.text
    assert several.json()["digits_seen"] >= 2
    assert one.status_code == 200, one.text
    assert one.json()["digits_seen"] == 1
    assert one.json()["digit"] == 3


# ---- bad and hostile pictures ----------------------------------------------------------------


async def test_a_blank_picture_has_no_digit(default_model_dir: Path) -> None:
    """The other bad bodies are tested for /predict and /read alike (test_routes.py)."""
    blank = png(np.full((120, 300), 255, dtype=np.uint8))
    async with running_app(model_dir=default_model_dir) as client:
        assert_error(await client.post("/read", content=blank), 400, "no_digit")


def noise() -> bytes:
    return png(np.random.default_rng(0).integers(0, 256, (480, 640), dtype=np.uint8))


def specks(count: int = 3000) -> bytes:
    """``count`` random 2x2 black dots on white, 800x600."""
    rng = np.random.default_rng(1)
    pixels = np.full((600, 800), 255, dtype=np.uint8)
    for x, y in zip(rng.integers(0, 798, count), rng.integers(0, 598, count), strict=True):
        pixels[y : y + 2, x : x + 2] = 0
    return png(pixels)


def strip(count: int = 40, cell: int = 56, gap: int = 24) -> bytes:
    """``count`` MNIST digits (0-9 over and over), dark on white, spaced, in one row."""
    pixels = np.full((cell + 40, count * (cell + gap) + gap), 255, dtype=np.uint8)
    for index in range(count):
        with Image.open(io.BytesIO(digit_png(index % 10))) as digit:
            ink = np.asarray(digit.convert("L").resize((cell, cell)))
        x = gap + index * (cell + gap)
        pixels[20 : 20 + cell, x : x + cell] = 255 - ink
    return png(pixels)


def one_digit_on_paper() -> bytes:
    """One MNIST digit (a 7), dark on a light page."""
    with Image.open(io.BytesIO(digit_png(7))) as digit:
        ink = np.asarray(digit.convert("L").resize((84, 84)), dtype=np.int32)
    pixels = np.full((200, 240), 230, dtype=np.uint8)
    pixels[60:144, 80:164] = 230 - ink * 200 // 255
    return png(pixels)


HOSTILE = {
    "noise": noise,
    "specks": specks,
    "strip-of-40": strip,
    "black": lambda: png(np.zeros((300, 400), dtype=np.uint8)),
    "one-pixel": lambda: png(np.zeros((1, 1), dtype=np.uint8)),
    "thin-line": lambda: png(np.pad(np.zeros((2, 600), np.uint8), 40, constant_values=255)),
}


@pytest.mark.parametrize("picture", list(HOSTILE))
async def test_hostile_pictures_get_a_4xx_or_a_reading_in_time(
    default_model_dir: Path, picture: str
) -> None:
    body = HOSTILE[picture]()
    async with running_app(model_dir=default_model_dir) as client:
        started = time.perf_counter()
        with anyio.fail_after(REQUEST_TIMEOUT_S):
            response = await client.post("/read", content=body)
        elapsed_s = time.perf_counter() - started
        assert response.status_code < 500, response.text
        if response.status_code == 200:
            reading = assert_reading(response, body)
            assert len(reading.digits) <= 32
        else:
            assert_error(response, response.status_code)
            assert 400 <= response.status_code < 500
        # ...and the service still reads afterwards.
        sample = number("spaced", 4)
        assert_reads(await client.post("/read", content=sample.body), sample)
    assert elapsed_s < REQUEST_TIMEOUT_S


async def test_a_strip_of_40_digits_is_too_many_by_default(default_model_dir: Path) -> None:
    async with running_app(model_dir=default_model_dir) as client:
        response = await client.post("/read", content=strip(40))
    assert_error(response, 400, "too_many_digits")


async def test_more_candidates_than_a_batch_are_read_in_passes(default_model_dir: Path) -> None:
    body = strip(40)
    async with running_app(
        model_dir=default_model_dir, max_read_digits=64, max_batch_size=8
    ) as client:
        with anyio.fail_after(REQUEST_TIMEOUT_S):
            response = await client.post("/read", content=body)
    reading = assert_reading(response, body)
    assert reading.candidates > 8
    assert len(reading.digits) <= 64


@pytest.mark.parametrize("picture", ["mnist-28x28", "on-paper"])
async def test_a_picture_of_one_digit_reads_as_a_one_digit_number(
    default_model_dir: Path, picture: str
) -> None:
    body = digit_png(7) if picture == "mnist-28x28" else one_digit_on_paper()
    async with running_app(model_dir=default_model_dir) as client:
        response = await client.post("/read", content=body)
    reading = assert_reading(response, body)
    assert reading.number == "7"


# ---- a real server process -------------------------------------------------------------------


@pytest.mark.slow
def test_read_on_a_real_server(service_url: str) -> None:
    sample = number("spaced", 4)
    response = httpx.post(
        service_url + "/read",
        content=sample.body,
        headers={"content-type": "image/png"},
        timeout=30.0,
    )
    reading = assert_reading(response, sample.body)
    assert reading.model.name == "lenet5"
    assert len(reading.digits) == len(reading.number) >= 1
    width, height = size_of(sample.body)
    for digit in reading.digits:
        box = digit.box
        assert 0 <= box.x < box.x + box.width <= width
        assert 0 <= box.y < box.y + box.height <= height
