"""The labelled digits shipped in ``service/selftest/``, which every package must read right
before it serves (see :func:`service.packages.loading.self_test`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from service.imaging import preprocess
from service.packages.loading import SelfTestDigit

_SELFTEST_NAME = re.compile(r"^digit(\d)_.+\.(png|jpe?g)$")


@dataclass(frozen=True)
class SelfTestFile:
    """One shipped self-test picture as it is on disk, with the label its name gives."""

    name: str
    body: bytes
    label: int


def shipped_selftest_files() -> list[SelfTestFile]:
    """Every ``digit<label>_<what>.png|jpg`` in ``service/selftest/``, in name order."""
    files: list[SelfTestFile] = []
    for entry in sorted(resources.files("service").joinpath("selftest").iterdir(), key=str):
        match = _SELFTEST_NAME.match(entry.name)
        if match:
            files.append(SelfTestFile(entry.name, entry.read_bytes(), int(match.group(1))))
    return files


def shipped_selftest_digits(max_pixels: int) -> list[SelfTestDigit]:
    """The shipped self-test pictures, preprocessed as a request's image would be."""
    return [
        SelfTestDigit(file.name, preprocess(file.body, max_pixels=max_pixels), file.label)
        for file in shipped_selftest_files()
    ]
