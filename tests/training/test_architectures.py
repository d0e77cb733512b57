from __future__ import annotations

import pytest
import torch

from training.architectures import (
    ARCHITECTURES,
    TRAIN_ALL,
    TRAINABLE,
    count_parameters,
    get_architecture,
)

#: Trainable parameters of the faithful networks, as the sources' layer sizes give them.
EXPECTED_PARAMETERS = {
    "mlp": 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10,  # 109,386
    "lenet1": (4 * 25 + 4) + (12 * 4 * 25 + 12) + (192 * 10 + 10),  # 3,246
    "lenet5": 156 + 2_416 + 48_120 + 10_164 + 850,  # 61,706 (C3 fully connected, linear output)
    "cnn_small": 832 + 51_264 + 3_212_288 + 10_250,  # 3,274,634 (TensorFlow tutorial)
    # 3x3 convs without bias (BatchNorm follows) + BatchNorm affine + 1960-200-500-10.
    "cnn_bn": (45 + 450 + 1_800 + 7_200) + 2 * (5 + 10 + 20 + 40) + 392_200 + 100_500 + 5_010,
}


def test_registry_has_the_six_architectures_and_the_ensemble() -> None:
    assert set(ARCHITECTURES) == {
        "mlp",
        "lenet1",
        "lenet5",
        "cnn_small",
        "cnn_bn",
        "default",
        "default_wide",
        "default_ensemble",
    }
    assert TRAIN_ALL == ["mlp", "lenet1", "lenet5", "cnn_small", "cnn_bn", "default"]
    assert set(TRAINABLE) - set(TRAIN_ALL) == {"default_wide"}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("batch", [1, 5])
def test_network_maps_digits_to_ten_logits(name: str, batch: int) -> None:
    torch.manual_seed(0)
    network = get_architecture(name).build().eval()
    with torch.no_grad():
        logits = network(torch.randn(batch, 1, 28, 28))
    assert logits.shape == (batch, 10)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED_PARAMETERS.items()))
def test_parameter_count_matches_the_source(name: str, expected: int) -> None:
    assert count_parameters(get_architecture(name).build()) == expected


def test_default_model_is_compact() -> None:
    # Sized for CPU training and serving.
    assert 100_000 <= count_parameters(get_architecture("default").build()) <= 400_000


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_recipe_is_complete_and_target_is_demanding(name: str) -> None:
    architecture = get_architecture(name)
    assert architecture.recipe.epochs >= 1
    assert architecture.recipe.lr > 0
    assert 0.98 <= architecture.target_accuracy < 1.0
    assert architecture.recipe.describe_schedule()


def test_unknown_architecture_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="lenet5"):
        get_architecture("lenet7")
