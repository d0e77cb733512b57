"""Finding packages in the model folder, and noticing when one changes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.packages.card import CARD_FILENAME, TORCHSCRIPT_FILENAME, ModelCard


def find_packages(model_dir: Path) -> dict[tuple[str, str], Path]:
    """``(name, version) -> folder`` of every ``<model_dir>/<name>/<version>/`` holding a card,
    in a stable order."""
    found = sorted(
        (card.parent for card in model_dir.glob(f"*/*/{CARD_FILENAME}")),
        key=lambda p: (p.parent.name, p.name),
    )
    return {(path.parent.name, path.name): path for path in found}


@dataclass(frozen=True)
class Fingerprint:
    """Cheap identity of a package on disk (modification times and sizes of its card and
    model file), to notice changes without hashing every scan."""

    card: tuple[int, int]
    model: tuple[int, int]

    @classmethod
    def of(cls, package_dir: Path) -> Fingerprint | None:
        """The package's fingerprint now; ``None`` when its card cannot be read at all."""
        try:
            card_stat = (package_dir / CARD_FILENAME).stat()
        except OSError:
            return None
        try:
            model_name = ModelCard.read(package_dir).files.torchscript.path
        except (OSError, ValueError):  # a card that does not validate: fingerprint the default
            model_name = TORCHSCRIPT_FILENAME
        try:
            model_stat = (package_dir / model_name).stat()
            model = (model_stat.st_mtime_ns, model_stat.st_size)
        except OSError:
            model = (0, 0)
        return cls(card=(card_stat.st_mtime_ns, card_stat.st_size), model=model)


def unchanged(path: Path, fingerprint: Fingerprint | None) -> bool:
    """Whether the package at ``path`` still has ``fingerprint`` (``None`` never matches)."""
    return fingerprint is not None and Fingerprint.of(path) == fingerprint
