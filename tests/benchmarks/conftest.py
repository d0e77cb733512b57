"""The MNIST test digits the benchmark tests make their images from."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from benchmarks import image_kinds
from benchmarks.image_kinds import Digit


@pytest.fixture(scope="session")
def digits() -> tuple[Digit, NDArray[np.uint8]]:
    """MNIST test images and labels (``$DIGITS_DATA_DIR``, else ``../shared/data/mnist``)."""
    data_dir = image_kinds.default_data_dir()
    if not (data_dir / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no MNIST test set in {data_dir} (set DIGITS_DATA_DIR)")
    return image_kinds.load_mnist_test(data_dir)
