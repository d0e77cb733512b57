"""Finding packages in the model folder, and noticing a change."""

from __future__ import annotations

import os
from pathlib import Path

from service.packages.discovery import Fingerprint, find_packages, unchanged
from tests.service.conftest import write_package


def test_finds_packages_in_name_version_folders(model_dir: Path) -> None:
    write_package(model_dir, "b", "2")
    write_package(model_dir, "a", "1")
    (model_dir / "not-a-package").mkdir()
    found = find_packages(model_dir)
    assert list(found) == [("a", "1"), ("b", "2")]
    assert found[("b", "2")] == model_dir / "b" / "2"


def test_a_changed_file_changes_the_fingerprint(model_dir: Path) -> None:
    package = write_package(model_dir, "a")
    before = Fingerprint.of(package)
    assert before is not None and unchanged(package, before)
    stat = (package / "model.pt").stat()
    os.utime(package / "model.pt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert not unchanged(package, before)
    assert not unchanged(package, None)
    (package / "metadata.json").unlink()
    assert Fingerprint.of(package) is None
