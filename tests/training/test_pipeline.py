"""From data to a package through the command line, as CI and ``make train-dry-run`` run it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from service.packages.card import ModelCard, sha256_of
from training.__main__ import build_parser, main
from training.data import MnistSplits, to_float
from training.export import load_torchscript
from training.report import (
    CONFUSION_FILENAME,
    HISTORY_FILENAME,
    MISTAKES_FILENAME,
    RELIABILITY_FILENAME,
)


def _run(arguments: list[str], data_dir: Path, cache_dir: Path, tmp_path: Path) -> int:
    """``main`` with every folder pointed at ``tmp_path`` (packages in ``tmp_path/models``)."""
    return main(
        [
            *arguments,
            "--data-dir",
            str(data_dir),
            "--cache-dir",
            str(cache_dir),
            "--out",
            str(tmp_path / "models"),
            "--runs-dir",
            str(tmp_path / "runs"),
        ]
    )


def _test_accuracy(package: Path, mnist: MnistSplits) -> float:
    model = load_torchscript(package / "model.pt")
    with torch.inference_mode():
        logits = model(to_float(mnist.test.images))  # (10000, 10)
    return float((logits.argmax(dim=1) == mnist.test.labels).double().mean())


@pytest.mark.slow
def test_dry_run_exports_a_package_that_loads_back(
    mnist_dir: Path, mnist_cache: Path, mnist: MnistSplits, tmp_path: Path
) -> None:
    status = _run(["train", "--arch", "lenet5", "--dry-run"], mnist_dir, mnist_cache, tmp_path)
    assert status == 0
    out = tmp_path / "models"
    package = out / "lenet5" / "1"
    card = ModelCard.read(package)
    assert card.name == card.architecture == "lenet5"
    assert card.version == "1"
    assert card.parameters == 61_706
    assert card.description.startswith("DRY RUN")
    assert card.command.startswith("python -m training train --arch lenet5 --dry-run")
    assert card.training.epochs == 1
    assert card.dataset.test_samples == 10_000
    assert sha256_of(package / card.files.torchscript.path) == card.sha256
    assert card.calibration.test_ece is not None
    for picture in (HISTORY_FILENAME, CONFUSION_FILENAME, MISTAKES_FILENAME, RELIABILITY_FILENAME):
        assert 0 < (package / picture).stat().st_size < 150_000
    # The card's figure is what the file scores, and nothing else was left in the folder.
    assert _test_accuracy(package, mnist) == pytest.approx(card.metrics.test_accuracy, abs=1e-4)
    assert sorted(p.name for p in out.joinpath("lenet5").iterdir()) == ["1"]


@pytest.mark.slow
def test_one_real_epoch_makes_a_useful_calibrated_model(
    mnist_dir: Path, mnist_cache: Path, mnist: MnistSplits, tmp_path: Path
) -> None:
    arguments = ["train", "--arch", "mlp", "--epochs", "1", "--version", "3", "--seed", "2"]
    assert _run(arguments, mnist_dir, mnist_cache, tmp_path) == 0
    package = tmp_path / "models" / "mlp" / "3"
    card = ModelCard.read(package)
    assert card.metrics.test_accuracy > 0.93
    assert card.metrics.validation_accuracy > 0.93
    assert card.training.seed == 2
    assert card.calibration.temperature > 0
    assert card.calibration.ece_after <= card.calibration.ece_before + 1e-3
    assert _test_accuracy(package, mnist) == pytest.approx(card.metrics.test_accuracy, abs=1e-4)


def test_parser_rejects_an_unknown_architecture() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--arch", "lenet7"])


def test_train_all_needs_no_flags() -> None:
    args = build_parser().parse_args(["train-all"])
    assert args.arch == ["mlp", "lenet1", "lenet5", "cnn_small", "cnn_bn", "default"]
    assert args.version == "1"


def test_missing_data_is_one_clear_error_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-mnist-here"
    status = _run(["train", "--arch", "mlp", "--dry-run"], missing, tmp_path / "cache", tmp_path)
    assert status == 1
    assert str(missing) in caplog.text
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
def test_a_package_may_take_another_name_than_its_architecture(
    mnist_dir: Path, mnist_cache: Path, tmp_path: Path
) -> None:
    arguments = ["train", "--arch", "lenet5", "--name", "candidate", "--version", "2", "--dry-run"]
    assert _run(arguments, mnist_dir, mnist_cache, tmp_path) == 0
    card = ModelCard.read(tmp_path / "models" / "candidate" / "2")
    assert (card.name, card.version, card.architecture) == ("candidate", "2", "lenet5")
    assert not (tmp_path / "models" / "lenet5").exists()


def test_an_ensemble_is_made_not_trained() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--arch", "default_ensemble"])
