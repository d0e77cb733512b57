"""An ensemble of trained packages as one package (``python -m training ensemble``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from service.packages.card import ModelCard
from tests.service.conftest import copy_bundled, digit_png, running_app
from training.__main__ import main
from training.architectures import DigitNetEnsemble, EnsembleConfig, get_architecture
from training.export import load_torchscript


def ensemble(tmp_path: Path, members: list[Path], mnist_dir: Path, cache: Path) -> int:
    return main(
        [
            "ensemble",
            "--members",
            *map(str, members),
            "--name",
            "trio",
            "--data-dir",
            str(mnist_dir),
            "--cache-dir",
            str(cache),
            "--out",
            str(tmp_path / "models"),
        ]
    )


def test_the_ensemble_is_the_mean_of_its_members_probabilities() -> None:
    torch.manual_seed(0)
    network = DigitNetEnsemble(EnsembleConfig()).eval()
    pixels = torch.randn(5, 1, 28, 28)
    with torch.inference_mode():
        expected = torch.stack([m(pixels).softmax(dim=1) for m in network.members]).mean(dim=0)
        assert torch.allclose(network(pixels).exp(), expected, atol=1e-6)
        assert torch.allclose(torch.jit.script(network)(pixels), network(pixels), atol=1e-6)


@pytest.mark.slow
def test_three_copies_of_a_member_read_as_the_member_and_are_served(
    mnist_dir: Path, mnist_cache: Path, tmp_path: Path
) -> None:
    member = copy_bundled(tmp_path / "members", "default")
    assert ensemble(tmp_path, [member] * 3, mnist_dir, mnist_cache) == 0
    package = tmp_path / "models" / "trio" / "1"
    card = ModelCard.read(package)
    shipped = ModelCard.read(member)
    assert card.architecture == "default_ensemble"
    assert card.parameters == 3 * shipped.parameters
    # The mean of three equal distributions is the distribution: the same answers.
    assert card.metrics.test_accuracy == shipped.metrics.test_accuracy
    assert card.training.duration_s == pytest.approx(3 * shipped.training.duration_s, abs=0.2)
    assert card.calibration.test_ece is not None
    assert shipped.sha256[:12] in card.description
    # The registry rebuilds it from the card (fine-tuning starts that way).
    rebuilt = get_architecture(card.architecture).build()
    rebuilt.load_state_dict(load_torchscript(package / "model.pt").network.state_dict())

    async def predict() -> dict[str, object]:
        async with running_app(model_dir=tmp_path / "models", default_model="trio") as client:
            response = await client.post(
                "/predict",
                content=digit_png(3),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert response.status_code == 200, response.text
            answer: dict[str, object] = response.json()
            return answer

    answer = asyncio.run(predict())  # loaded, verified and self-tested by the service
    assert answer["digit"] == 3 and answer["model"] == {"name": "trio", "version": "1"}


def test_members_of_another_architecture_or_count_are_refused(
    mnist_dir: Path, mnist_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    default = copy_bundled(tmp_path / "members", "default")
    lenet5 = copy_bundled(tmp_path / "members", "lenet5")
    assert ensemble(tmp_path, [default, default], mnist_dir, mnist_cache) == 1
    assert "default_ensemble has 3 members; 2 packages were given" in caplog.text
    assert ensemble(tmp_path, [default, default, lenet5], mnist_dir, mnist_cache) == 1
    assert "members must be default packages: lenet5/1 (lenet5)" in caplog.text
    assert not (tmp_path / "models").exists()
