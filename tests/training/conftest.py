"""Fixtures for the training package: the real MNIST files from the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from training.data import MnistSplits, load_mnist

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    # Two cores are shared by the tests and whatever else runs on the machine.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four MNIST IDX .gz files (env DIGITS_DATA_DIR)."""
    folder = Path(os.environ.get("DIGITS_DATA_DIR", REPO.parent / "shared" / "data" / "mnist"))
    if not folder.is_dir():
        pytest.fail(f"MNIST data folder {folder} is missing: set DIGITS_DATA_DIR")
    return folder


@pytest.fixture(scope="session")
def mnist_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mnist-cache")


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path, mnist_cache: Path) -> MnistSplits:
    """All of MNIST in memory, uncompressed into a per-session cache."""
    return load_mnist(mnist_dir, mnist_cache)
