"""Command line: ``python -m training train --arch NAME ...``, ``train-all``, ``finetune``
and ``results``.

Each architecture's hyper-parameters are defaults in ``training.architectures``; the flags only
override them. ``finetune --from default --data PATH --name NAME`` fine-tunes a package on your
own labelled digits (``training.finetune``). The command line is recorded in each package's
card.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from digits_client.labelled import LabelledDataError

from service.packages.discovery import find_packages
from service.packages.verification import PackageError
from training.architectures import TRAIN_ALL, TRAINABLE, get_architecture
from training.data import DatasetError, load_mnist
from training.ensemble import EnsembleError, ensemble_and_export
from training.export import ExportError
from training.finetune import (
    FINETUNE_RECIPE,
    HELD_OUT_FRACTION,
    MIN_PER_DIGIT,
    MNIST_FRACTION,
    FineTuneError,
    FineTuneOptions,
    FineTuneSummary,
    finetune,
)
from training.pipeline import (
    PackageSummary,
    RunOptions,
    train_and_export,
    with_overrides,
)
from training.remeasure import remeasure
from training.results import results_table
from training.train import CheckpointMismatch

logger = logging.getLogger("training")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = Path(
    os.environ.get("DIGITS_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "mnist")
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder with the four MNIST IDX .gz files (default: $DIGITS_DATA_DIR or %(default)s)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO_ROOT / ".cache" / "mnist",
        help="writable folder for the uncompressed files (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "models",
        help="model folder; packages go to OUT/NAME/VERSION (default: %(default)s)",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=REPO_ROOT / "runs",
        help="checkpoints and logs, one folder per run (default: %(default)s)",
    )
    parser.add_argument("--version", default="1", help="package version (default: %(default)s)")
    parser.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu or cuda:0 (default: CUDA when present)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the run folder's last checkpoint"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m training`` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train, calibrate and export one architecture")
    train.add_argument("--arch", required=True, choices=sorted(TRAINABLE))
    train.add_argument("--epochs", type=int, help="override the recipe's epochs")
    train.add_argument("--lr", type=float, help="override the recipe's (peak) learning rate")
    train.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    train.add_argument("--seed", type=int, help="override the recipe's seed")
    train.add_argument(
        "--name", help="the package's name (default: the architecture's), e.g. default"
    )
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="a few batches of one epoch; still exports a package that loads",
    )
    _add_common(train)

    train_all = commands.add_parser("train-all", help="train and export every architecture")
    train_all.add_argument(
        "--arch",
        nargs="+",
        choices=sorted(TRAINABLE),
        default=list(TRAIN_ALL),
        help="a subset (default: all)",
    )
    _add_common(train_all)

    tune = commands.add_parser(
        "finetune",
        help="fine-tune a package on your own labelled digits and export it under a new name",
        description="Fine-tune a package on a folder of class folders 0/..9/ or a CSV of "
        "file,label: the images go through the service's own imaging stage; a stratified, "
        "seeded share is held out to measure before and after; MNIST training digits are "
        "mixed in so MNIST accuracy holds; the temperature is refitted. About a minute on two "
        "CPU cores for a thousand images.",
    )
    tune.add_argument(
        "--from",
        dest="base",
        default="default",
        metavar="NAME[/VERSION]",
        help="package to start from (default: %(default)s, its newest version)",
    )
    tune.add_argument(
        "--data", type=Path, required=True, help="folder of 0/..9/ or CSV of file,label"
    )
    tune.add_argument(
        "--name", required=True, help="the new package's name (a new version if it exists)"
    )
    tune.add_argument(
        "--held-out",
        type=float,
        default=HELD_OUT_FRACTION,
        help="share of each digit's images held out (default: %(default)s)",
    )
    tune.add_argument(
        "--mnist-fraction",
        type=float,
        default=MNIST_FRACTION,
        help="share of MNIST training digits in the fine-tuning set (default: %(default)s)",
    )
    tune.add_argument(
        "--min-per-digit",
        type=int,
        default=MIN_PER_DIGIT,
        help="fewest images each digit needs (default: %(default)s)",
    )
    tune.add_argument("--seed", type=int, default=0, help="split seed (default: %(default)s)")
    tune.add_argument("--epochs", type=int, help="override the recipe's epochs")
    tune.add_argument("--lr", type=float, help="override the recipe's peak learning rate")
    tune.add_argument(
        "--strict", action="store_true", help="refuse unreadable images instead of skipping them"
    )
    tune.add_argument(
        "--dry-run",
        action="store_true",
        help="a few batches, few MNIST digits; still exports a package that loads",
    )
    _add_common(tune)

    ensemble = commands.add_parser(
        "ensemble",
        help="average trained default packages into one package (default_ensemble)",
    )
    ensemble.add_argument(
        "--members", type=Path, nargs="+", required=True, help="the members' package folders"
    )
    ensemble.add_argument("--name", default="default", help="package name (default: %(default)s)")
    _add_common(ensemble)

    again = commands.add_parser(
        "remeasure",
        help="measure each package's file on the test set: test ECE, reliability diagram",
    )
    again.add_argument(
        "--model-dir",
        "--out",
        dest="out",
        type=Path,
        default=REPO_ROOT / "models",
        help="model folder (default: %(default)s)",
    )
    again.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    again.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".cache" / "mnist")

    results = commands.add_parser("results", help="Markdown table of the packages in a folder")
    results.add_argument(
        "--model-dir",
        "--out",
        dest="out",
        type=Path,
        default=REPO_ROOT / "models",
        help="model folder to read (default: %(default)s)",
    )
    return parser


def _options(args: argparse.Namespace, command: str, dry_run: bool) -> RunOptions:
    return RunOptions(
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        out_dir=args.out,
        runs_dir=args.runs_dir,
        version=args.version,
        device=args.device,
        resume=args.resume,
        dry_run=dry_run,
        command=command,
    )


def _write_result(summary: PackageSummary) -> None:
    """The command's actual output: one line per package on stdout."""
    card = summary.card
    verdict = "meets" if summary.meets_target else "MISSES"
    if summary.dry_run:
        verdict = "dry run, not held to"
    sys.stdout.write(
        f"{summary.package_dir}: test accuracy {card.metrics.test_accuracy:.4f} "
        f"({verdict} target {summary.target_accuracy:.4f}), parameters {card.parameters}, "
        f"ECE {card.calibration.ece_before:.4f} -> {card.calibration.ece_after:.4f}\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    if args.command == "results":
        sys.stdout.write(results_table(args.out))
        return 0
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    command = "python -m training " + shlex.join(arguments)
    try:
        if args.command == "finetune":
            _write_finetuned(finetune(_finetune_options(args, command)))
        elif args.command == "ensemble":
            options = _options(args, command, dry_run=False)
            _write_result(ensemble_and_export(args.members, options, name=args.name))
        elif args.command == "remeasure":
            splits = load_mnist(args.data_dir, args.cache_dir)
            for package in find_packages(args.out).values():
                card = remeasure(package, splits)
                sys.stdout.write(f"{package}: test ECE {card.calibration.test_ece:.4f}\n")
        else:
            _train(args, command=command)
    except (
        DatasetError,
        ExportError,
        CheckpointMismatch,
        FineTuneError,
        LabelledDataError,
        PackageError,
        EnsembleError,
    ) as error:
        # Expected failures get one clear line, not a traceback.
        logger.error("%s", error)
        return 1
    return 0


def _finetune_options(args: argparse.Namespace, command: str) -> FineTuneOptions:
    if args.version != "1":
        build_parser().error("finetune chooses the version: 1, or one more than NAME's newest")
    for flag, value in (("--held-out", args.held_out), ("--mnist-fraction", args.mnist_fraction)):
        if not 0.0 <= value < 1.0 or (flag == "--held-out" and value == 0.0):
            build_parser().error(f"{flag} must be a fraction in (0, 1), got {value}")
    return FineTuneOptions(
        base=args.base,
        data=args.data,
        name=args.name,
        model_dir=args.out,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        runs_dir=args.runs_dir,
        recipe=with_overrides(
            FINETUNE_RECIPE, epochs=args.epochs, lr=args.lr, dry_run=args.dry_run
        ),
        mnist_fraction=args.mnist_fraction,
        held_out_fraction=args.held_out,
        split_seed=args.seed,
        min_per_digit=args.min_per_digit,
        strict=args.strict,
        resume=args.resume,
        dry_run=args.dry_run,
        device=args.device,
        command=command,
    )


def _shown(path: Path) -> Path:
    """``path`` relative to the working folder when it lies in it (as people typed it)."""
    absolute = path.resolve()
    return absolute.relative_to(Path.cwd()) if absolute.is_relative_to(Path.cwd()) else path


def _write_finetuned(summary: FineTuneSummary) -> None:
    """Before and after, and how to serve the new package."""
    tuning = summary.fine_tuning
    base = f"{tuning.base.name}/{tuning.base.version}"
    name = f"{summary.card.name}/{summary.card.version}"
    held = tuning.split.held_out_images
    sys.stdout.write(
        f"{_shown(summary.package_dir)}: fine-tuned from {base} on {tuning.split.train_images} own "
        f"images ({summary.duration_s:.0f} s)\n"
        f"  own held-out ({held} images): {tuning.before.held_out:.2%} -> "
        f"{tuning.after.held_out:.2%}\n"
        f"  MNIST test ({tuning.after.mnist_test_samples} digits): "
        f"{tuning.before.mnist_test:.2%} -> {tuning.after.mnist_test:.2%}\n"
        f"Serve it: POST /models/reload (digits reload), then ask for model={summary.card.name} "
        f"({name})\n"
    )


def _train(args: argparse.Namespace, command: str) -> None:
    if args.command == "train":
        architecture = get_architecture(args.arch)
        recipe = with_overrides(
            architecture.recipe,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            seed=args.seed,
            dry_run=args.dry_run,
        )
        options = _options(args, command, args.dry_run)
        _write_result(train_and_export(architecture, recipe, options, name=args.name))
        return

    options = _options(args, command, dry_run=False)
    for name in args.arch:
        architecture = get_architecture(name)
        _write_result(train_and_export(architecture, architecture.recipe, options))


if __name__ == "__main__":
    sys.exit(main())
