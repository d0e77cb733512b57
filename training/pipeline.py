"""One model's way from data to package: fit, calibrate, export, re-measure from the file, report.

Every figure in the card and every picture is computed from the exported TorchScript file's
outputs, not from the eager network, so the card describes exactly what the service will load.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from service.packages.card import (
    Calibration,
    DatasetInfo,
    Metrics,
    ModelCard,
    TrainingSettings,
)
from training.architectures import Architecture, TrainingRecipe, count_parameters
from training.calibration import (
    ECE_BINS,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from training.data import MnistSplits, load_mnist, to_float
from training.export import INPUT_SPEC, OUTPUT_SPEC, export_model_files, write_card
from training.report import (
    CONFUSION_FILENAME,
    HISTORY_FILENAME,
    MISTAKES_FILENAME,
    RELIABILITY_FILENAME,
    plot_confusion_matrix,
    plot_history,
    plot_reliability,
    plot_worst_mistakes,
)
from training.train import EpochRecord, fit, predict_logits, select_device

logger = logging.getLogger(__name__)

LABELS = [str(digit) for digit in range(10)]
#: Training batches per epoch in a dry run: enough to exercise every step, fast enough for CI.
DRY_RUN_BATCHES = 5
CHECK_BATCH_SIZE = 64


@dataclass(frozen=True)
class RunOptions:
    """Everything a ``train`` run needs besides the architecture's own recipe."""

    data_dir: Path
    cache_dir: Path
    out_dir: Path
    runs_dir: Path
    version: str = "1"
    device: str | None = None
    resume: bool = False
    dry_run: bool = False
    command: str = "python -m training"


@dataclass(frozen=True)
class PackageSummary:
    """What a run produced, for the CLI's output and the results table."""

    package_dir: Path
    card: ModelCard
    target_accuracy: float
    source_accuracy: float
    dry_run: bool

    @property
    def meets_target(self) -> bool:
        return self.card.metrics.test_accuracy >= self.target_accuracy


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"{device.type}, {threads} thread{'s' if threads > 1 else ''}"


def describe_optimizer(recipe: TrainingRecipe) -> str:
    names = {"sgd": "SGD (Nesterov momentum 0.9)", "adam": "Adam", "adamw": "AdamW"}
    loss = "cross-entropy"
    if recipe.label_smoothing:
        loss += f" with label smoothing {recipe.label_smoothing:g}"
    precision = "; bfloat16 autocast in training" if recipe.bfloat16 else ""
    return f"{names[recipe.optimizer]}; loss {loss}{precision}; keeps the best-on-validation epoch"


def stage_dir(package_dir: Path) -> Path:
    """An empty sibling folder to build the package in, so a failed run leaves no half package."""
    staging = package_dir.with_name(f".{package_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, package_dir: Path) -> None:
    if package_dir.exists():
        logger.warning("replacing the existing package %s", package_dir)
        shutil.rmtree(package_dir)
    staging.replace(package_dir)


def train_and_export(
    architecture: Architecture,
    recipe: TrainingRecipe,
    options: RunOptions,
    *,
    name: str | None = None,
) -> PackageSummary:
    """Train ``architecture`` with ``recipe`` and write its package
    ``<out_dir>/<name>/<version>/`` (``name``: the architecture's unless given); returns the
    card and the figures for the results table."""
    splits = load_mnist(options.data_dir, options.cache_dir)
    device = select_device(options.device)
    torch.manual_seed(recipe.seed)  # the network's initial weights
    network = architecture.build()
    logger.info(
        "training %s (%d parameters) on %s: %s",
        architecture.name,
        count_parameters(network),
        describe_device(device),
        recipe,
    )
    suffix = "-dry-run" if options.dry_run else ""
    fitted = fit(
        network,
        splits.train,
        splits.validation,
        recipe,
        device=device,
        run_dir=options.runs_dir / f"{architecture.name}{suffix}",
        resume=options.resume,
        max_batches=DRY_RUN_BATCHES if options.dry_run else None,
    )
    return package_network(
        architecture,
        network,
        training_settings(recipe, device, fitted.duration_s),
        fitted.history,
        splits,
        options,
        device=device,
        name=name,
    )


def package_network(
    architecture: Architecture,
    network: nn.Module,
    training: TrainingSettings,
    history: list[EpochRecord],
    splits: MnistSplits,
    options: RunOptions,
    *,
    device: torch.device,
    name: str | None = None,
    description: str | None = None,
) -> PackageSummary:
    """Calibrate a trained ``network`` on the validation split, export it as the package
    ``<out_dir>/<name>/<version>/`` (``name`` defaults to the architecture's), measure the
    file and write its card and pictures (no learning curves without a ``history``)."""
    name = name or architecture.name
    # Temperature on the validation split, from the eager network's logits.
    validation_logits = predict_logits(network.eval(), splits.validation, device=device)
    temperature = fit_temperature(validation_logits, splits.validation.labels)
    ece_before = expected_calibration_error(validation_logits, splits.validation.labels)

    package_dir = options.out_dir / name / options.version
    staging = stage_dir(package_dir)
    try:
        check_batch = to_float(splits.validation.images[:CHECK_BATCH_SIZE])  # (64, 1, 28, 28)
        exported = export_model_files(network, temperature, staging, check_batch)
        measured = _measure(exported.torchscript, splits, temperature, ece_before)
        _write_reports(name, history, splits, measured.test_logits, staging)
        card = ModelCard(
            name=name,
            version=options.version,
            architecture=architecture.name,
            description=description or _description(architecture, options),
            parameters=count_parameters(network),
            input=INPUT_SPEC,
            output=OUTPUT_SPEC,
            labels=LABELS,
            metrics=measured.metrics,
            calibration=measured.calibration,
            training=training,
            dataset=_dataset_info(splits),
            files=exported.describe(),
            torch_version=torch.__version__,
            created_at=datetime.now(UTC),
            command=options.command,
        )
        write_card(card, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, package_dir)
    summary = PackageSummary(
        package_dir=package_dir,
        card=card,
        target_accuracy=architecture.target_accuracy,
        source_accuracy=architecture.source_accuracy,
        dry_run=options.dry_run,
    )
    _log_outcome(summary)
    return summary


@dataclass(frozen=True)
class _Measured:
    metrics: Metrics
    calibration: Calibration
    test_logits: torch.Tensor  # (10000, 10), the exported file's outputs


def _measure(
    exported: torch.jit.ScriptModule, splits: MnistSplits, temperature: float, ece_before: float
) -> _Measured:
    """Accuracy, NLL and calibrated ECE of the exported file (it normalises and scales itself)."""
    cpu = torch.device("cpu")
    validation_out = predict_logits(exported, splits.validation, device=cpu, normalised_input=False)
    test_out = predict_logits(exported, splits.test, device=cpu, normalised_input=False)
    metrics = Metrics(
        test_accuracy=accuracy(test_out, splits.test.labels),
        test_samples=len(splits.test),
        validation_accuracy=accuracy(validation_out, splits.validation.labels),
        validation_samples=len(splits.validation),
        test_nll=negative_log_likelihood(test_out, splits.test.labels),
    )
    calibration = Calibration(
        temperature=temperature,
        ece_before=ece_before,
        ece_after=expected_calibration_error(validation_out, splits.validation.labels),
        bins=ECE_BINS,
        test_ece=expected_calibration_error(test_out, splits.test.labels),
    )
    return _Measured(metrics, calibration, test_out)


def training_settings(
    recipe: TrainingRecipe, device: torch.device, duration_s: float
) -> TrainingSettings:
    """The card's ``training`` entry: the recipe, where it ran and how long it took."""
    return TrainingSettings(
        epochs=recipe.epochs,
        optimizer=describe_optimizer(recipe),
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        batch_size=recipe.batch_size,
        schedule=recipe.describe_schedule(),
        augmentation=recipe.augmentation.describe() if recipe.augmentation else None,
        seed=recipe.seed,
        device=describe_device(device),
        duration_s=round(duration_s, 1),
    )


def _dataset_info(splits: MnistSplits) -> DatasetInfo:
    return DatasetInfo(
        train_samples=len(splits.train),
        validation_samples=len(splits.validation),
        test_samples=len(splits.test),
        split_seed=splits.split_seed,
        sha256=splits.sha256,
    )


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of ``labels`` (N,) that ``logits`` (N, 10) rank first."""
    return float((logits.argmax(dim=1) == labels).double().mean())


def _description(architecture: Architecture, options: RunOptions) -> str:
    text = (
        f"{architecture.description} Reference: {architecture.source}, "
        f"{architecture.source_accuracy:.2%} on the MNIST test set; "
        f"target {architecture.target_accuracy:.2%}."
    )
    if options.dry_run:
        text = f"DRY RUN ({DRY_RUN_BATCHES} batches of one epoch): not a usable model. " + text
    return text


def _write_reports(
    name: str, history: list[EpochRecord], splits: MnistSplits, test_out: torch.Tensor, folder: Path
) -> None:
    """The three PNGs; the test-set ones from the exported file's outputs ``test_out``."""
    if history:
        plot_history(history, folder / HISTORY_FILENAME, f"{name}: learning curves")
    predicted = test_out.argmax(dim=1)
    plot_confusion_matrix(
        splits.test.labels, predicted, folder / CONFUSION_FILENAME, f"{name}: MNIST test"
    )
    plot_worst_mistakes(
        splits.test.images,
        splits.test.labels,
        test_out.softmax(dim=1),
        folder / MISTAKES_FILENAME,
        f"{name}: most confident test errors",
    )
    plot_reliability(
        test_out.softmax(dim=1),
        splits.test.labels,
        folder / RELIABILITY_FILENAME,
        f"{name}: MNIST test, calibrated",
    )


def _log_outcome(summary: PackageSummary) -> None:
    card = summary.card
    logger.info(
        "%s: test accuracy %.4f (target %.4f), ECE %.4f -> %.4f at T=%.3f; package %s",
        card.name,
        card.metrics.test_accuracy,
        summary.target_accuracy,
        card.calibration.ece_before,
        card.calibration.ece_after,
        card.calibration.temperature,
        summary.package_dir,
    )
    if not summary.meets_target and not summary.dry_run:
        logger.warning("%s misses its target accuracy %.4f", card.name, summary.target_accuracy)


def with_overrides(
    recipe: TrainingRecipe,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    dry_run: bool = False,
) -> TrainingRecipe:
    """``recipe`` with the command line's overrides (a dry run trains one epoch)."""
    if epochs is not None:
        recipe = replace(recipe, epochs=epochs)
    if lr is not None:
        recipe = replace(recipe, lr=lr)
    if batch_size is not None:
        recipe = replace(recipe, batch_size=batch_size)
    if seed is not None:
        recipe = replace(recipe, seed=seed)
    if dry_run:
        recipe = replace(recipe, epochs=1)
    return recipe
