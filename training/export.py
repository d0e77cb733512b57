"""Writing a model package: the TorchScript file, verified, and the model card.

The package's network is a wrapper that takes what the service gives it, float32
``(N, 1, 28, 28)`` in [0, 1] with white ink on black, applies the MNIST normalisation and the
calibration temperature itself, and returns logits ``(N, 10)``. The file is loaded back and
compared with the eager wrapper before anything is reported from it.

Only TorchScript is written: it is what the service loads and verifies. (A ``torch.export``
program, TorchScript's successor, was written beside it until 2026-12 but never served; it
returns when the service can load and self-test it.)
"""

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from service.packages.card import (
    TORCHSCRIPT_FILENAME,
    ModelCard,
    PackageFile,
    PackageFiles,
    TensorSpec,
)
from training.data import MNIST_MEAN, MNIST_STD

logger = logging.getLogger(__name__)

#: Largest elementwise difference allowed between the eager wrapper and a reloaded file.
MAX_ABS_DIFFERENCE = 1e-5

INPUT_SPEC = TensorSpec(
    shape=[None, 1, 28, 28],
    description="float32 pixels in [0, 1], white ink on black, 28x28 MNIST-style (centred by "
    "centre of mass in a 20x20 box); the model normalises (mean 0.1307, std 0.3081) itself",
)
OUTPUT_SPEC = TensorSpec(
    shape=[None, 10],
    description="logits divided by the calibration temperature; softmax gives calibrated "
    "class probabilities for the labels '0'..'9'",
)


class ExportError(RuntimeError):
    """An exported file does not reproduce the eager model."""


class PackagedClassifier(nn.Module):
    """What a package holds: normalisation, the network, and the temperature, in one module."""

    # Real (not postponed) annotations: TorchScript reads them to type the buffers.
    mean: torch.Tensor
    std: torch.Tensor
    temperature: torch.Tensor

    def __init__(self, network: nn.Module, temperature: float) -> None:
        super().__init__()
        self.network = network
        # Buffers, not Python floats, so they are saved inside the exported file.
        self.register_buffer("mean", torch.tensor(MNIST_MEAN, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(MNIST_STD, dtype=torch.float32))
        self.register_buffer("temperature", torch.tensor(temperature, dtype=torch.float32))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # pixels: (N, 1, 28, 28) float32 in [0, 1] -> logits / T: (N, 10)
        normalised = (pixels - self.mean) / self.std
        logits: torch.Tensor = self.network(normalised)
        return logits / self.temperature


@dataclass(frozen=True)
class ExportedFiles:
    """The model file of a package, loaded back and checked against the eager model."""

    torchscript_path: Path
    torchscript: torch.jit.ScriptModule
    max_difference_torchscript: float

    def describe(self) -> PackageFiles:
        """The card's ``files`` entry: names, digests, sizes."""
        return PackageFiles(
            torchscript=PackageFile.describe(self.torchscript_path, "torchscript"),
        )


@contextmanager
def _jit_deprecation_silenced() -> Iterator[None]:
    """torch >= 2.10 deprecates ``torch.jit`` (a FutureWarning on script/save/load). TorchScript
    is still what a package promises, so here, and only here, that warning is expected."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", category=FutureWarning, message=r"`torch\.jit\.\w+` is deprecated"
        )
        yield


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """A package's TorchScript file, on the CPU, in eval mode."""
    with _jit_deprecation_silenced():
        module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
            str(path), map_location="cpu"
        )
    module.eval()
    return module


def save_torchscript(wrapper: PackagedClassifier, path: Path) -> None:
    """Script ``wrapper`` (scripting, not tracing, so nothing depends on an example) and save."""
    with _jit_deprecation_silenced():
        torch.jit.save(torch.jit.script(wrapper), str(path))


def max_difference(expected: torch.Tensor, actual: torch.Tensor, what: str) -> float:
    """Largest elementwise |expected - actual|; raises :class:`ExportError` when the shapes
    differ or it exceeds :data:`MAX_ABS_DIFFERENCE`. ``what`` names the file in the message."""
    if actual.shape != expected.shape:
        raise ExportError(f"{what} returns shape {tuple(actual.shape)}, expected {expected.shape}")
    difference = float((expected - actual).abs().max())
    if not difference <= MAX_ABS_DIFFERENCE:
        raise ExportError(
            f"{what} differs from the eager model by {difference:.3g} "
            f"(allowed {MAX_ABS_DIFFERENCE:g})"
        )
    return difference


def export_model_files(
    network: nn.Module, temperature: float, package_dir: Path, check_batch: torch.Tensor
) -> ExportedFiles:
    """Write ``model.pt`` into ``package_dir`` and verify it.

    ``check_batch`` (N, 1, 28, 28) in [0, 1] is run through the eager wrapper and through the
    reloaded file; any difference above :data:`MAX_ABS_DIFFERENCE` raises :class:`ExportError`.
    """
    wrapper = PackagedClassifier(copy_to_cpu(network), temperature).eval()
    torchscript_path = package_dir / TORCHSCRIPT_FILENAME
    save_torchscript(wrapper, torchscript_path)

    with torch.inference_mode():
        expected = wrapper(check_batch)  # (N, 10)
        scripted = load_torchscript(torchscript_path)
        ts_difference = max_difference(expected, scripted(check_batch), "model.pt")
    logger.info("exported %s (max |difference| %.2g)", torchscript_path, ts_difference)
    return ExportedFiles(torchscript_path, scripted, ts_difference)


def copy_to_cpu(network: nn.Module) -> nn.Module:
    """``network`` on the CPU, in the default memory layout, in eval mode: the package is
    neutral and the service moves it to its own device."""
    return network.cpu().to(memory_format=torch.contiguous_format).eval()


def write_card(card: ModelCard, package_dir: Path) -> Path:
    """Validate the card by reading back what was written; returns the card's path."""
    path = card.write(package_dir)
    if ModelCard.read(package_dir) != card:
        raise ExportError(f"{path} does not read back as the card that was written")
    return path
