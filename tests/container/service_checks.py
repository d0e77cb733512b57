"""What every running copy of the service must answer, whoever started it (a plain container,
compose, or replicas behind nginx): ready, then the right digits and number, by HTTP."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from benchmarks import image_kinds, numbers
from service.inference.selftest import SelfTestFile, shipped_selftest_files
from tests.service.conftest import wait_ready as wait_ready_process

from .engine import Engine

#: Loading and warming six models on two CPU cores takes a few seconds; the image allows 120 s.
READY_TIMEOUT_S = 180.0
#: A spaced number that the bundled default model reads right (tests/service/api/test_read).
CLEAR_NUMBER = ("spaced", 1)


def wait_ready(
    base_url: str, engine: Engine, containers: Sequence[str], timeout_s: float = READY_TIMEOUT_S
) -> float:
    """Seconds until ``GET /readyz`` at ``base_url`` answers 200; fails at once, with their
    logs, when one of ``containers`` (those behind the URL) is no longer running."""

    def gone() -> str | None:
        for container in containers:
            state = engine.inspect("container", container)["State"]
            if not state["Running"]:
                return f"container {container} {state['Status']} (exit {state['ExitCode']})"
        return None

    def logs() -> str:
        printed = [engine("logs", container, check=False) for container in containers]
        return "\n".join((out.stdout + out.stderr)[-3000:] for out in printed)

    return wait_ready_process(base_url, timeout_s, gone, logs)


def selftest_picture(label: int) -> SelfTestFile:
    """The first shipped self-test picture of ``label``."""
    return next(file for file in shipped_selftest_files() if file.label == label)


def assert_predicts(client: httpx.Client) -> int:
    """Every shipped self-test picture (MNIST, canvas, photo, scan) read right through
    ``POST /predict``; returns how many."""
    pictures = shipped_selftest_files()
    assert pictures, "no self-test pictures shipped"
    for picture in pictures:
        kind = "image/png" if picture.name.endswith(".png") else "image/jpeg"
        response = client.post("/predict", content=picture.body, headers={"content-type": kind})
        assert response.status_code == 200, (picture.name, response.status_code, response.text)
        body = response.json()
        assert body["digit"] == picture.label, (picture.name, body)
        assert 0.0 < body["confidence"] <= 1.0
        assert body["model"]["name"] == "default"
    return len(pictures)


def assert_reads(client: httpx.Client) -> str:
    """A number made of MNIST test digits read right through ``POST /read``."""
    data_dir = image_kinds.default_data_dir()
    assert (data_dir / "t10k-images-idx3-ubyte.gz").is_file(), (
        f"no MNIST test set in {data_dir} (set DIGITS_DATA_DIR)"
    )
    sample = numbers.make(*CLEAR_NUMBER, source="test")
    response = client.post("/read", content=sample.body, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.json()["number"] == sample.label, (sample.label, response.json())
    return sample.label
