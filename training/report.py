"""Pictures that go next to a package: learning curves, confusion matrix, worst mistakes.

Matplotlib runs with the non-interactive Agg backend (no display on a server); each function
writes one small PNG and closes its figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import torch

from training.train import EpochRecord

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # (the backend must be chosen first)

HISTORY_FILENAME = "curves.png"
CONFUSION_FILENAME = "confusion_matrix.png"
MISTAKES_FILENAME = "worst_mistakes.png"
RELIABILITY_FILENAME = "reliability.png"
DPI = 90


def plot_history(history: Sequence[EpochRecord], path: Path, title: str) -> Path:
    """Loss and accuracy per epoch, train (augmented, running mean) and validation."""
    epochs = [record.epoch for record in history]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_axes.plot(epochs, [r.train_loss for r in history], marker="o", label="train")
    loss_axes.plot(epochs, [r.validation_loss for r in history], marker="o", label="validation")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="loss")
    accuracy_axes.plot(epochs, [r.train_accuracy for r in history], marker="o", label="train")
    accuracy_axes.plot(
        epochs, [r.validation_accuracy for r in history], marker="o", label="validation"
    )
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """Counts (classes, classes): row = true label, column = predicted label."""
    flat = labels.long() * classes + predicted.long()
    return torch.bincount(flat, minlength=classes * classes).view(classes, classes)


def plot_confusion_matrix(
    labels: torch.Tensor, predicted: torch.Tensor, path: Path, title: str
) -> Path:
    """Confusion matrix of the test set, counts written in each off-diagonal cell."""
    counts = confusion_matrix(labels, predicted, 10)
    figure, axes = plt.subplots(figsize=(5.5, 5))
    # Log colour scale: the diagonal (~1,000) would otherwise wash out the few errors.
    axes.imshow((counts.double() + 1).log().numpy(), cmap="Blues")
    for true in range(10):
        for guess in range(10):
            value = int(counts[true, guess])
            if value:
                colour = "white" if true == guess else "black"
                axes.text(guess, true, str(value), ha="center", va="center", fontsize=7, c=colour)
    axes.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true", title=title)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def plot_worst_mistakes(
    images: torch.Tensor,
    labels: torch.Tensor,
    probabilities: torch.Tensor,
    path: Path,
    title: str,
    count: int = 24,
) -> Path:
    """The ``count`` most confident wrong predictions: image, true and predicted label.

    ``images`` (N, 28, 28) uint8, ``labels`` (N,), ``probabilities`` (N, 10).
    """
    confidence, predicted = probabilities.max(dim=1)
    wrong = (predicted != labels).nonzero().flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)][:count]
    columns = 8
    rows = max(1, -(-len(worst) // columns))
    figure, grid = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.35), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, index in zip(grid.flat, worst.tolist(), strict=False):
        axes.imshow(images[index].numpy(), cmap="gray", vmin=0, vmax=255)
        axes.set_title(
            f"{int(labels[index])}→{int(predicted[index])} {float(confidence[index]):.2f}",
            fontsize=8,
        )
    figure.suptitle(f"{title}: true→predicted, confidence ({len(wrong)} errors)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def plot_reliability(
    probabilities: torch.Tensor, labels: torch.Tensor, path: Path, title: str, bins: int = 15
) -> Path:
    """Reliability diagram: accuracy against mean confidence per equal-width confidence bin
    (the bins of :func:`training.calibration.expected_calibration_error`), bar widths the bins,
    the diagonal what perfect calibration would give; a log-scale count of each bin below.

    ``probabilities`` (N, 10), ``labels`` (N,).
    """
    confidence, predicted = probabilities.double().max(dim=1)
    correct = (predicted == labels).double()
    index = (confidence * bins).ceil().long().clamp(1, bins) - 1
    counts = torch.bincount(index, minlength=bins).double()
    hits = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    mean_confidence = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    filled = counts > 0
    accuracy = torch.where(filled, hits / counts.clamp(min=1), torch.zeros_like(hits))
    mean_confidence = torch.where(filled, mean_confidence / counts.clamp(min=1), 0.0)
    edges = torch.arange(bins, dtype=torch.float64) / bins
    figure, (axes, count_axes) = plt.subplots(
        2, 1, figsize=(4.5, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    axes.bar(edges.numpy(), accuracy.numpy(), width=1 / bins, align="edge", edgecolor="black",
             label="accuracy")  # fmt: skip
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    axes.scatter(mean_confidence[filled].numpy(), accuracy[filled].numpy(), color="red", s=10,
                 zorder=3, label="mean confidence")  # fmt: skip
    axes.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    axes.legend(loc="upper left", fontsize=8)
    count_axes.bar(edges.numpy(), counts.numpy(), width=1 / bins, align="edge", log=True)
    count_axes.set(xlabel="confidence", ylabel="digits")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path
