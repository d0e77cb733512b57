"""A package's card, checked against its folder and the digest of its model file, before
anything in it is loaded."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from service.packages.card import ModelCard, sha256_of


class PackageError(Exception):
    """A package that cannot be served, with a reason a person can act on."""


def read_verified_card(package_dir: Path) -> ModelCard:
    """The package's card; raises :class:`PackageError` when it does not validate, names
    another folder, or its model file is missing or not the one it describes (sha256)."""
    try:
        card = ModelCard.read(package_dir)
    except ValidationError as exc:
        raise PackageError(f"model card does not validate: {_first_error(exc)}") from exc
    except (OSError, ValueError) as exc:
        raise PackageError(f"model card unreadable: {exc}") from exc
    if (card.name, card.version) != (package_dir.parent.name, package_dir.name):
        raise PackageError(
            f"card names {card.name}/{card.version} but the package sits in "
            f"{package_dir.parent.name}/{package_dir.name}"
        )
    model_file = package_dir / card.files.torchscript.path
    if not model_file.is_file():
        raise PackageError(f"{model_file.name} is missing")
    digest = sha256_of(model_file)
    if digest != card.sha256:
        raise PackageError(
            f"{model_file.name} has sha256 {digest[:12]}... but the card says "
            f"{card.sha256[:12]}...: the file is corrupt or was replaced without its card"
        )
    return card


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "card"
    return f"{where}: {err['msg']} ({exc.error_count()} error(s) in all)"
