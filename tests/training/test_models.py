"""The packages committed in ``models/``: intact, honest about their accuracy, on target."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from service.packages.card import ModelCard, sha256_of
from training.architectures import ARCHITECTURES, TRAIN_ALL, get_architecture
from training.data import MNIST_SHA256, MnistSplits, to_float
from training.export import load_torchscript

MODELS = Path(__file__).resolve().parents[2] / "models"
PACKAGES = sorted(path.parent for path in MODELS.glob("*/*/metadata.json"))


def test_every_architecture_trained_alone_has_a_package_of_its_name() -> None:
    names = {package.parent.name for package in PACKAGES}
    assert names >= set(TRAIN_ALL)
    assert {ModelCard.read(package).architecture for package in PACKAGES} <= set(ARCHITECTURES)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_package_files_match_their_card(package: Path) -> None:
    card = ModelCard.read(package)
    assert (card.name, card.version) == (package.parent.name, package.name)
    described = card.files.torchscript
    path = package / described.path
    assert path.stat().st_size == described.bytes
    assert sha256_of(path) == described.sha256
    # What the service loads is all that is shipped besides the card and its pictures.
    assert sorted(p.name for p in package.iterdir() if p.suffix not in (".json", ".png")) == [
        "model.pt"
    ]
    assert card.dataset.sha256 == MNIST_SHA256
    assert "DRY RUN" not in card.description
    assert card.calibration.ece_after <= card.calibration.ece_before + 0.005


@pytest.mark.slow
@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recorded_accuracy_is_what_the_file_scores_and_meets_target(
    package: Path, mnist: MnistSplits
) -> None:
    card = ModelCard.read(package)
    model = load_torchscript(package / card.files.torchscript.path)
    with torch.inference_mode():
        logits = torch.cat([model(to_float(chunk)) for chunk in mnist.test.images.split(2_000)])
    accuracy = float((logits.argmax(dim=1) == mnist.test.labels).double().mean())
    assert accuracy == pytest.approx(card.metrics.test_accuracy, abs=1e-4)
    assert accuracy >= get_architecture(card.architecture).target_accuracy
