"""The image every benchmark sends: MNIST test digit #9 (a 9), as the 317-byte 28x28 8-bit
grey PNG that Pillow writes with its default settings. It is committed beside this module so
that the benchmark needs no data set."""

from __future__ import annotations

from pathlib import Path

BENCHMARK_PNG = Path(__file__).with_name("mnist_test_0009.png")
CONTENT_TYPE = "image/png"


def benchmark_png() -> bytes:
    return BENCHMARK_PNG.read_bytes()
