"""The networks, each faithful to its source, and a registry name -> builder + training recipe.

Every network takes the *normalised* input ``(B, 1, 28, 28)`` (see ``training.data.normalise``)
and returns logits ``(B, 10)``; the exported package wraps it with the normalisation and the
calibration temperature. Each network's shape settings live in a frozen dataclass, and each
registry entry carries the training recipe (hyper-parameters) that ``train-all`` uses, so no
flags are needed to reproduce a package.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import nn

from training.augment import AffineAugmentation

NUM_CLASSES = 10


# --- mlp ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlpConfig:
    hidden: tuple[int, ...] = (128, 64)


class Mlp(nn.Module):
    """784-128-64-10 with ReLU: the Keras/PyTorch beginner's multilayer perceptron."""

    def __init__(self, config: MlpConfig) -> None:
        super().__init__()
        widths = [28 * 28, *config.hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], NUM_CLASSES))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers(x)  # (B, 1, 28, 28) -> (B, 10)
        return logits


# --- lenet1 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeNet1Config:
    channels: tuple[int, int] = (4, 12)


class LeNet1(nn.Module):
    """LeNet-1 (LeCun et al. 1998, fig. 9 comparison): tanh convolutions and average pooling.

    The 1998 net connected each layer-3 map to a subset of the layer-1 maps; here every map is
    connected (the usual modern reading), hence 3,246 rather than ~2,600 parameters.
    """

    def __init__(self, config: LeNet1Config) -> None:
        super().__init__()
        first, second = config.channels
        self.features = nn.Sequential(
            nn.Conv2d(1, first, kernel_size=5),  # (B, 4, 24, 24)
            nn.Tanh(),
            nn.AvgPool2d(2),  # (B, 4, 12, 12)
            nn.Conv2d(first, second, kernel_size=5),  # (B, 12, 8, 8)
            nn.Tanh(),
            nn.AvgPool2d(2),  # (B, 12, 4, 4)
        )
        self.classifier = nn.Linear(second * 4 * 4, NUM_CLASSES)  # 192 -> 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x).flatten(1))  # (B, 10)
        return logits


# --- lenet5 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeNet5Config:
    channels: tuple[int, int, int] = (6, 16, 120)
    hidden: int = 84


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with tanh and average pooling ("subsampling").

    Two simplifications, as in most re-implementations: C3 is fully connected to S2 (the
    paper's partial connection table aside) and the output is a linear layer instead of the
    Euclidean RBF units; that makes 61,706 parameters.
    """

    def __init__(self, config: LeNet5Config) -> None:
        super().__init__()
        c1, c3, c5 = config.channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=5, padding=2),  # (B, 6, 28, 28), the paper's 32x32
            nn.Tanh(),
            nn.AvgPool2d(2),  # (B, 6, 14, 14)
            nn.Conv2d(c1, c3, kernel_size=5),  # (B, 16, 10, 10)
            nn.Tanh(),
            nn.AvgPool2d(2),  # (B, 16, 5, 5)
            nn.Conv2d(c3, c5, kernel_size=5),  # (B, 120, 1, 1)
            nn.Tanh(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(c5, config.hidden),
            nn.Tanh(),
            nn.Linear(config.hidden, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x).flatten(1))  # (B, 10)
        return logits


# --- cnn_small ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CnnSmallConfig:
    channels: tuple[int, int] = (32, 64)
    hidden: int = 1024
    dropout: float = 0.5


class CnnSmall(nn.Module):
    """The tutorial CNN ("Deep MNIST for Experts", TensorFlow 1.x; the same net is the classic
    PyTorch/Keras tutorial one): two 5x5 same-padded ReLU convolutions (32, 64) each followed by
    2x2 max-pooling, then 3136-1024-10 with dropout 0.5 before the output layer."""

    def __init__(self, config: CnnSmallConfig) -> None:
        super().__init__()
        first, second = config.channels
        self.features = nn.Sequential(
            nn.Conv2d(1, first, kernel_size=5, padding=2),  # (B, 32, 28, 28)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (B, 32, 14, 14)
            nn.Conv2d(first, second, kernel_size=5, padding=2),  # (B, 64, 14, 14)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (B, 64, 7, 7)
        )
        self.classifier = nn.Sequential(
            nn.Linear(second * 7 * 7, config.hidden),  # 3136 -> 1024
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x).flatten(1))  # (B, 10)
        return logits


# --- cnn_bn ---------------------------------------------------------------------------------


def _conv_bn_relu(channels_in: int, channels_out: int) -> list[nn.Module]:
    """3x3 same-padding convolution, BatchNorm, ReLU (the conv bias is redundant with BN)."""
    return [
        nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    ]


@dataclass(frozen=True)
class CnnBnConfig:
    channels: tuple[int, int, int, int] = (5, 10, 20, 40)
    hidden: tuple[int, int] = (200, 500)
    dropout: float = 0.5


class CnnBn(nn.Module):
    """Four 3x3 convolutions with BatchNorm, max-pooling after the second and the fourth, then
    1960-200-500-10 with dropout 0.5 before each hidden layer's successor."""

    def __init__(self, config: CnnBnConfig) -> None:
        super().__init__()
        c1, c2, c3, c4 = config.channels
        self.features = nn.Sequential(
            *_conv_bn_relu(1, c1),  # (B, 5, 28, 28)
            *_conv_bn_relu(c1, c2),  # (B, 10, 28, 28)
            nn.MaxPool2d(2),  # (B, 10, 14, 14)
            *_conv_bn_relu(c2, c3),  # (B, 20, 14, 14)
            *_conv_bn_relu(c3, c4),  # (B, 40, 14, 14)
            nn.MaxPool2d(2),  # (B, 40, 7, 7)
        )
        first, second = config.hidden
        self.classifier = nn.Sequential(
            nn.Linear(c4 * 7 * 7, first),  # 1960 -> 200
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(first, second),  # 200 -> 500
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(second, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x).flatten(1))  # (B, 10)
        return logits


# --- default --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitNetConfig:
    channels: tuple[int, int, int] = (32, 64, 128)
    dropout: float = 0.1


class DigitNet(nn.Module):
    """The default model: a compact VGG-style CNN sized for a CPU budget.

    One 3x3 conv-BN-ReLU layer at 28x28, then two stages of two such layers (14x14, 7x7), with
    max-pooling in between, global average pooling and one linear layer. The full-resolution
    stage has a single layer because it is the most expensive one per channel; global pooling
    keeps the classifier tiny. With random affine augmentation it generalises well on MNIST.
    """

    def __init__(self, config: DigitNetConfig) -> None:
        super().__init__()
        c1, c2, c3 = config.channels
        self.features = nn.Sequential(
            *_conv_bn_relu(1, c1),  # (B, 32, 28, 28)
            nn.MaxPool2d(2),  # (B, 32, 14, 14)
            *_conv_bn_relu(c1, c2),  # (B, 64, 14, 14)
            *_conv_bn_relu(c2, c2),
            nn.MaxPool2d(2),  # (B, 64, 7, 7)
            *_conv_bn_relu(c2, c3),  # (B, 128, 7, 7)
            *_conv_bn_relu(c3, c3),
            nn.AdaptiveAvgPool2d(1),  # (B, 128, 1, 1)
        )
        self.classifier = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(c3, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x).flatten(1))  # (B, 10)
        return logits


# --- ensemble ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnsembleConfig:
    members: int = 3  # DigitNets, each trained with its own seed


class DigitNetEnsemble(nn.Module):
    """Several DigitNets averaged: the mean of their softmax probabilities, returned as log
    probabilities so the package's one temperature scales it like any network's logits.

    Members disagree mostly on the hard digits, so the average is right more often than any
    of them; its cost is one forward pass per member.
    """

    def __init__(self, config: EnsembleConfig) -> None:
        super().__init__()
        self.members = nn.ModuleList(DigitNet(DigitNetConfig()) for _ in range(config.members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities: list[torch.Tensor] = []
        for member in self.members:
            probabilities.append(member(x).softmax(dim=1))  # (B, 10)
        mean = torch.stack(probabilities).mean(dim=0)  # (members, B, 10) -> (B, 10)
        # log of the averaged probabilities: (B, 10); the floor keeps log(0) finite.
        return mean.clamp_min(1e-12).log()


# --- registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRecipe:
    """Hyper-parameters of one architecture's training run (the ``train`` flags' defaults)."""

    epochs: int
    lr: float  # peak learning rate for "onecycle"
    batch_size: int = 128
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    label_smoothing: float = 0.0
    augmentation: AffineAugmentation | None = None
    # bfloat16 autocast for the training forward pass: ~1.6x faster convolutions on a CPU with
    # AVX512-BF16 (BatchNorm and the loss stay float32; evaluation and export are float32).
    bfloat16: bool = False
    seed: int = 1

    def describe_schedule(self) -> str:
        """One line for the model card."""
        if self.schedule == "onecycle":
            return f"OneCycleLR (cosine), peak lr {self.lr:g}, per batch"
        if self.schedule == "cosine":
            return f"cosine annealing from lr {self.lr:g} to 0, per batch"
        return f"constant lr {self.lr:g}"


@dataclass(frozen=True)
class Architecture:
    """A registry entry: how to build the network and how to train it."""

    name: str
    build: Callable[[], nn.Module]
    recipe: TrainingRecipe
    source: str  # where the network comes from (for ``default``: what it is measured against)
    source_accuracy: float  # MNIST test accuracy the source reports
    target_accuracy: float  # what our package must reach on the MNIST test set
    description: str = ""
    notes: list[str] = field(default_factory=list)
    #: Set for an ensemble: made from trained packages of this architecture by ``python -m
    #: training ensemble``, not trained by ``train`` (its recipe is its members').
    members_of: str | None = None
    #: Whether ``train-all`` (``make train``) trains it: not a candidate being tried out.
    in_train_all: bool = True


LIGHT_AFFINE = AffineAugmentation(rotation_deg=8.0, scale=0.08, shift=0.08, shear_deg=5.0)
DEFAULT_RECIPE = TrainingRecipe(
    epochs=30,
    lr=0.1,
    optimizer="sgd",
    weight_decay=5e-4,
    label_smoothing=0.1,
    augmentation=AffineAugmentation(),
    bfloat16=True,
)

ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            name="mlp",
            build=lambda: Mlp(MlpConfig()),
            recipe=TrainingRecipe(
                epochs=30, lr=3e-3, optimizer="adamw", weight_decay=1e-4, augmentation=LIGHT_AFFINE
            ),
            source="784-128-64-10 ReLU multilayer perceptron (TensorFlow/Keras beginner tutorial)",
            source_accuracy=0.974,
            target_accuracy=0.980,
            description="Multilayer perceptron 784-128-64-10 with ReLU.",
        ),
        Architecture(
            name="lenet1",
            build=lambda: LeNet1(LeNet1Config()),
            recipe=TrainingRecipe(epochs=30, lr=1e-2, optimizer="adam"),
            source="LeNet-1, LeCun, Bottou, Bengio & Haffner 1998",
            source_accuracy=0.983,
            target_accuracy=0.985,
            description="LeNet-1: two tanh 5x5 convolutions with average pooling, 192->10.",
        ),
        Architecture(
            name="lenet5",
            build=lambda: LeNet5(LeNet5Config()),
            recipe=TrainingRecipe(epochs=20, lr=3e-3, optimizer="adam", augmentation=LIGHT_AFFINE),
            source="LeNet-5, LeCun, Bottou, Bengio & Haffner 1998",
            source_accuracy=0.9905,
            target_accuracy=0.991,
            description="LeNet-5: tanh convolutions 6-16-120 with average pooling, 120-84-10.",
        ),
        Architecture(
            name="cnn_small",
            build=lambda: CnnSmall(CnnSmallConfig()),
            recipe=TrainingRecipe(epochs=12, lr=1e-3, optimizer="adam", augmentation=LIGHT_AFFINE),
            source="TensorFlow 'Deep MNIST for Experts' tutorial CNN (conv 5x5 32, 64 + max-pool, "
            "3136-1024-10, dropout 0.5)",
            source_accuracy=0.992,
            target_accuracy=0.993,
            description="Tutorial CNN: two 5x5 convolutions (32, 64) with max-pooling, "
            "3136-1024-10 with dropout 0.5.",
        ),
        Architecture(
            name="cnn_bn",
            build=lambda: CnnBn(CnnBnConfig()),
            recipe=TrainingRecipe(epochs=20, lr=3e-3, optimizer="adam", augmentation=LIGHT_AFFINE),
            source="four 3x3 conv (5-10-20-40) + BatchNorm CNN, 1960-200-500-10 with dropout",
            source_accuracy=0.99,
            target_accuracy=0.993,
            description="Four 3x3 conv-BN layers with two max-pools, 1960-200-500-10, dropout.",
        ),
        Architecture(
            name="default",
            build=lambda: DigitNet(DigitNetConfig()),
            recipe=DEFAULT_RECIPE,
            source="state-of-the-art single CNNs (this network is the project's own design)",
            source_accuracy=0.998,
            target_accuracy=0.997,
            description="Default model: compact VGG-style CNN (3x3 convolutions, 32-64-128 "
            "channels, BatchNorm, global average pooling) trained with random affine "
            "augmentation, label smoothing and a OneCycle SGD schedule.",
        ),
        Architecture(
            name="default_wide",
            build=lambda: DigitNet(DigitNetConfig(channels=(48, 96, 192))),
            recipe=replace(DEFAULT_RECIPE, epochs=40),
            source="state-of-the-art single CNNs (this network is the project's own design)",
            source_accuracy=0.998,
            target_accuracy=0.998,
            description="The default's network 1.5 times as wide (48-96-192 channels), "
            "trained a third longer with the same recipe: a candidate for a stronger default.",
            in_train_all=False,
        ),
        Architecture(
            name="default_ensemble",
            build=lambda: DigitNetEnsemble(EnsembleConfig()),
            recipe=DEFAULT_RECIPE,
            source="small ensembles of CNNs (99.85-99.9%); this one averages three of this "
            "project's DigitNets",
            source_accuracy=0.9985,
            target_accuracy=0.998,
            description="Three DigitNets (the default's network and recipe, seeds 1-3) whose "
            "softmax probabilities are averaged, with one temperature.",
            members_of="default",
        ),
    )
}


#: What ``train`` trains: every architecture but the ensembles; ``train-all`` the established
#: ones among them (``make train``), not candidates.
TRAINABLE = [name for name, arch in ARCHITECTURES.items() if arch.members_of is None]
TRAIN_ALL = [name for name in TRAINABLE if ARCHITECTURES[name].in_train_all]


def get_architecture(name: str) -> Architecture:
    """The registry entry ``name``; raises ``KeyError`` listing the known names."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise KeyError(f"unknown architecture {name!r}; known: {known}") from None


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
