from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from training.architectures import TrainingRecipe, get_architecture
from training.data import MnistSplits
from training.train import (
    CHECKPOINT_FILENAME,
    CheckpointMismatch,
    FitResult,
    evaluate,
    fit,
    make_optimizer,
    make_scheduler,
    select_device,
    train_one_epoch,
)

CPU = torch.device("cpu")
QUICK = TrainingRecipe(epochs=2, lr=3e-3, batch_size=64, optimizer="adam", seed=5)


def test_one_epoch_learns(mnist: MnistSplits) -> None:
    torch.manual_seed(0)
    model = get_architecture("mlp").build()
    train, validation = mnist.train.subset(5_000), mnist.validation.subset(1_000)
    before = evaluate(model, validation, device=CPU)
    optimizer = make_optimizer(model, QUICK)
    scheduler = make_scheduler(optimizer, QUICK, steps_per_epoch=79, epochs=1)
    fitted = train_one_epoch(
        model,
        train,
        optimizer,
        scheduler,
        QUICK,
        device=CPU,
        generator=torch.Generator().manual_seed(0),
    )
    after = evaluate(model, validation, device=CPU)
    assert 0.0 < fitted.accuracy <= 1.0
    assert after.loss < before.loss
    assert after.accuracy > 0.8 > before.accuracy


def test_augmented_bfloat16_epoch_runs(mnist: MnistSplits) -> None:
    recipe = replace(get_architecture("default").recipe, batch_size=32)
    model = get_architecture("default").build()
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch=2, epochs=1)
    fitted = train_one_epoch(
        model,
        mnist.train,
        optimizer,
        scheduler,
        recipe,
        device=CPU,
        generator=torch.Generator().manual_seed(0),
        max_batches=2,
    )
    assert fitted.loss > 0.0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _fit_quick(
    mnist: MnistSplits, run_dir: Path, recipe: TrainingRecipe = QUICK
) -> tuple[nn.Module, FitResult]:
    torch.manual_seed(recipe.seed)
    model = get_architecture("lenet1").build()
    result = fit(
        model,
        mnist.train.subset(2_000),
        mnist.validation.subset(500),
        recipe,
        device=CPU,
        run_dir=run_dir,
        resume=True,
        max_batches=10,
    )
    return model, result


def test_fit_checkpoints_keeps_the_best_epoch_and_resumes(
    mnist: MnistSplits, tmp_path: Path
) -> None:
    model, result = _fit_quick(mnist, tmp_path)
    assert (tmp_path / CHECKPOINT_FILENAME).is_file()
    assert [record.epoch for record in result.history] == [1, 2]
    best = max(result.history, key=lambda r: (r.validation_accuracy, r.epoch))
    assert (result.best_epoch, result.best_validation_accuracy) == (
        best.epoch,
        best.validation_accuracy,
    )
    # The model holds the best epoch's weights: re-evaluating gives that epoch's accuracy.
    again = evaluate(model, mnist.validation.subset(500), device=CPU)
    assert again.accuracy == pytest.approx(result.best_validation_accuracy)

    # Resuming a finished run trains nothing and restores the same weights and history.
    resumed_model, resumed = _fit_quick(mnist, tmp_path)
    assert resumed.history == result.history
    assert resumed.duration_s == pytest.approx(result.duration_s)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, resumed_model.state_dict()[name]), name


def test_resume_refuses_a_checkpoint_of_a_different_recipe(
    mnist: MnistSplits, tmp_path: Path
) -> None:
    _fit_quick(mnist, tmp_path)
    with pytest.raises(CheckpointMismatch, match="different recipe"):
        _fit_quick(mnist, tmp_path, replace(QUICK, lr=1e-3))


def test_device_is_chosen_at_run_time() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device().type == expected
    assert select_device("cpu") == CPU
