from __future__ import annotations

from pathlib import Path

from service.packages.card import ModelCard
from training.results import HEADER, results_table

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_table_has_a_row_per_committed_package_with_its_figures() -> None:
    table = results_table(MODELS)
    assert table.startswith(HEADER)
    rows = table.removeprefix(HEADER).splitlines()
    cards = [ModelCard.read(path.parent) for path in MODELS.glob("*/*/metadata.json")]
    assert len(rows) == len(cards) > 0
    for card in cards:
        (row,) = [row for row in rows if row.startswith(f"| `{card.name}` v{card.version} |")]
        assert f"{card.metrics.test_accuracy:.2%}" in row
        assert f"{card.parameters:,}" in row


def test_empty_folder_gives_just_the_header(tmp_path: Path) -> None:
    assert results_table(tmp_path) == HEADER
