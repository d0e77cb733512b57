"""The real-engine checks (``make container-test``): the engine, the images, the report.

Every test module here is marked ``container`` and left out of ``make test`` (pyproject's addopts
deselect the marker; ``make container-test`` selects it). The images are built once a session;
what was built, how long it took and what it weighs is printed at the end and written to
``runs/container-test.json``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.deploy.layout import REPO_ROOT

from .engine import Engine, EngineError, detected_engine
from .images import BuiltImages, build_images

#: Fixed host ports (a developer's service is on 8000); each check publishes on its own.
PORTS = {"run": 18561, "compose": 18562, "scale": 18563}
#: The torch flavour built (make container-test FLAVOUR=...): cuda by default, because it
#: builds from PyPI alone; the CUDA image also serves from the CPU (DIGITS_DEVICE=auto).
FLAVOUR = os.environ.get("DIGITS_CONTAINER_FLAVOUR", "cuda")
RUNS_DIR = REPO_ROOT / "runs" / "container-test"
REPORT = REPO_ROOT / "runs" / "container-test.json"

LOG = logging.getLogger(__name__)

#: Filled by the tests as they go: timings and figures for the closing report.
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    with detected_engine() as found:
        FIGURES["engine"] = found.name
        FIGURES["engine version"] = found("version", "--format", "{{.Client.Version}}").stdout
        yield found


@pytest.fixture(scope="session")
def images(engine: Engine) -> BuiltImages:
    built = build_images(engine, FLAVOUR, RUNS_DIR)
    FIGURES["images"] = {
        "flavour": built.flavour,
        "stand-in base images": built.standin,
        "build mounts": list(built.build_mounts),
        "seconds": {name: round(value, 1) for name, value in built.seconds.items()},
        "size MB": {name: round(size / 1e6) for name, size in built.size_bytes.items()},
    }
    return built


def port(name: str) -> int:
    """The fixed port of one check, failing clearly when something else holds it."""
    number = PORTS[name]
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", number))
        except OSError as error:
            pytest.fail(f"port {number} (the {name} check's) is taken: {error}")
    return number


def save_log(name: str, read: Callable[[], subprocess.CompletedProcess[str]]) -> None:
    """Keep what ``read`` prints (a container's or project's logs) as runs/.../NAME.log, for
    when a check fails; never raises, since it runs while cleaning up."""
    try:
        result = read()
    except EngineError as error:
        LOG.warning("no log for %s: %s", name, error)
        return
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    (RUNS_DIR / f"{name}.log").write_text(result.stdout + result.stderr, encoding="utf-8")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(FIGURES, indent=2) + "\n", encoding="utf-8")
    terminalreporter.section("container checks: figures")
    for line in json.dumps(FIGURES, indent=2).splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(written to {REPORT.relative_to(REPO_ROOT)})")
