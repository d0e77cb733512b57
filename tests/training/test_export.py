from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from torch import nn

from training.architectures import get_architecture
from training.data import MnistSplits, normalise, to_float
from training.export import (
    MAX_ABS_DIFFERENCE,
    ExportedFiles,
    ExportError,
    PackagedClassifier,
    export_model_files,
    load_torchscript,
    max_difference,
)


class Exported(NamedTuple):
    network: nn.Module
    files: ExportedFiles
    folder: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, mnist: MnistSplits) -> Exported:
    """An (untrained) LeNet-5 exported with temperature 2.5."""
    torch.manual_seed(0)
    network = get_architecture("lenet5").build().eval()
    folder = tmp_path_factory.mktemp("package")
    check = to_float(mnist.validation.images[:32])
    return Exported(network, export_model_files(network, 2.5, folder, check), folder)


def test_the_torchscript_file_is_written_and_described(exported: Exported) -> None:
    _, files, folder = exported
    described = files.describe()
    assert (folder / described.torchscript.path).stat().st_size == described.torchscript.bytes
    assert described.torchscript.format == "torchscript"
    # Only what the service loads is shipped.
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt"]


def test_torchscript_file_holds_normalisation_and_temperature(
    exported: Exported, mnist: MnistSplits
) -> None:
    network, files, _ = exported
    pixels = to_float(mnist.test.images[:7])  # a batch size the export never saw
    reloaded = load_torchscript(files.torchscript_path)
    with torch.no_grad():
        expected = network(normalise(pixels)) / 2.5
        assert (reloaded(pixels) - expected).abs().max() <= MAX_ABS_DIFFERENCE


def test_round_trip_is_exact_for_every_architecture(tmp_path: Path, mnist: MnistSplits) -> None:
    check = to_float(mnist.validation.images[:16])
    for name in ("mlp", "lenet1", "cnn_small", "cnn_bn", "default"):
        torch.manual_seed(0)
        folder = tmp_path / name
        folder.mkdir()
        files = export_model_files(get_architecture(name).build().eval(), 1.3, folder, check)
        assert files.max_difference_torchscript <= MAX_ABS_DIFFERENCE


def test_a_differing_file_is_an_error() -> None:
    expected = torch.zeros(4, 10)
    with pytest.raises(ExportError, match="differs"):
        max_difference(expected, expected + 1e-3, "model.pt")
    with pytest.raises(ExportError, match="shape"):
        max_difference(expected, torch.zeros(4, 9), "model.pt")
    assert max_difference(expected, expected + 1e-7, "model.pt") <= MAX_ABS_DIFFERENCE


def test_wrapper_scales_logits_by_the_temperature() -> None:
    torch.manual_seed(0)
    network = get_architecture("mlp").build().eval()
    pixels = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        hot = PackagedClassifier(network, 1.0)(pixels)
        cool = PackagedClassifier(network, 4.0)(pixels)
    assert torch.allclose(hot / 4.0, cool)
