"""An ensemble of trained packages as one package: ``python -m training ensemble``.

    default/1 (seed 1) ─┐
    default   (seed 2) ─┼─> DigitNetEnsemble: mean of the members' softmax -> one temperature
    default   (seed 3) ─┘     -> exported, measured and carded like any package

Each member is an ordinary package of the member architecture (``python -m training train
--arch default --seed N``), so its training is checkpointed and resumable on its own; the
ensemble only reads their weights, so the service serves it as one TorchScript module and
needs no change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from service.packages.card import ModelCard, TrainingSettings
from service.packages.verification import read_verified_card
from training.architectures import DigitNetEnsemble, EnsembleConfig, get_architecture
from training.data import load_mnist
from training.export import load_torchscript
from training.pipeline import PackageSummary, RunOptions, package_network
from training.train import select_device

logger = logging.getLogger(__name__)

ENSEMBLE = "default_ensemble"


class EnsembleError(ValueError):
    """The members cannot make the ensemble: wrong count or architecture."""


def ensemble_and_export(
    member_dirs: Sequence[Path], options: RunOptions, *, name: str = "default"
) -> PackageSummary:
    """Average the members' networks into one package ``<out_dir>/<name>/<version>/``."""
    architecture = get_architecture(ENSEMBLE)
    member_architecture = architecture.members_of
    count = EnsembleConfig().members
    cards = [read_verified_card(folder) for folder in member_dirs]
    if len(cards) != count:
        raise EnsembleError(f"{ENSEMBLE} has {count} members; {len(cards)} packages were given")
    wrong = [
        f"{c.name}/{c.version} ({c.architecture})"
        for c in cards
        if c.architecture != member_architecture
    ]
    if wrong:
        raise EnsembleError(f"members must be {member_architecture} packages: {', '.join(wrong)}")
    network = DigitNetEnsemble(EnsembleConfig())
    for member, folder, card in zip(network.members, member_dirs, cards, strict=True):
        weights = load_torchscript(folder / card.files.torchscript.path).network.state_dict()
        member.load_state_dict(weights)
    splits = load_mnist(options.data_dir, options.cache_dir)
    return package_network(
        architecture,
        network,
        _training(cards),
        [],
        splits,
        options,
        device=select_device(options.device),
        name=name,
        description=_description(architecture.description, cards),
    )


def _training(cards: Sequence[ModelCard]) -> TrainingSettings:
    """The first member's settings, with the members' seeds and their training time summed."""
    seeds = ", ".join(str(card.training.seed) for card in cards)
    first = cards[0].training
    return first.model_copy(
        update={
            "schedule": f"{first.schedule}; members trained apart, seeds {seeds}",
            "duration_s": round(sum(card.training.duration_s for card in cards), 1),
        }
    )


def _description(text: str, cards: Sequence[ModelCard]) -> str:
    members = "; ".join(
        f"{card.name}/{card.version} seed {card.training.seed}, test "
        f"{card.metrics.test_accuracy:.2%}, sha256 {card.sha256[:12]}"
        for card in cards
    )
    return f"{text} Members: {members}."
