"""The model card: the one contract between training and serving.

A model package is a folder ``<model_dir>/<name>/<version>/`` holding

- ``model.pt``      TorchScript module: float32 ``(N, 1, 28, 28)`` in [0, 1], white ink on black,
                    normalisation and calibration temperature inside, returns logits ``(N, 10)``;
- ``metadata.json`` this card.

``training.export`` writes cards and the service reads them; the service owns the schema so
that what it can serve is defined in one place. The card is strict (unknown fields are an
error) so that a typo in a hand-edited card is caught at load time, not silently ignored.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CARD_FILENAME = "metadata.json"
TORCHSCRIPT_FILENAME = "model.pt"

#: Model names appear in URLs and folder names: keep them boring.
NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
#: Versions are positive integers so that "newest" is unambiguous (numeric, not lexical, order).
VERSION_PATTERN = r"^[1-9][0-9]{0,8}$"

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 digest.")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """Shape and meaning of a tensor the model takes or gives; ``None`` is the batch axis."""

    shape: list[int | None] = Field(examples=[[None, 1, 28, 28]])
    dtype: Literal["float32"] = "float32"
    description: str


class Metrics(_Strict):
    """Accuracy measured from the exported TorchScript file, not from the eager model."""

    test_accuracy: Fraction
    test_samples: int = Field(gt=0)
    validation_accuracy: Fraction
    validation_samples: int = Field(gt=0)
    test_nll: float | None = Field(
        default=None, ge=0.0, description="Mean negative log-likelihood on test."
    )


class Calibration(_Strict):
    """Temperature scaling fitted on held-out data; ECE with equal-width bins.

    ``split``: what fitted the temperature (and chose the epoch), on which ``ece_before`` and
    ``ece_after`` are measured: MNIST's validation split, or (a fine-tuned package) the user's
    held-out images with MNIST validation digits in the fine-tuning's proportion.
    ``test_ece`` is the calibrated file's ECE on the MNIST test set, which fitted nothing: the
    figure for confidence on unseen digits.
    """

    method: Literal["temperature"] = "temperature"
    temperature: float = Field(gt=0.0)
    ece_before: Fraction
    ece_after: Fraction
    bins: int = Field(default=15, gt=0)
    split: Literal["validation", "held_out_and_validation"] = "validation"
    test_ece: Fraction | None = Field(
        default=None, description="ECE after scaling on the MNIST test set (unseen digits)."
    )


class TrainingSettings(_Strict):
    """How the network was fitted: enough to reproduce it with the recorded command."""

    epochs: int = Field(ge=0)
    optimizer: str
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    batch_size: int = Field(gt=0)
    schedule: str
    augmentation: str | None = None
    seed: int
    device: str
    duration_s: float = Field(ge=0.0)


class DatasetInfo(_Strict):
    """Which data the model saw; checksums are SHA-256 of the uncompressed IDX files."""

    name: Literal["MNIST"] = "MNIST"
    train_samples: int = Field(ge=0)
    validation_samples: int = Field(ge=0)
    test_samples: int = Field(ge=0)
    split_seed: int
    sha256: dict[str, Sha256]


class BasePackage(_Strict):
    """The package a fine-tuned one started from."""

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    sha256: Sha256


class UserData(_Strict):
    """A user's labelled images, as fine-tuning read them."""

    source: str = Field(description="The folder or CSV, as given.")
    sha256: Sha256 = Field(
        description="SHA-256 of the sorted lines `relative path<TAB>label<TAB>file SHA-256`."
    )
    images: int = Field(gt=0, description="Images used.")
    bytes: int = Field(ge=0, description="Their size on disk.")
    skipped: int = Field(ge=0, description="Files left out: unreadable, or no digit found.")
    per_digit: dict[str, int] = Field(description="Images used per label.")


class FineTuneSplit(_Strict):
    """The user's images split per digit (stratified), by a seeded permutation."""

    seed: int
    held_out_fraction: Fraction
    train_images: int = Field(gt=0)
    held_out_images: int = Field(gt=0)
    mnist_fraction: Fraction = Field(
        description="Share of MNIST training digits in the fine-tuning set."
    )
    mnist_images: int = Field(ge=0)


class Accuracies(_Strict):
    """Accuracy on the user's held-out images and on the 10,000 MNIST test digits."""

    held_out: Fraction
    mnist_test: Fraction
    mnist_test_samples: int = Field(gt=0)


class FineTuning(_Strict):
    """How a package was fine-tuned on a user's own digits, and what it changed."""

    base: BasePackage
    data: UserData
    split: FineTuneSplit
    before: Accuracies = Field(description="The base package's file.")
    after: Accuracies = Field(description="This package's file.")


class PackageFile(_Strict):
    """A file of the package, with the digest the service verifies before loading it."""

    path: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Relative to the package folder.")
    format: Literal["torchscript"]
    sha256: Sha256
    bytes: int = Field(ge=0)

    @classmethod
    def describe(cls, path: Path, fmt: Literal["torchscript"]) -> PackageFile:
        """Card entry for an existing file: its name, digest and size."""
        return cls(path=path.name, format=fmt, sha256=sha256_of(path), bytes=path.stat().st_size)


class PackageFiles(_Strict):
    torchscript: PackageFile


class ModelCard(_Strict):
    """Everything the service (and a person) needs to know about a model package."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN, examples=["lenet5"])
    version: str = Field(pattern=VERSION_PATTERN, examples=["1"])
    architecture: str = Field(description="Registry name of the network in training.architectures.")
    description: str = ""
    parameters: int = Field(gt=0, description="Trainable parameters.")
    input: TensorSpec
    output: TensorSpec
    labels: list[str] = Field(min_length=2, description="Class label of each output index.")
    metrics: Metrics
    calibration: Calibration
    training: TrainingSettings
    dataset: DatasetInfo
    files: PackageFiles
    torch_version: str
    created_at: datetime
    command: str = Field(description="The command line that produced this package.")
    fine_tuning: FineTuning | None = Field(
        default=None, description="Set when the package was fine-tuned on a user's digits."
    )

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("created_at must carry a time zone (write it in UTC)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        out_classes = self.output.shape[-1]
        if out_classes is not None and out_classes != len(self.labels):
            raise ValueError(
                f"output has {out_classes} classes but {len(self.labels)} labels are listed"
            )
        if self.files.torchscript.format != "torchscript":
            raise ValueError("files.torchscript must have format 'torchscript'")
        return self

    @property
    def sha256(self) -> str:
        """Digest of the TorchScript file, the one the service loads."""
        return self.files.torchscript.sha256

    @classmethod
    def read(cls, package_dir: Path) -> ModelCard:
        """Parse a package's card; raises ``pydantic.ValidationError`` or ``OSError``."""
        return cls.model_validate_json((package_dir / CARD_FILENAME).read_bytes())

    def write(self, package_dir: Path) -> Path:
        """Write the card as pretty JSON next to the model files; returns its path."""
        path = package_dir / CARD_FILENAME
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so large files do not sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def version_key(version: str) -> int:
    """Sort key that orders versions numerically ("10" after "9")."""
    if not re.fullmatch(VERSION_PATTERN, version):
        raise ValueError(f"not a model version: {version!r}")
    return int(version)
