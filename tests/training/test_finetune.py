"""Fine-tuning a package on a user's own digits, through the command line: a dry-run-sized
run on a small made folder, the card it writes, the service serving it after a reload, and
each kind of bad data."""

from __future__ import annotations

import asyncio
import io
import shutil
from pathlib import Path

import pytest
import torch
from digits_client.labelled import read_labelled
from PIL import Image

from service.packages.card import ModelCard, sha256_of
from tests.service.conftest import copy_bundled, running_app
from training.__main__ import main
from training.data import DigitSet, MnistSplits
from training.finetune import DRY_RUN_MNIST, DRY_RUN_TEST
from training.own_digits import data_sha256, stratified_split

PER_DIGIT = 12


def scan_png(pixels: torch.Tensor) -> bytes:
    """An MNIST digit (28, 28) uint8 as a user's scan: dark on white, 40x40."""
    image = Image.fromarray(255 - pixels.numpy(), mode="L").resize((40, 40))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def own_folder(mnist: MnistSplits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``PER_DIGIT`` MNIST test digits of each class as scans in ``0/``..``9/``."""
    root = tmp_path_factory.mktemp("own") / "digits"
    for digit in range(10):
        folder = root / str(digit)
        folder.mkdir(parents=True)
        members = (mnist.test.labels == digit).nonzero().flatten()[:PER_DIGIT]
        for index in members.tolist():
            (folder / f"test-{index:05d}.png").write_bytes(scan_png(mnist.test.images[index]))
    return root


def copy_folder(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "digits"
    shutil.copytree(source, target)
    return target


def finetune(data: Path, tmp_path: Path, mnist_dir: Path, mnist_cache: Path, *extra: str) -> int:
    """``python -m training finetune --dry-run`` from the bundled lenet5, in ``tmp_path``."""
    models = tmp_path / "models"
    if not (models / "lenet5").exists():
        copy_bundled(models, "lenet5")
    return main(
        [
            "finetune",
            "--from",
            "lenet5",
            "--data",
            str(data),
            "--name",
            "mine",
            "--dry-run",
            "--data-dir",
            str(mnist_dir),
            "--cache-dir",
            str(mnist_cache),
            "--out",
            str(models),
            "--runs-dir",
            str(tmp_path / "runs"),
            *extra,
        ]
    )


@pytest.mark.slow
def test_a_dry_run_exports_a_package_the_service_serves_after_a_reload(
    own_folder: Path,
    mnist_dir: Path,
    mnist_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert finetune(own_folder, tmp_path, mnist_dir, mnist_cache) == 0
    package = tmp_path / "models" / "mine" / "1"
    card = ModelCard.read(package)
    tuning = card.fine_tuning
    assert tuning is not None
    # The card against a hand count: 12 images a digit, a fifth of each (2.4 -> 2) held out.
    assert tuning.data.images == 10 * PER_DIGIT
    assert tuning.data.per_digit == {str(d): PER_DIGIT for d in range(10)}
    assert tuning.data.skipped == 0
    assert tuning.data.bytes == sum(p.stat().st_size for p in own_folder.rglob("*.png"))
    assert tuning.data.sha256 == data_sha256_of(own_folder)
    assert (tuning.split.train_images, tuning.split.held_out_images) == (100, 20)
    assert tuning.split.mnist_images == DRY_RUN_MNIST
    assert tuning.base.name == "lenet5" and tuning.base.version == "1"
    assert tuning.before.mnist_test_samples == tuning.after.mnist_test_samples == DRY_RUN_TEST
    assert card.architecture == "lenet5" and card.calibration.split == "held_out_and_validation"
    assert card.calibration.test_ece is not None
    assert card.description.startswith("DRY RUN")
    assert sha256_of(package / card.files.torchscript.path) == card.sha256
    printed = capsys.readouterr().out
    assert "own held-out (20 images)" in printed and "POST /models/reload" in printed

    # Served once the service reloads its folder: a second run is a second version.
    assert finetune(own_folder, tmp_path, mnist_dir, mnist_cache) == 0
    image = next((own_folder / "7").iterdir()).read_bytes()
    reloaded, answer = asyncio.run(reload_and_predict(tmp_path / "models", image))
    assert {"name": "mine", "version": "1"} in reloaded["unchanged"]
    assert {"name": "mine", "version": "2"} in reloaded["loaded"]
    assert answer["model"] == {"name": "mine", "version": "2"}


async def reload_and_predict(models: Path, image: bytes) -> tuple[dict, dict]:
    """Start the service on ``models`` without ``mine/2``, add it, ``POST /models/reload``,
    and ask ``mine`` about ``image``."""
    newest = models / "mine" / "2"
    aside = newest.with_name(".2-aside")
    newest.rename(aside)
    async with running_app(model_dir=models, default_model="lenet5", selftest=False) as client:
        aside.rename(newest)
        reloaded = (await client.post("/models/reload")).json()
        response = await client.post(
            "/predict",
            params={"model": "mine"},
            content=image,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert response.status_code == 200, response.text
        return reloaded, response.json()


def data_sha256_of(folder: Path) -> str:
    return data_sha256(read_labelled(folder))[0]


def test_the_data_hash_ignores_the_folders_name_but_not_a_label(
    own_folder: Path, tmp_path: Path
) -> None:
    moved = copy_folder(own_folder, tmp_path / "elsewhere")
    assert data_sha256_of(moved) == data_sha256_of(own_folder)
    first = next((moved / "3").iterdir())
    first.rename(moved / "5" / first.name)  # the same bytes, another label
    assert data_sha256_of(moved) != data_sha256_of(own_folder)


def test_the_split_is_stratified_seeded_and_disjoint() -> None:
    labels = torch.tensor([d for d in range(10) for _ in range(10 + d)])  # 10..19 per digit
    images = torch.arange(len(labels), dtype=torch.int64)[:, None, None].expand(-1, 28, 28)
    digits = DigitSet((images % 256).to(torch.uint8).contiguous(), labels)
    train, held = stratified_split(digits, 0.2, seed=3)
    assert torch.bincount(held.labels).tolist() == [round(0.2 * (10 + d)) for d in range(10)]
    assert len(train) + len(held) == len(digits)
    _, again_held = stratified_split(digits, 0.2, seed=3)
    assert torch.equal(held.images, again_held.images)
    other = stratified_split(digits, 0.2, seed=4)[1]
    assert not torch.equal(held.images, other.images)


# ---- bad data: one clear line, exit status 1, nothing exported ------------------------------


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("label_12", "labels must be single digits 0-9, found folder: '12'"),
        ("empty_class", "empty class folders (no usable images): 3/"),
        ("few_images", "too few images: 4 has 3 (at least 10 needed)"),
        ("missing_digit", "no images of 9"),
        ("strict", "cannot be used (--strict)"),
    ],
)
def test_bad_data_is_one_clear_error(
    own_folder: Path,
    mnist_dir: Path,
    mnist_cache: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    breakage: str,
    message: str,
) -> None:
    data = copy_folder(own_folder, tmp_path)
    extra: list[str] = []
    if breakage == "label_12":
        (data / "12").mkdir()
        shutil.copy(next((data / "1").iterdir()), data / "12" / "x.png")
    elif breakage == "empty_class":
        for file in (data / "3").iterdir():
            file.unlink()
    elif breakage == "few_images":
        for file in sorted((data / "4").iterdir())[3:]:
            file.unlink()
    elif breakage == "missing_digit":
        shutil.rmtree(data / "9")
    elif breakage == "strict":
        (data / "2" / "notes.txt").write_text("not an image")
        extra = ["--strict"]
    assert finetune(data, tmp_path, mnist_dir, mnist_cache, *extra) == 1
    assert message in caplog.text
    assert not (tmp_path / "models" / "mine").exists()


def test_an_image_the_service_cannot_read_is_skipped_and_listed_or_refused_with_strict(
    own_folder: Path,
    mnist_dir: Path,
    mnist_cache: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = copy_folder(own_folder, tmp_path)
    (data / "6" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # truncated
    (data / "6" / "blank.png").write_bytes(scan_png(torch.zeros(28, 28, dtype=torch.uint8)))
    assert finetune(data, tmp_path, mnist_dir, mnist_cache, "--strict") == 1
    assert "2 images the service cannot read (--strict)" in caplog.text
    assert "broken.png" in caplog.text and "blank.png" in caplog.text
    caplog.clear()
    assert finetune(data, tmp_path, mnist_dir, mnist_cache) == 0
    assert "skipped 2 images the service cannot read" in caplog.text
    card = ModelCard.read(tmp_path / "models" / "mine" / "1")
    assert card.fine_tuning is not None
    assert card.fine_tuning.data.skipped == 2
    assert card.fine_tuning.data.images == 10 * PER_DIGIT


def test_a_shipped_mnist_model_cannot_be_overwritten_nor_an_unknown_base_used(
    own_folder: Path,
    mnist_dir: Path,
    mnist_cache: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    status = finetune(own_folder, tmp_path, mnist_dir, mnist_cache, "--name", "lenet5")
    assert status == 1
    assert "lenet5 is a package trained on MNIST; give the fine-tuned one its own name" in (
        caplog.text
    )
    assert sorted(p.name for p in (tmp_path / "models" / "lenet5").iterdir()) == ["1"]
    assert finetune(own_folder, tmp_path, mnist_dir, mnist_cache, "--from", "nosuch") == 1
    assert "no package 'nosuch'" in caplog.text


def test_the_version_is_not_the_users_to_choose(own_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["finetune", "--data", str(own_folder), "--name", "mine", "--version", "3"])


def test_too_few_images_once_the_unreadable_are_skipped_is_one_clear_error(
    own_folder: Path,
    mnist_dir: Path,
    mnist_cache: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = copy_folder(own_folder, tmp_path)
    files = sorted((data / "6").iterdir())
    for file in files[:2]:
        file.unlink()  # 10 left: enough as files ...
    files[2].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # ... 9 once this one is skipped
    assert finetune(data, tmp_path, mnist_dir, mnist_cache) == 1
    assert "once the images the service cannot read are skipped: too few images: 6 has 9" in (
        caplog.text
    )
    assert not (tmp_path / "models" / "mine").exists()
