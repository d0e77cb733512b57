from __future__ import annotations

from pathlib import Path

import torch

from training.report import (
    confusion_matrix,
    plot_confusion_matrix,
    plot_history,
    plot_worst_mistakes,
)
from training.train import EpochRecord

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_confusion_matrix_rows_are_true_labels() -> None:
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 2, 0])
    counts = confusion_matrix(labels, predicted, 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_plots_are_small_pngs(tmp_path: Path) -> None:
    history = [
        EpochRecord(epoch, 1.0 / epoch, 0.9, 1.2 / epoch, 0.88, 0.01, 1.0) for epoch in (1, 2, 3)
    ]
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(50, 28, 28, dtype=torch.uint8)
    images[:, 8:20, 12:16] = 255  # a "1" in each
    labels = torch.randint(0, 10, (50,), generator=generator)
    probabilities = torch.rand(50, 10, generator=generator).softmax(dim=1)
    paths = [
        plot_history(history, tmp_path / "curves.png", "t"),
        plot_confusion_matrix(labels, probabilities.argmax(dim=1), tmp_path / "cm.png", "t"),
        plot_worst_mistakes(images, labels, probabilities, tmp_path / "worst.png", "t"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert path.stat().st_size < 150_000
