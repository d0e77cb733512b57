"""The service image's own command, environment, health check and stop signal, run here.

No Docker engine is needed: everything the container would do is read from the final stage of
docker/Dockerfile (CMD, ENV, HEALTHCHECK, STOPSIGNAL, and what COPY put where) and carried out
as a local process, with the image's paths mapped onto this checkout:

- the image's virtual environment (``VIRTUAL_ENV``) -> this interpreter's environment;
- each path a ``COPY`` filled -> the checkout's source of that COPY (the health check script,
  the bundled ``models/``).

Only what cannot be the same on a shared test machine is overridden: ``DIGITS_HOST`` (loopback,
not every interface) and ``DIGITS_PORT`` (a free port). While ``models/`` holds no package yet,
the model folder is a temporary one with an untrained stand-in package named after the default
model, and the self-test of shipped digits (which an untrained network cannot pass) is off.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.packages.card import CARD_FILENAME
from service.settings import Settings
from tests.service.conftest import write_package

from . import dockerfile
from .compose_files import seconds
from .layout import DOCKERFILE, REPO_ROOT, RUNTIME_STAGE

pytestmark = pytest.mark.slow

#: What `docker stop` waits for by default before it kills; the service must be done by then.
DOCKER_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ImageProcess:
    """What the image runs, translated to this machine."""

    command: list[str]
    env: dict[str, str]
    healthcheck: list[str]
    stop_signal: signal.Signals
    start_period_s: float


def path_map(stage: dockerfile.Stage, env: dict[str, str]) -> dict[str, Path]:
    """Image path -> path here, for the virtual environment and everything COPY brought in."""
    mapping = {env["VIRTUAL_ENV"]: Path(sys.prefix)}
    for sources, destination in stage.copies():
        if len(sources) == 1:
            mapping[destination.rstrip("/")] = REPO_ROOT / sources[0].rstrip("/")
    return mapping


def localise(value: str, mapping: dict[str, Path]) -> str:
    """``value`` with each image path (at a path boundary) replaced by its local path."""
    for image_path in sorted(mapping, key=len, reverse=True):
        boundary = rf"(?<![\w/.-]){re.escape(image_path)}(?=[/:]|$)"
        replacement = str(mapping[image_path]).replace("\\", "\\\\")  # literal, not a template
        value = re.sub(boundary, replacement, value)
    return value


def image_process(port: int) -> ImageProcess:
    parsed = dockerfile.parse(DOCKERFILE)
    stage = parsed.stage(RUNTIME_STAGE)
    assert parsed.final_stage is stage, "the service image is the default build"
    # The base image's environment stands in for python:3.11-slim's (PATH, HOME, ...); the
    # developer's own DIGITS_* settings must not leak into what the image would do.
    host_env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITS_")}
    env = stage.env(parsed.global_args, inherited=host_env)
    mapping = path_map(stage, env)
    env = {key: localise(value, mapping) for key, value in env.items()}
    env.update(DIGITS_HOST="127.0.0.1", DIGITS_PORT=str(port))
    healthcheck = stage.healthcheck()
    stop_signal = stage.last("STOPSIGNAL")
    return ImageProcess(
        command=[localise(word, mapping) for word in stage.exec_form("CMD")],
        env=env,
        healthcheck=[localise(word, mapping) for word in healthcheck.command],
        stop_signal=signal.Signals[stop_signal.arguments if stop_signal else "SIGTERM"],
        start_period_s=seconds(healthcheck.options["start-period"]),
    )


def has_package(model_dir: Path) -> bool:
    return any(model_dir.glob(f"*/*/{CARD_FILENAME}"))


def stand_in_model_dir(tmp_path: Path, default_model: str) -> Path:
    """A model folder with one untrained package named ``default_model``."""
    model_dir = tmp_path / "models"
    write_package(model_dir, default_model)
    return model_dir


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def image(tmp_path: Path) -> ImageProcess:
    process = image_process(free_port())
    if not has_package(Path(process.env["DIGITS_MODEL_DIR"])):
        default_model = process.env.get(
            "DIGITS_DEFAULT_MODEL", str(Settings.model_fields["default_model"].default)
        )
        process.env["DIGITS_MODEL_DIR"] = str(stand_in_model_dir(tmp_path, default_model))
        process.env["DIGITS_SELFTEST"] = "false"
    return process


@pytest.fixture
def started(image: ImageProcess, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = tmp_path / "service.log"
    workdir = tmp_path / "workdir"  # the image's WORKDIR holds nothing the service reads
    workdir.mkdir()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            image.command, env=image.env, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT
        )
        try:
            yield process, log
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def wait_until_ready(
    port: str, process: subprocess.Popen[bytes], log: Path, within_s: float
) -> None:
    """Poll ``GET /readyz`` until 200, as Docker's start period allows (bounded)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the image's command exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"not ready within the start period ({within_s} s):\n{log.read_text()}")


def test_image_command_serves_passes_its_healthcheck_and_stops_cleanly(
    image: ImageProcess, started: tuple[subprocess.Popen[bytes], Path]
) -> None:
    process, log = started
    port = image.env["DIGITS_PORT"]
    wait_until_ready(port, process, log, within_s=image.start_period_s)

    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5.0).status_code == 200
    check = subprocess.run(
        image.healthcheck, env=image.env, capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr

    process.send_signal(image.stop_signal)
    try:
        returncode = process.wait(timeout=DOCKER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {DOCKER_STOP_TIMEOUT_S} s after {image.stop_signal.name}")
    assert returncode == 0, log.read_text()

    # Stopped means stopped: the same health check now fails.
    after = subprocess.run(
        image.healthcheck, env=image.env, capture_output=True, text=True, timeout=30, check=False
    )
    assert after.returncode == 1, after.stdout
