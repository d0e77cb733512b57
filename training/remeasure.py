"""Figures a package's card gained after it was exported, measured from its file:
``python -m training remeasure``.

Today that is the test-set calibration (``calibration.test_ece``, with ``reliability.png``),
which cards written before 2026-12-02 lack. The file's test accuracy is measured again first:
a card whose file no longer scores what it says is an error, not something to paper over.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from service.packages.card import ModelCard
from service.packages.verification import read_verified_card
from training.calibration import expected_calibration_error
from training.data import MnistSplits
from training.export import ExportError, load_torchscript, write_card
from training.report import RELIABILITY_FILENAME, plot_reliability
from training.train import predict_logits

logger = logging.getLogger(__name__)

#: How far the re-measured test accuracy may be from the card's (float noise only).
ACCURACY_TOLERANCE = 1e-4


def remeasure(package_dir: Path, splits: MnistSplits) -> ModelCard:
    """Measure the package's file on the MNIST test set; write its test ECE into the card and
    its reliability diagram beside it. Returns the new card."""
    card = read_verified_card(package_dir)
    module = load_torchscript(package_dir / card.files.torchscript.path)
    logits = predict_logits(module, splits.test, device=torch.device("cpu"), normalised_input=False)
    accuracy = float((logits.argmax(dim=1) == splits.test.labels).double().mean())
    same_test = card.metrics.test_samples == len(splits.test)
    if same_test and abs(accuracy - card.metrics.test_accuracy) > ACCURACY_TOLERANCE:
        raise ExportError(
            f"{package_dir}: the file scores {accuracy:.4f} on the test set, its card says "
            f"{card.metrics.test_accuracy:.4f}"
        )
    ece = expected_calibration_error(logits, splits.test.labels)
    plot_reliability(
        logits.softmax(dim=1),
        splits.test.labels,
        package_dir / RELIABILITY_FILENAME,
        f"{card.name}: MNIST test, calibrated",
    )
    calibration = card.calibration.model_copy(update={"test_ece": ece})
    updated = card.model_copy(update={"calibration": calibration})
    write_card(updated, package_dir)
    logger.info("%s/%s: test ECE %.4f (accuracy %.4f)", card.name, card.version, ece, accuracy)
    return updated
