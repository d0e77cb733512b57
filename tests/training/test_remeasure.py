"""Re-measuring a package from its file: the test-set calibration a card gained later."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.packages.card import ModelCard
from tests.service.conftest import copy_bundled
from training.__main__ import main
from training.data import MnistSplits
from training.export import ExportError
from training.remeasure import remeasure
from training.report import RELIABILITY_FILENAME


def without_test_ece(package: Path, **metrics: float) -> None:
    """Rewrite the package's card as cards were before 2026-12-02 (and ``metrics`` changed)."""
    path = package / "metadata.json"
    card = json.loads(path.read_text())
    card["calibration"].pop("test_ece", None)
    card["metrics"] |= metrics
    path.write_text(json.dumps(card))
    (package / RELIABILITY_FILENAME).unlink(missing_ok=True)


def test_remeasure_writes_the_test_ece_and_the_reliability_diagram(
    mnist: MnistSplits, tmp_path: Path
) -> None:
    copy_bundled(tmp_path, "lenet5")
    package = tmp_path / "lenet5" / "1"
    shipped = ModelCard.read(package)
    without_test_ece(package)
    assert ModelCard.read(package).calibration.test_ece is None
    card = remeasure(package, mnist)
    assert card.calibration.test_ece is not None and shipped.calibration.test_ece is not None
    assert card.calibration.test_ece == pytest.approx(shipped.calibration.test_ece, abs=1e-9)
    assert 0 < card.calibration.test_ece < 0.01
    assert ModelCard.read(package) == card
    assert (package / RELIABILITY_FILENAME).stat().st_size > 5_000


def test_a_card_whose_file_scores_otherwise_is_an_error(mnist: MnistSplits, tmp_path: Path) -> None:
    copy_bundled(tmp_path, "lenet5")
    package = tmp_path / "lenet5" / "1"
    without_test_ece(package, test_accuracy=0.9990)
    with pytest.raises(ExportError, match=r"the file scores 0\.9932 on the test set, its card"):
        remeasure(package, mnist)
    assert ModelCard.read(package).calibration.test_ece is None


def test_the_command_remeasures_every_package(
    mnist_dir: Path, mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("lenet1", "mlp"):
        copy_bundled(tmp_path, name)
        without_test_ece(tmp_path / name / "1")
    arguments = ["--model-dir", str(tmp_path), "--data-dir", str(mnist_dir)]
    assert main(["remeasure", *arguments, "--cache-dir", str(mnist_cache)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == [
        str(tmp_path / "lenet1" / "1"),
        str(tmp_path / "mlp" / "1"),
    ]
    for name in ("lenet1", "mlp"):
        assert ModelCard.read(tmp_path / name / "1").calibration.test_ece is not None
