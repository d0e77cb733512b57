"""What every running copy of the service must answer, whoever started it (a plain container,
compose, or replicas behind nginx): ready, then the right digits and number, by HTTP."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from benchmarks import image_kinds, numbers
from tests.deploy.layout import REPO_ROOT

SELFTEST_DIR = REPO_ROOT / "service" / "selftest"
#: Loading and warming six models on two CPU cores takes about 20 s; the image allows 120 s.
READY_TIMEOUT_S = 180.0
#: A spaced number that the bundled default model reads right (tests/service/api/test_read).
CLEAR_NUMBER = ("spaced", 1)


def wait_ready(base_url: str, timeout_s: float = READY_TIMEOUT_S) -> float:
    """Seconds until ``GET /readyz`` answers 200 (the container is an outside process:
    nothing to wait on but its answer)."""
    started = time.monotonic()
    last = "no answer"
    while time.monotonic() - started < timeout_s:
        try:
            response = httpx.get(f"{base_url}/readyz", timeout=2.0)
            if response.status_code == 200:
                return time.monotonic() - started
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as error:
            last = f"{type(error).__name__}: {error}"
        time.sleep(0.5)
    raise AssertionError(f"{base_url}/readyz not 200 after {timeout_s:.0f} s: {last}")


def selftest_pictures() -> list[tuple[Path, int]]:
    """The bundled self-test pictures (MNIST, canvas, photo, scan) with their labels."""
    pictures = sorted(SELFTEST_DIR.glob("digit*_*.*"))
    assert pictures, f"no self-test pictures in {SELFTEST_DIR}"
    return [(path, int(path.name[len("digit")])) for path in pictures]


def assert_predicts(client: httpx.Client) -> int:
    """Every self-test picture read right through ``POST /predict``; returns how many."""
    pictures = selftest_pictures()
    for path, label in pictures:
        kind = "image/jpeg" if path.suffix == ".jpg" else "image/png"
        response = client.post(
            "/predict", content=path.read_bytes(), headers={"content-type": kind}
        )
        assert response.status_code == 200, (path.name, response.status_code, response.text)
        body = response.json()
        assert body["digit"] == label, (path.name, body)
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
