"""The newest package of a model, loaded the way the service loads it (digest checked)."""

from __future__ import annotations

from pathlib import Path

import torch

from service.packages.card import version_key
from service.packages.loading import load_module, optimized_for_inference
from service.packages.verification import read_verified_card


def newest_package(model_dir: Path, name: str) -> Path:
    versions = [p for p in (model_dir / name).glob("*") if (p / "metadata.json").is_file()]
    if not versions:
        raise SystemExit(f"no package {name!r} in {model_dir}")
    return max(versions, key=lambda p: version_key(p.name))


def load_model(model_dir: Path, name: str) -> torch.jit.ScriptModule:
    """The TorchScript module of ``name``'s newest version, on the CPU, in eval mode,
    optimised for inference as the service serves it."""
    package = newest_package(model_dir, name)
    cpu = torch.device("cpu")
    return optimized_for_inference(load_module(package, read_verified_card(package), cpu), cpu)
