"""Packages are verified before they serve: digests, cards, folders, TorchScript, self-test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from service.app import shipped_selftest_digits
from service.repository import (
    PackageError,
    fastest_single_image,
    find_packages,
    load_module,
    optimized_for_inference,
    probabilities,
    read_verified_card,
    resolve_device,
    self_test,
    without_onednn,
)
from service.settings import Settings
from tests.service.conftest import BUNDLED_MODELS, write_package


def test_finds_packages_in_name_version_folders(model_dir: Path) -> None:
    write_package(model_dir, "b", "2")
    write_package(model_dir, "a", "1")
    (model_dir / "not-a-package").mkdir()
    assert [(p.parent.name, p.name) for p in find_packages(model_dir)] == [("a", "1"), ("b", "2")]


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


def test_not_torchscript_is_refused(model_dir: Path) -> None:
    package = write_package(model_dir, "pickle")
    card = read_verified_card(package)
    (package / "model.pt").write_bytes(b"PK\x03\x04 not a real archive")
    with pytest.raises(PackageError, match="does not load"):
        load_module(package, card, torch.device("cpu"))


def test_self_test_names_the_digits_it_got_wrong(model_dir: Path) -> None:
    package = write_package(model_dir, "untrained")
    module = load_module(package, read_verified_card(package), torch.device("cpu"))
    image = torch.zeros(28, 28).numpy()
    predicted = int(module(torch.zeros(1, 1, 28, 28)).argmax())
    self_test(module, torch.device("cpu"), [("right.png", image, predicted)])
    with pytest.raises(PackageError, match=r"wrong\.png read as"):
        self_test(module, torch.device("cpu"), [("wrong.png", image, (predicted + 1) % 10)])


def test_device_choice() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="DIGITS_DEVICE=cuda"):
            resolve_device("cuda")


@pytest.mark.parametrize("name", ["lenet5", "default"])
def test_served_module_is_optimised_and_answers_as_exported(name: str) -> None:
    package = BUNDLED_MODELS / name / "1"
    served = load_module(package, read_verified_card(package), torch.device("cpu"))
    exported = torch.jit.load(str(package / "model.pt")).eval()
    assert "mkldnn" in str(served.graph) and "mkldnn" not in str(exported.graph)
    digits = torch.from_numpy(
        np.stack([image for _, image, _ in shipped_selftest_digits(Settings())])
    )
    images = digits.unsqueeze(1).repeat(7, 1, 1, 1)  # (70, 1, 28, 28)
    with torch.inference_mode():
        for size in (1, 7, 64):
            assert torch.allclose(served(images[:size]), exported(images[:size]), atol=1e-4)


def test_a_module_the_optimiser_refuses_is_served_as_exported(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    package = write_package(model_dir, "tiny")
    module = torch.jit.load(str(package / "model.pt"))
    module.train()  # freezing needs eval mode: the optimiser raises
    assert optimized_for_inference(module, torch.device("cpu")) is module
    assert "inference optimisation failed" in caplog.text


def test_without_onednn_switches_onednn_off_for_the_call_only() -> None:
    seen: list[bool] = []

    def predict(batch: torch.Tensor) -> torch.Tensor:
        seen.append(bool(torch.backends.mkldnn.enabled))
        if batch.shape[0] == 2:
            raise RuntimeError("a failing forward pass")
        return batch

    run = without_onednn(predict)
    assert torch.backends.mkldnn.enabled
    run(torch.zeros(1, 1, 28, 28))
    with pytest.raises(RuntimeError, match="failing"):
        run(torch.zeros(2, 1, 28, 28))
    assert seen == [False, False]
    assert torch.backends.mkldnn.enabled  # restored, after an exception too


@pytest.mark.parametrize("name", ["lenet5", "default"])
def test_the_fastest_single_image_path_answers_as_the_batched_one(name: str) -> None:
    package = BUNDLED_MODELS / name / "1"
    card = read_verified_card(package)
    exported = load_module(package, card, torch.device("cpu"), optimize=False)
    optimized = optimized_for_inference(exported, torch.device("cpu"))
    single = fastest_single_image(exported, optimized, torch.device("cpu"))
    assert single.kind in ("optimised", "exported, without oneDNN") and single.ms > 0
    digits = [image for _, image, _ in shipped_selftest_digits(Settings())]
    with torch.inference_mode():
        batched = probabilities(optimized)(torch.from_numpy(np.stack(digits)).unsqueeze(1))
        for index, digit in enumerate(digits):
            one = single.predict(torch.from_numpy(digit)[None, None])  # (1, 1, 28, 28)
            assert torch.allclose(one[0], batched[index], atol=1e-5)
