"""Shared fixtures and helpers for the imaging tests: real MNIST test digits, pictures of them
on paper, encoded images, and a small trained reader.

Images are made from real MNIST test digits (``benchmarks.image_kinds``) and by hand.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import nn

from benchmarks import image_kinds
from service.imaging import preprocess

REPO = Path(__file__).resolve().parents[3]
DATA_DIR = Path(os.environ.get("DIGITS_DATA_DIR", REPO.parent / "shared" / "data" / "mnist"))
#: A pixel limit well above every image made here.
MAX_PIXELS = 20_000_000

Digit = NDArray[np.uint8]
Mnist = tuple[Digit, NDArray[np.uint8]]


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mnist() -> Mnist:
    """Real MNIST test digits ``(10000, 28, 28)`` uint8, white on black, and their labels."""
    return image_kinds.load_mnist_test(DATA_DIR)


@pytest.fixture(scope="session")
def digit(mnist: Mnist) -> Digit:
    """One clearly written MNIST test digit (a 7)."""
    assert mnist[1][0] == 7
    return mnist[0][0]


@pytest.fixture(scope="session")
def reader() -> nn.Module:
    """A small MLP trained for a few seconds on MNIST training digits (~96 % on test).

    An MLP, not a CNN, on purpose: it is sensitive to shifts and scale, so it notices
    preprocessing that does not lay digits out as MNIST does.
    """
    train_images = image_kinds._read_idx(DATA_DIR / "train-images-idx3-ubyte.gz")[:20000]
    train_labels = image_kinds._read_idx(DATA_DIR / "train-labels-idx1-ubyte.gz")[:20000]
    inputs = torch.from_numpy(train_images.astype(np.float32) / 255.0).flatten(1)  # (N, 784)
    targets = torch.from_numpy(train_labels.astype(np.int64))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
        optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
        for _ in range(3):
            order = torch.randperm(len(inputs))
            for start in range(0, len(inputs), 128):
                batch = order[start : start + 128]
                loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return model.eval()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def read(model: nn.Module, images: NDArray[np.float32]) -> NDArray[np.int64]:
    """The model's argmax for ``(N, 28, 28)`` images in [0, 1]."""
    with torch.inference_mode():
        logits = model(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).flatten(1))
    return logits.argmax(dim=1).numpy()


def unit(pixels: NDArray[np.generic] | Image.Image) -> NDArray[np.float32]:
    """8-bit pixels (array or image) as float32 in [0, 1]."""
    return np.asarray(pixels, dtype=np.float32) / np.float32(255.0)


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    """``image`` saved by Pillow in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def run(data: bytes) -> NDArray[np.float32]:
    """The whole preprocessing of client bytes, under a generous pixel limit."""
    return preprocess(data, max_pixels=MAX_PIXELS)


def on_paper(digit: Digit, *, side: int = 200, paper: int = 235, ink: int = 30) -> Image.Image:
    """Dark ink on light paper (8-bit grey), the digit upscaled to fill ``side`` x ``side``."""
    coverage = np.asarray(
        Image.fromarray(digit, mode="L").resize((side, side), Image.Resampling.BICUBIC),
        dtype=np.float32,
    ) / np.float32(255.0)
    pixels = paper * (1 - coverage) + ink * coverage
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR (valid CRC) declares ``width`` x ``height`` and has no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def assert_mnist_like(array: NDArray[np.float32]) -> None:
    """The invariants of every preprocessed digit."""
    assert array.shape == (28, 28)
    assert array.dtype == np.float32
    assert float(array.min()) >= 0.0
    assert float(array.max()) <= 1.0


def centre_of_mass(array: NDArray[np.float32]) -> tuple[float, float]:
    """(row, column) of the centre of mass, pixel centres at integers."""
    total = float(array.sum())
    rows, cols = np.arange(array.shape[0]), np.arange(array.shape[1])
    return float(array.sum(axis=1) @ rows) / total, float(array.sum(axis=0) @ cols) / total


def ink_box(array: NDArray[np.float32]) -> tuple[int, int]:
    """Height and width of the bounding box of the non-zero pixels."""
    rows = np.flatnonzero(array.max(axis=1) > 0)
    cols = np.flatnonzero(array.max(axis=0) > 0)
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


#: Bodies that are no raster image at all (400 ``not_an_image``), by name.
NOT_IMAGES: dict[str, bytes] = {
    "random": bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
    "text": b"just some text, not a picture\n",
    "html": b"<!doctype html><html><body><img src=x></body></html>",
    "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
    "pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
    "json": b'{"image": "aGVsbG8="}',
}
