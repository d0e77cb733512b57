"""Fitting a network: one epoch, evaluation, and the resumable loop that keeps the best weights.

The loop checkpoints after every epoch (model, optimiser, scheduler, history, best weights and
every random state) under a run directory, so ``--resume`` continues an interrupted run exactly
where it stopped. Only the validation split is seen here: the test set is for the exported
package's report.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn
from tqdm import tqdm

from training.architectures import TrainingRecipe
from training.augment import random_affine
from training.data import DigitSet, batch_count, iterate_batches, normalise

logger = logging.getLogger(__name__)

CHECKPOINT_FILENAME = "checkpoint.pt"
EVAL_BATCH_SIZE = 1000


class CheckpointMismatch(ValueError):
    """``--resume`` found a checkpoint made with other settings."""


@dataclass(frozen=True)
class EpochRecord:
    """Metrics of one epoch; ``train_*`` are running means over the (augmented) batches."""

    epoch: int
    train_loss: float
    train_accuracy: float
    validation_loss: float
    validation_accuracy: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float


@dataclass
class FitResult:
    """What :func:`fit` leaves behind; the model passed in holds the best weights."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_validation_accuracy: float = 0.0
    duration_s: float = 0.0


def select_device(requested: str | None = None) -> torch.device:
    """``requested`` if given, else CUDA when present, else the CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_optimizer(model: nn.Module, recipe: TrainingRecipe) -> torch.optim.Optimizer:
    """The recipe's optimiser over all parameters of ``model``."""
    parameters = model.parameters()
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=recipe.lr, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay
        )
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, recipe: TrainingRecipe, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-batch learning-rate schedule over ``epochs * steps_per_epoch`` steps."""
    # OneCycleLR needs a few steps per phase; a dry run has fewer, and then ends mid-cycle.
    total_steps = max(10, epochs * steps_per_epoch)
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=total_steps, pct_start=0.2
        )
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _to_device(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, 1, 28, 28) pixels on ``device`` in channels-last layout, which the CPU (oneDNN) and
    GPU convolution kernels run fastest on; the result is the same tensor, not a transpose."""
    return pixels.to(device).contiguous(memory_format=torch.channels_last)


def _progress(total: int, description: str) -> tqdm:
    # A bar is noise in logs and CI: show it only on an interactive terminal.
    return tqdm(total=total, desc=description, leave=False, disable=not sys.stderr.isatty())


def train_one_epoch(
    model: nn.Module,
    digits: DigitSet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    recipe: TrainingRecipe,
    *,
    device: torch.device,
    generator: torch.Generator,
    max_batches: int | None = None,
    description: str = "train",
) -> Evaluation:
    """One pass over shuffled ``digits`` (augmented per the recipe); returns the running mean
    loss and accuracy over the batches seen."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    batches = iterate_batches(digits, recipe.batch_size, generator=generator, limit=max_batches)
    with _progress(batch_count(digits, recipe.batch_size, max_batches), description) as bar:
        for pixels, labels in batches:  # (B, 1, 28, 28) in [0, 1], (B,)
            if recipe.augmentation is not None:
                pixels = random_affine(pixels, recipe.augmentation, generator)
            pixels, labels = _to_device(normalise(pixels), device), labels.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.bfloat16):
                logits = model(pixels).float()  # (B, 10)
            loss = F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * labels.numel()
            correct += int((logits.argmax(dim=1) == labels).sum())
            seen += labels.numel()
            bar.update()
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
    return Evaluation(loss=loss_sum / max(seen, 1), accuracy=correct / max(seen, 1))


@torch.inference_mode()
def predict_logits(
    model: Callable[[torch.Tensor], torch.Tensor],
    digits: DigitSet,
    *,
    device: torch.device,
    normalised_input: bool = True,
    batch_size: int = EVAL_BATCH_SIZE,
) -> torch.Tensor:
    """Logits (N, 10) of ``model`` on ``digits``, on the CPU.

    ``normalised_input`` says whether the model expects normalised pixels (the bare network) or
    [0, 1] pixels (an exported package, which normalises itself).
    """
    outputs = []
    for pixels, _ in iterate_batches(digits, batch_size):
        batch = normalise(pixels) if normalised_input else pixels
        outputs.append(model(_to_device(batch, device)).float().cpu())
    return torch.cat(outputs)


def evaluate(model: nn.Module, digits: DigitSet, *, device: torch.device) -> Evaluation:
    """Mean cross-entropy and accuracy of the bare network on ``digits`` (eval mode)."""
    model.eval()
    logits = predict_logits(model, digits, device=device)
    return Evaluation(
        loss=float(F.cross_entropy(logits, digits.labels)),
        accuracy=float((logits.argmax(dim=1) == digits.labels).double().mean()),
    )


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    # Write then rename, so an interrupted save never leaves a truncated checkpoint behind.
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)


def fit(
    model: nn.Module,
    train: DigitSet,
    validation: DigitSet,
    recipe: TrainingRecipe,
    *,
    device: torch.device,
    run_dir: Path,
    resume: bool = False,
    max_batches: int | None = None,
) -> FitResult:
    """Train ``model`` for ``recipe.epochs`` epochs, checkpointing each epoch in ``run_dir``.

    With ``resume`` and a checkpoint made with the same recipe, training continues after the
    last finished epoch. On return ``model`` holds the weights of the epoch with the best
    validation accuracy (ties go to the later epoch, which saw more of the schedule).
    """
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    model.to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    steps = batch_count(train, recipe.batch_size, max_batches)
    scheduler = make_scheduler(optimizer, recipe, steps, recipe.epochs)
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    first_epoch = 1
    checkpoint_path = run_dir / CHECKPOINT_FILENAME
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe_record = asdict(recipe)

    if resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        if state["recipe"] != recipe_record:
            raise CheckpointMismatch(
                f"checkpoint {checkpoint_path} was made with a different recipe "
                f"({state['recipe']}); resume with the same settings or start afresh"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        best_state = state["best_model"]
        result = FitResult(
            history=[EpochRecord(**record) for record in state["history"]],
            best_epoch=state["best_epoch"],
            best_validation_accuracy=state["best_validation_accuracy"],
            duration_s=state["duration_s"],
        )
        first_epoch = state["epoch"] + 1
        logger.info("resuming %s after epoch %d", checkpoint_path, state["epoch"])
    elif resume:
        logger.warning("no checkpoint at %s: starting afresh", checkpoint_path)

    for epoch in range(first_epoch, recipe.epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        fitted = train_one_epoch(
            model,
            train,
            optimizer,
            scheduler,
            recipe,
            device=device,
            generator=generator,
            max_batches=max_batches,
            description=f"epoch {epoch}/{recipe.epochs}",
        )
        checked = evaluate(model, validation, device=device)
        seconds = time.perf_counter() - started
        record = EpochRecord(
            epoch, fitted.loss, fitted.accuracy, checked.loss, checked.accuracy, lr, seconds
        )
        result.history.append(record)
        result.duration_s += seconds
        if checked.accuracy >= result.best_validation_accuracy:
            result.best_epoch, result.best_validation_accuracy = epoch, checked.accuracy
            best_state = copy.deepcopy(model.state_dict())
        logger.info(
            "epoch %d/%d: train loss %.4f acc %.4f | validation loss %.4f acc %.4f | %.0f s",
            epoch,
            recipe.epochs,
            fitted.loss,
            fitted.accuracy,
            checked.loss,
            checked.accuracy,
            seconds,
        )
        _save_checkpoint(
            checkpoint_path,
            {
                "recipe": recipe_record,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "best_model": best_state,
                "best_epoch": result.best_epoch,
                "best_validation_accuracy": result.best_validation_accuracy,
                "history": [asdict(item) for item in result.history],
                "duration_s": result.duration_s,
            },
        )

    model.load_state_dict(best_state)
    model.eval()
    logger.info(
        "best validation accuracy %.4f at epoch %d",
        result.best_validation_accuracy,
        result.best_epoch,
    )
    return result
