"""Fixtures for the service: real model packages in temp folders, the app in-process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from torch import nn

from service.app import create_app
from service.packages.card import (
    TORCHSCRIPT_FILENAME,
    Calibration,
    DatasetInfo,
    Metrics,
    ModelCard,
    PackageFile,
    PackageFiles,
    TensorSpec,
    TrainingSettings,
)
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
BUNDLED_MODELS = REPO / "models"
SELFTEST_DIR = REPO / "service" / "selftest"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    # Two cores are shared by the test process and any server it starts.
    torch.set_num_threads(1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class TinyNet(nn.Module):
    """A real (untrained) network with the packages' interface: (N, 1, 28, 28) -> (N, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5, stride=3)  # (N, 4, 8, 8)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def write_package(
    model_dir: Path,
    name: str,
    version: str = "1",
    module: nn.Module | None = None,
    **card_changes: Any,
) -> Path:
    """Script ``module`` (default: an untrained TinyNet) into a package with a valid card."""
    package = model_dir / name / version
    package.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(int(version))
    module = (module or TinyNet()).eval()
    model_file = package / TORCHSCRIPT_FILENAME
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module), str(model_file))
    card = ModelCard(
        name=name,
        version=version,
        architecture="tiny",
        description="untrained test network",
        parameters=sum(p.numel() for p in module.parameters()),
        input=TensorSpec(shape=[None, 1, 28, 28], description="white ink on black, [0, 1]"),
        output=TensorSpec(shape=[None, 10], description="logits"),
        labels=[str(d) for d in range(10)],
        metrics=Metrics(
            test_accuracy=0.1,
            test_samples=10000,
            validation_accuracy=0.1,
            validation_samples=5000,
        ),
        calibration=Calibration(temperature=1.0, ece_before=0.5, ece_after=0.5),
        training=TrainingSettings(
            epochs=0,
            optimizer="none",
            lr=1.0,
            weight_decay=0.0,
            batch_size=1,
            schedule="none",
            seed=0,
            device="cpu",
            duration_s=0.0,
        ),
        dataset=DatasetInfo(
            train_samples=0, validation_samples=0, test_samples=0, split_seed=0, sha256={}
        ),
        files=PackageFiles(torchscript=PackageFile.describe(model_file, "torchscript")),
        torch_version=torch.__version__,
        created_at=datetime.now(UTC),
        command="tests/service/conftest.py",
    )
    if card_changes:
        card = card.model_copy(update=card_changes)
    card.write(package)
    return package


def copy_bundled(model_dir: Path, name: str, version: str = "1") -> Path:
    """Copy a committed, trained package into ``model_dir``."""
    source = BUNDLED_MODELS / name / version
    assert (source / "metadata.json").is_file(), f"bundled package {name}/{version} is missing"
    target = model_dir / name / version
    shutil.copytree(source, target)
    return target


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def trained_model_dir(model_dir: Path) -> Path:
    """Two real trained models (serve them with ``default_model="lenet5"``)."""
    copy_bundled(model_dir, "lenet5")
    copy_bundled(model_dir, "mlp")
    return model_dir


def digit_png(digit: int) -> bytes:
    """A real MNIST test digit shipped for the self-test."""
    matches = sorted(SELFTEST_DIR.glob(f"digit{digit}_mnist*.png"))
    assert matches, f"no shipped MNIST digit {digit} in {SELFTEST_DIR}"
    return matches[0].read_bytes()


@asynccontextmanager
async def running_app(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan run, behind an httpx client on the ASGI transport."""
    app = create_app(Settings(**settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://digits") as client:
            yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_subprocess(
    model_dir: Path, log: Path, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m service`` on 127.0.0.1 and a free port, ready; killed on exit if still up."""
    port = free_port()
    environment = {
        **os.environ,
        "DIGITS_HOST": "127.0.0.1",
        "DIGITS_PORT": str(port),
        "DIGITS_MODEL_DIR": str(model_dir),
        **env,
    }
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=REPO, env=environment, stdout=sink, stderr=sink
        )
        try:
            wait_ready(
                url,
                90.0,
                lambda: None if process.poll() is None else f"server exited {process.returncode}",
                log.read_text,
            )
            yield url, process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def wait_ready(
    url: str, timeout_s: float, gone: Callable[[], str | None], log: Callable[[], str]
) -> float:
    """Seconds until ``GET /readyz`` answers 200. The server is another process: there is
    nothing to wait on but its answer. Fails at once when ``gone()`` says why the server is
    no more (it exited), or after ``timeout_s``; either way with ``log()``."""
    started = time.monotonic()
    last = "no answer"
    while time.monotonic() - started < timeout_s:
        reason = gone()
        if reason is not None:
            raise AssertionError(f"{reason}:\n{log()}")
        try:
            response = httpx.get(url + "/readyz", timeout=1.0)
            if response.status_code == 200:
                return time.monotonic() - started
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as error:
            last = f"{type(error).__name__}: {error}"
        time.sleep(0.1)
    raise AssertionError(f"server not ready in {timeout_s:.0f} s ({last}):\n{log()}")
