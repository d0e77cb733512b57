"""Loading a verified package: TorchScript, optimisation, the one-image path, the self-test
on every forward path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from service.inference.selftest import shipped_selftest_digits
from service.packages.card import ModelCard
from service.packages.loading import (
    SelfTestDigit,
    fastest_single_image,
    load_module,
    load_package,
    optimized_for_inference,
    probabilities,
    resolve_device,
    self_test,
    without_onednn,
)
from service.packages.verification import PackageError, read_verified_card
from service.settings import Settings
from tests.service.conftest import BUNDLED_MODELS, write_package


def test_not_torchscript_is_refused(model_dir: Path) -> None:
    package = write_package(model_dir, "pickle")
    card = read_verified_card(package)
    (package / "model.pt").write_bytes(b"PK\x03\x04 not a real archive")
    with pytest.raises(PackageError, match="does not load"):
        load_module(package, card, torch.device("cpu"))


SHIPPED = shipped_selftest_digits(Settings().max_image_pixels)
CPU = torch.device("cpu")


def test_self_test_names_the_digits_it_got_wrong(model_dir: Path) -> None:
    package = write_package(model_dir, "untrained")
    predict = probabilities(load_module(package, read_verified_card(package), CPU))
    image = torch.zeros(28, 28).numpy()
    predicted = int(predict(torch.zeros(1, 1, 28, 28)).argmax())
    self_test({"batched": predict}, CPU, [SelfTestDigit("right.png", image, predicted)])
    wrong = SelfTestDigit("wrong.png", image, (predicted + 1) % 10)
    with pytest.raises(PackageError, match=r"wrong\.png read as \d \(batched\)"):
        self_test({"batched": predict}, CPU, [wrong])


def test_self_test_runs_every_forward_path(model_dir: Path) -> None:
    """A one-image path that answers wrong fails the self-test though the batch path is right."""
    predict = probabilities(load_module(BUNDLED_MODELS / "lenet5" / "1", _card("lenet5"), CPU))

    def broken_single(batch: torch.Tensor) -> torch.Tensor:
        assert batch.shape[0] == 1  # the one-image path is run one image at a time
        return predict(batch).roll(1, dims=1)

    self_test({"batched": predict, "optimised": predict}, CPU, SHIPPED)
    with pytest.raises(PackageError, match=r"read as \d \(exported, without oneDNN\)"):
        self_test({"batched": predict, "exported, without oneDNN": broken_single}, CPU, SHIPPED)


def test_load_package_gives_both_paths_self_tested() -> None:
    loaded = load_package(
        BUNDLED_MODELS / "lenet5" / "1", CPU, warm_batch_sizes=[1, 8], selftest_digits=SHIPPED
    )
    assert loaded.card.name == "lenet5" and loaded.fingerprint is not None
    assert loaded.single_image_ms > 0
    images = torch.from_numpy(np.stack([d.image for d in SHIPPED]))[:, None]
    with torch.inference_mode():
        assert loaded.predict(images).argmax(1).tolist() == [d.digit for d in SHIPPED]
        assert int(loaded.predict_one(images[:1]).argmax()) == SHIPPED[0].digit


def _card(name: str) -> ModelCard:
    return read_verified_card(BUNDLED_MODELS / name / "1")


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
    exported = load_module(package, read_verified_card(package), CPU)
    served = optimized_for_inference(exported, CPU)
    assert "mkldnn" in str(served.graph) and "mkldnn" not in str(exported.graph)
    digits = torch.from_numpy(np.stack([d.image for d in SHIPPED]))
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
    exported = load_module(package, card, CPU)
    optimized = optimized_for_inference(exported, CPU)
    single = fastest_single_image(probabilities(optimized), exported, optimized, CPU)
    assert single.kind in ("optimised", "exported, without oneDNN") and single.ms > 0
    digits = [d.image for d in SHIPPED]
    with torch.inference_mode():
        batched = probabilities(optimized)(torch.from_numpy(np.stack(digits)).unsqueeze(1))
        for index, digit in enumerate(digits):
            one = single.predict(torch.from_numpy(digit)[None, None])  # (1, 1, 28, 28)
            assert torch.allclose(one[0], batched[index], atol=1e-5)
