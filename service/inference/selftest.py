"""The labelled digits shipped in ``service/selftest/``, which every package must read right
before it serves (see :func:`service.packages.loading.self_test`)."""

from __future__ import annotations

import re
from importlib import resources

from service.imaging import preprocess
from service.packages.loading import SelfTestDigit

_SELFTEST_NAME = re.compile(r"^digit(\d)_.+\.(png|jpe?g)$")


def shipped_selftest_digits(max_pixels: int) -> list[SelfTestDigit]:
    """Every ``digit<label>_<what>.png|jpg`` in ``service/selftest/``, preprocessed as a
    request's image would be."""
    digits: list[SelfTestDigit] = []
    for entry in sorted(resources.files("service").joinpath("selftest").iterdir(), key=str):
        match = _SELFTEST_NAME.match(entry.name)
        if match:
            image = preprocess(entry.read_bytes(), max_pixels=max_pixels)
            digits.append(SelfTestDigit(entry.name, image, int(match.group(1))))
    return digits
