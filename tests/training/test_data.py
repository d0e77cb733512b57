from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from training.data import (
    MNIST_SHA256,
    DatasetError,
    DigitSet,
    MnistSplits,
    batch_count,
    file_sha256,
    iterate_batches,
    load_mnist,
    normalise,
    prepare_raw_files,
    split_validation,
)


def test_splits_have_the_standard_sizes_and_types(mnist: MnistSplits) -> None:
    assert (len(mnist.train), len(mnist.validation), len(mnist.test)) == (55_000, 5_000, 10_000)
    for digits in (mnist.train, mnist.validation, mnist.test):
        assert digits.images.dtype == torch.uint8
        assert digits.images.shape[1:] == (28, 28)
        assert digits.labels.dtype == torch.int64
        assert set(digits.labels.unique().tolist()) == set(range(10))
    assert mnist.sha256 == MNIST_SHA256


def test_test_split_is_the_official_one(mnist: MnistSplits) -> None:
    # The first official test digits are 7, 2, 1, 0, 4 (ink is white on black: max is 255).
    assert mnist.test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert int(mnist.test.images.max()) == 255
    assert int(mnist.test.images[:, 0, 0].max()) == 0


def test_uncompressed_files_are_where_torchvision_looks(
    mnist: MnistSplits, mnist_cache: Path
) -> None:
    raw = mnist_cache / "MNIST" / "raw"
    for name, digest in MNIST_SHA256.items():
        assert file_sha256(raw / name) == digest


def test_validation_split_is_fixed_and_disjoint() -> None:
    # Label each digit with its own index so the split can be traced back.
    digits = DigitSet(torch.zeros(100, 28, 28, dtype=torch.uint8), torch.arange(100))
    train_a, validation_a = split_validation(digits, 10, seed=3)
    train_b, validation_b = split_validation(digits, 10, seed=3)
    _, validation_c = split_validation(digits, 10, seed=4)
    assert torch.equal(validation_a.labels, validation_b.labels)
    assert not torch.equal(validation_a.labels, validation_c.labels)
    held_out, kept = set(validation_a.labels.tolist()), set(train_a.labels.tolist())
    assert len(held_out) == 10 and len(kept) == 90
    assert held_out.isdisjoint(kept)
    assert train_a.labels.tolist() == train_b.labels.tolist()


def test_missing_directory_error_says_where_it_looked(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=str(missing)):
        prepare_raw_files(missing, tmp_path / "cache")


def _copy_data(mnist_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in MNIST_SHA256:
        shutil.copy(mnist_dir / f"{name}.gz", target / f"{name}.gz")
    return target


def test_missing_file_error_names_the_file_and_folder(mnist_dir: Path, tmp_path: Path) -> None:
    data = _copy_data(mnist_dir, tmp_path / "data")
    (data / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz.*not found in .*data"):
        prepare_raw_files(data, tmp_path / "cache")


def test_corrupt_file_is_rejected_by_its_checksum(mnist_dir: Path, tmp_path: Path) -> None:
    data = _copy_data(mnist_dir, tmp_path / "data")
    labels = data / "train-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[100] = (content[100] + 1) % 10  # one label changed: still a valid IDX file
    labels.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz is corrupt"):
        prepare_raw_files(data, tmp_path / "cache")
    assert not (tmp_path / "cache" / "MNIST" / "raw" / "train-labels-idx1-ubyte").exists()


def test_unreadable_gzip_is_a_clear_error(mnist_dir: Path, tmp_path: Path) -> None:
    data = _copy_data(mnist_dir, tmp_path / "data")
    (data / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match=r"cannot read MNIST file .*t10k-images"):
        prepare_raw_files(data, tmp_path / "cache")


def test_tampered_cache_is_rebuilt_from_the_source(mnist_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    raw = prepare_raw_files(mnist_dir, cache)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"tampered")
    prepare_raw_files(mnist_dir, cache)
    expected = MNIST_SHA256["t10k-labels-idx1-ubyte"]
    assert file_sha256(raw / "t10k-labels-idx1-ubyte") == expected


def test_uncompressed_source_files_are_accepted(
    mnist_dir: Path, mnist_cache: Path, tmp_path: Path
) -> None:
    raw = prepare_raw_files(mnist_dir, mnist_cache)
    data = tmp_path / "plain"
    data.mkdir()
    for name in MNIST_SHA256:
        shutil.copy(raw / name, data / name)
    splits = load_mnist(data, tmp_path / "cache")
    assert len(splits.test) == 10_000


def test_batches_cover_every_digit_once(mnist: MnistSplits) -> None:
    digits = mnist.validation
    seen = []
    for pixels, labels in iterate_batches(digits, 512, generator=torch.Generator().manual_seed(0)):
        assert pixels.dtype == torch.float32 and pixels.shape[1:] == (1, 28, 28)
        assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
        seen.append(labels)
    assert batch_count(digits, 512) == len(seen) == 10
    assert torch.equal(torch.cat(seen).sort().values, digits.labels.sort().values)


def test_unshuffled_batches_keep_order_and_limit(mnist: MnistSplits) -> None:
    batches = list(iterate_batches(mnist.test, 100, limit=3))
    assert len(batches) == batch_count(mnist.test, 100, limit=3) == 3
    assert torch.equal(batches[0][1], mnist.test.labels[:100])


def test_normalisation_uses_mnist_statistics(mnist: MnistSplits) -> None:
    pixels = torch.cat([p for p, _ in iterate_batches(mnist.train, 10_000)])
    normalised = normalise(pixels)
    assert abs(float(normalised.mean())) < 0.01
    assert abs(float(normalised.std()) - 1.0) < 0.01
