"""Packages are verified before anything in them is loaded: cards, folders, digests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from service.packages.loading import load_module
from service.packages.verification import PackageError, read_verified_card
from tests.service.conftest import write_package


def test_a_good_package_verifies_and_loads(model_dir: Path) -> None:
    package = write_package(model_dir, "good")
    card = read_verified_card(package)
    module = load_module(package, card, torch.device("cpu"))
    assert module(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_digest_mismatch_is_refused(model_dir: Path) -> None:
    package = write_package(model_dir, "tampered")
    with (package / "model.pt").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(PackageError, match="sha256"):
        read_verified_card(package)


def test_missing_model_file_is_refused(model_dir: Path) -> None:
    package = write_package(model_dir, "empty")
    (package / "model.pt").unlink()
    with pytest.raises(PackageError, match="missing"):
        read_verified_card(package)


@pytest.mark.parametrize(
    ("remove", "update", "complaint"),
    [
        (["files"], {}, "files"),
        ([], {"labels": ["0", "1"]}, "labels"),
        ([], {"unknown_field": 1}, "unknown_field"),
        ([], {"version": "v1"}, "version"),
    ],
)
def test_invalid_cards_are_refused_with_the_field(
    model_dir: Path, remove: list[str], update: dict[str, object], complaint: str
) -> None:
    package = write_package(model_dir, "bad")
    card = json.loads((package / "metadata.json").read_text())
    for key in remove:
        del card[key]
    card.update(update)
    (package / "metadata.json").write_text(json.dumps(card))
    with pytest.raises(PackageError, match=complaint):
        read_verified_card(package)


def test_card_in_the_wrong_folder_is_refused(model_dir: Path) -> None:
    package = write_package(model_dir, "right")
    (model_dir / "wrong").mkdir()
    moved = package.rename(model_dir / "wrong" / "1")
    with pytest.raises(PackageError, match="sits in wrong/1"):
        read_verified_card(moved)
