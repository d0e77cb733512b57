"""The results table of the packages in a model folder (Markdown, for the README)."""

from __future__ import annotations

from pathlib import Path

from service.packages.card import ModelCard, version_key
from training.architectures import ARCHITECTURES

HEADER = (
    "| model | parameters | test accuracy | source reports | target | validation ECE before → "
    "after (T) | test ECE | training time | device |\n"
    "|---|---:|---:|---:|---:|---|---:|---:|---|\n"
)


def _row(card: ModelCard) -> str:
    architecture = ARCHITECTURES.get(card.architecture)
    source = f"{architecture.source_accuracy:.2%}" if architecture else "–"
    target = f"{architecture.target_accuracy:.2%}" if architecture else "–"
    calibration = card.calibration
    minutes = card.training.duration_s / 60
    test_ece = "–" if calibration.test_ece is None else f"{calibration.test_ece:.4f}"
    return (
        f"| `{card.name}` v{card.version} | {card.parameters:,} | "
        f"{card.metrics.test_accuracy:.2%} | {source} | {target} | "
        f"{calibration.ece_before:.4f} → {calibration.ece_after:.4f} "
        f"({calibration.temperature:.2f}) | {test_ece} | {minutes:.1f} min | "
        f"{card.training.device} |\n"
    )


def results_table(model_dir: Path) -> str:
    """One row per package under ``model_dir``, in registry order then by version."""
    order = {name: index for index, name in enumerate(ARCHITECTURES)}
    cards = [ModelCard.read(card.parent) for card in model_dir.glob("*/*/metadata.json")]
    cards.sort(
        key=lambda c: (order.get(c.architecture, len(order)), c.name, version_key(c.version))
    )
    return HEADER + "".join(_row(card) for card in cards)
