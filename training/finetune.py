"""Fine-tuning a package on a user's own digits: ``python -m training finetune``.

    base package (default/1) --weights--> network --fit on--> user's train split
                                                            + MNIST train digits (a stated share)
    user's held-out split: picks the best epoch, measures before and after
    held-out + MNIST validation digits: refit the temperature
    -> a new package NAME/VERSION, its card recording the data, the recipe, before and after

MNIST is mixed in so that what the network knew is not forgotten: at the default share
(95 % of each epoch's digits), five epochs move scikit-learn's digits from 97 % to over 99 %
held out while the MNIST test accuracy stays within 0.1 point (README, "Your own digits").
Each MNIST digit is drawn once per run, so none is learnt by heart. Every figure in the card
comes from the exported file, as for a package trained from scratch.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from digits_client.labelled import read_labelled, require_every_digit

from service.packages.card import (
    NAME_PATTERN,
    Accuracies,
    BasePackage,
    Calibration,
    DatasetInfo,
    FineTuneSplit,
    FineTuning,
    Metrics,
    ModelCard,
    UserData,
    version_key,
)
from service.packages.discovery import find_packages
from service.packages.verification import PackageError, read_verified_card
from training.architectures import TrainingRecipe, count_parameters, get_architecture
from training.augment import AffineAugmentation
from training.calibration import ECE_BINS, expected_calibration_error, fit_temperature
from training.data import DigitSet, load_mnist, to_float
from training.export import export_model_files, load_torchscript, write_card
from training.own_digits import OwnDigits, prepare, stratified_split
from training.pipeline import (
    CHECK_BATCH_SIZE,
    DRY_RUN_BATCHES,
    LABELS,
    accuracy,
    publish,
    stage_dir,
    training_settings,
)
from training.report import (
    CONFUSION_FILENAME,
    HISTORY_FILENAME,
    RELIABILITY_FILENAME,
    plot_confusion_matrix,
    plot_history,
    plot_reliability,
)
from training.train import fit, predict_logits, select_device

logger = logging.getLogger(__name__)

#: Measured on scikit-learn's digits (README): SGD at a low peak rate, the base recipe's label
#: smoothing and augmentation, MNIST as 95 % of the digits. More epochs or a higher rate learn
#: the user's digits no better and cost MNIST accuracy.
FINETUNE_RECIPE = TrainingRecipe(
    epochs=5,
    lr=0.02,
    batch_size=64,
    optimizer="sgd",
    weight_decay=5e-4,
    schedule="onecycle",
    label_smoothing=0.1,
    augmentation=AffineAugmentation(),
    seed=1,
)
MNIST_FRACTION = 0.95
HELD_OUT_FRACTION = 0.2
MIN_PER_DIGIT = 10
#: A dry run's MNIST: this many digits mixed in, this many test digits measured.
DRY_RUN_MNIST = 256
DRY_RUN_TEST = 500


class FineTuneError(RuntimeError):
    """The fine-tuning cannot start: no such base package, or NAME is taken by another kind."""


@dataclass(frozen=True)
class FineTuneOptions:
    """What ``python -m training finetune`` was asked to do."""

    base: str  # NAME or NAME/VERSION of the package to start from
    data: Path
    name: str
    model_dir: Path
    data_dir: Path
    cache_dir: Path
    runs_dir: Path
    recipe: TrainingRecipe = FINETUNE_RECIPE
    mnist_fraction: float = MNIST_FRACTION
    held_out_fraction: float = HELD_OUT_FRACTION
    split_seed: int = 0
    min_per_digit: int = MIN_PER_DIGIT
    strict: bool = False
    resume: bool = False
    dry_run: bool = False
    device: str | None = None
    command: str = "python -m training finetune"


@dataclass(frozen=True)
class FineTuneSummary:
    package_dir: Path
    card: ModelCard
    fine_tuning: FineTuning
    duration_s: float


def finetune(options: FineTuneOptions) -> FineTuneSummary:
    """Fine-tune the base package on the user's data and export ``<model_dir>/<name>/<v>/``."""
    started = datetime.now(UTC)
    if not re.fullmatch(NAME_PATTERN, options.name):
        raise FineTuneError(f"not a model name: {options.name!r} (lower case, digits, _ and -)")
    base_dir = _base_package(options.model_dir, options.base)
    base_card = read_verified_card(base_dir)
    version = _next_version(options.model_dir, options.name)

    labelled = read_labelled(options.data, strict=options.strict)
    labelled.require_every_digit(options.min_per_digit)
    own = prepare(labelled, options.runs_dir / "own-digits", strict=options.strict)
    where = f"{options.data}, once the images the service cannot read are skipped"
    require_every_digit(own.per_digit(), options.min_per_digit, where)
    train, held_out = stratified_split(own.digits, options.held_out_fraction, options.split_seed)

    splits = load_mnist(options.data_dir, options.cache_dir)
    test = splits.test.subset(DRY_RUN_TEST) if options.dry_run else splits.test
    mixed, mnist_images = _mixed(train, splits.train, options)
    base_file = load_torchscript(base_dir / base_card.files.torchscript.path)
    before = _accuracies(_logits(base_file, held_out), held_out, _logits(base_file, test), test)
    logger.info(
        "%s/%s before: held-out %.4f, MNIST test %.4f; fine-tuning on %d own + %d MNIST digits",
        base_card.name,
        base_card.version,
        before.held_out,
        before.mnist_test,
        len(train),
        mnist_images,
    )

    device = select_device(options.device)
    torch.manual_seed(options.recipe.seed)
    network = get_architecture(base_card.architecture).build()
    network.load_state_dict(base_file.network.state_dict())  # the package's own weights
    fitted = fit(
        network,
        mixed,
        held_out,
        options.recipe,
        device=device,
        run_dir=options.runs_dir / f"finetune-{options.name}-{own.sha256[:12]}",
        resume=options.resume,
        max_batches=DRY_RUN_BATCHES if options.dry_run else None,
    )

    # The temperature on what the package will meet: the user's digits and MNIST's, mixed as
    # in fine-tuning.
    calibration_set = _mixed(held_out, splits.validation, options)[0]
    logits = predict_logits(network.eval(), calibration_set, device=device)
    temperature = fit_temperature(logits, calibration_set.labels)
    ece_before = expected_calibration_error(logits, calibration_set.labels)

    package_dir = options.model_dir / options.name / version
    staging = stage_dir(package_dir)
    try:
        check_batch = to_float(held_out.images[:CHECK_BATCH_SIZE])
        exported = export_model_files(network, temperature, staging, check_batch)
        # The exported file's outputs, each set once: every figure below comes from them.
        held_out_out = _logits(exported.torchscript, held_out)  # (N, 10)
        test_out = _logits(exported.torchscript, test)
        calibrated = _logits(exported.torchscript, calibration_set)
        validation_out = _logits(exported.torchscript, splits.validation)
        after = _accuracies(held_out_out, held_out, test_out, test)
        fine_tuning = _record(
            base_card, own, options, (train, held_out), mnist_images, (before, after)
        )
        plot_history(fitted.history, staging / HISTORY_FILENAME, f"{options.name}: fine-tuning")
        plot_confusion_matrix(
            held_out.labels,
            held_out_out.argmax(dim=1),
            staging / CONFUSION_FILENAME,
            f"{options.name}: own held-out digits",
        )
        plot_reliability(
            calibrated.softmax(dim=1),
            calibration_set.labels,
            staging / RELIABILITY_FILENAME,
            f"{options.name}: own held-out and MNIST validation, calibrated",
        )
        card = ModelCard(
            name=options.name,
            version=version,
            architecture=base_card.architecture,
            description=_description(base_card, options, len(own.digits)),
            parameters=count_parameters(network),
            input=base_card.input,
            output=base_card.output,
            labels=LABELS,
            metrics=Metrics(
                test_accuracy=after.mnist_test,
                test_samples=len(test),
                validation_accuracy=accuracy(validation_out, splits.validation.labels),
                validation_samples=len(splits.validation),
            ),
            calibration=Calibration(
                temperature=temperature,
                ece_before=ece_before,
                ece_after=expected_calibration_error(calibrated, calibration_set.labels),
                bins=ECE_BINS,
                split="held_out_and_validation",
                test_ece=expected_calibration_error(test_out, test.labels),
            ),
            training=training_settings(options.recipe, device, fitted.duration_s),
            dataset=DatasetInfo(
                train_samples=mnist_images,
                validation_samples=len(splits.validation),
                test_samples=len(test),
                split_seed=splits.split_seed,
                sha256=splits.sha256,
            ),
            files=exported.describe(),
            torch_version=torch.__version__,
            created_at=datetime.now(UTC),
            command=options.command,
            fine_tuning=fine_tuning,
        )
        write_card(card, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, package_dir)
    duration = (datetime.now(UTC) - started).total_seconds()
    logger.info(
        "%s/%s after: held-out %.4f, MNIST test %.4f (%.0f s in all); package %s",
        options.name,
        version,
        after.held_out,
        after.mnist_test,
        duration,
        package_dir,
    )
    return FineTuneSummary(package_dir, card, fine_tuning, duration)


def _record(
    base: ModelCard,
    own: OwnDigits,
    options: FineTuneOptions,
    split: tuple[DigitSet, DigitSet],
    mnist_images: int,
    accuracies: tuple[Accuracies, Accuracies],
) -> FineTuning:
    """The card's ``fine_tuning`` section: ``split`` is (train, held out), ``accuracies``
    (before, after)."""
    train, held_out = split
    before, after = accuracies
    return FineTuning(
        base=BasePackage(name=base.name, version=base.version, sha256=base.sha256),
        data=UserData(
            source=str(options.data),
            sha256=own.sha256,
            images=len(own.digits),
            bytes=own.bytes,
            skipped=len(own.skipped),
            per_digit=own.per_digit(),
        ),
        split=FineTuneSplit(
            seed=options.split_seed,
            held_out_fraction=options.held_out_fraction,
            train_images=len(train),
            held_out_images=len(held_out),
            mnist_fraction=options.mnist_fraction,
            mnist_images=mnist_images,
        ),
        before=before,
        after=after,
    )


def _base_package(model_dir: Path, base: str) -> Path:
    """The folder of ``NAME`` (its newest version) or ``NAME/VERSION`` in ``model_dir``."""
    name, _, version = base.partition("/")
    versions = {v: path for (n, v), path in find_packages(model_dir).items() if n == name}
    if not versions:
        raise FineTuneError(f"no package {name!r} in {model_dir}")
    if version:
        if version not in versions:
            known = ", ".join(sorted(versions, key=version_key))
            raise FineTuneError(f"{name} has no version {version!r} (it has {known})")
        return versions[version]
    return versions[max(versions, key=version_key)]


def _next_version(model_dir: Path, name: str) -> str:
    """``1``, or one more than the newest version of ``name``; refuses a name that holds
    MNIST-trained packages (the shipped models stay MNIST's)."""
    versions = {v: path for (n, v), path in find_packages(model_dir).items() if n == name}
    if not versions:
        return "1"
    newest = versions[max(versions, key=version_key)]
    try:
        if read_verified_card(newest).fine_tuning is None:
            raise FineTuneError(
                f"{name} is a package trained on MNIST; give the fine-tuned one its own name"
            )
    except PackageError as exc:
        raise FineTuneError(f"{newest} cannot be read ({exc}); choose another name") from exc
    return str(max(version_key(v) for v in versions) + 1)


def _mixed(own: DigitSet, mnist: DigitSet, options: FineTuneOptions) -> tuple[DigitSet, int]:
    """``own`` with MNIST digits drawn (seeded) to make ``options.mnist_fraction`` of the
    whole, and how many were drawn."""
    fraction = options.mnist_fraction
    wanted = round(len(own) * fraction / (1.0 - fraction)) if fraction < 1.0 else len(mnist)
    count = min(len(mnist), DRY_RUN_MNIST if options.dry_run else wanted)
    generator = torch.Generator().manual_seed(options.split_seed)
    drawn = torch.randperm(len(mnist), generator=generator)[:count]
    mixed = DigitSet(
        torch.cat([own.images, mnist.images[drawn]]), torch.cat([own.labels, mnist.labels[drawn]])
    )
    return mixed, count


def _logits(exported: torch.jit.ScriptModule, digits: DigitSet) -> torch.Tensor:
    return predict_logits(exported, digits, device=torch.device("cpu"), normalised_input=False)


def _accuracies(
    held_out_logits: torch.Tensor, held_out: DigitSet, test_logits: torch.Tensor, test: DigitSet
) -> Accuracies:
    return Accuracies(
        held_out=accuracy(held_out_logits, held_out.labels),
        mnist_test=accuracy(test_logits, test.labels),
        mnist_test_samples=len(test),
    )


def _description(base: ModelCard, options: FineTuneOptions, images: int) -> str:
    text = (
        f"{base.name}/{base.version} fine-tuned on {images} own images from {options.data} "
        f"(MNIST {options.mnist_fraction:.0%} of the digits)."
    )
    if options.dry_run:
        text = f"DRY RUN ({DRY_RUN_BATCHES} batches of one epoch): not a usable model. " + text
    return text
