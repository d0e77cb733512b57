"""The real thing: ``python -m service`` as a subprocess on 127.0.0.1, spoken to over HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks.drain import drain, finish_request, start_request
from tests.service.conftest import SELFTEST_DIR, digit_png, serve_in_subprocess

pytestmark = pytest.mark.slow


@pytest.fixture
def server(
    trained_model_dir: Path, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    log = tmp_path / "server.log"
    with serve_in_subprocess(
        trained_model_dir, log, DIGITS_DEFAULT_MODEL="lenet5", DIGITS_SHUTDOWN_GRACE_S="5"
    ) as running:
        yield running


def test_real_server_answers_concurrent_clients_and_drains_on_sigterm(
    server: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url, process = server
    images = [(digit, digit_png(digit)) for digit in range(10)] * 4

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            return await asyncio.gather(
                *(
                    client.post("/predict", content=png, headers={"content-type": "image/png"})
                    for _, png in images
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * len(images)
    assert [r.json()["digit"] for r in responses] == [d for d, _ in images]
    # 40 concurrent requests on one model: some of them must have shared a forward pass.
    assert max(r.json()["batch_size"] for r in responses) > 1

    models = httpx.get(url + "/models").json()
    assert {m["name"] for m in models["models"]} == {"lenet5", "mlp"}

    # SIGTERM with requests in flight. Each request announces its body with
    # "Expect: 100-continue"; the server's "100 Continue" proves the handler is running and
    # reading it. Only then the signal, then the bodies: every one must still get its 200.
    port = int(url.rsplit(":", 1)[1])
    pending = [(digit, start_request(port, png)) for digit, png in images[:10]]
    process.send_signal(signal.SIGTERM)
    answers = [(digit, finish_request(sock, digit_png(digit))) for digit, sock in pending]
    assert [status for _, (status, _) in answers] == [200] * len(pending)
    assert all(f'"digit":{digit},'.encode() in body for digit, (_, body) in answers)
    assert process.wait(timeout=30) == 0
    log = (tmp_path / "server.log").read_text()
    assert '"message": "request"' in log and '"status": 200' in log


def test_sigterm_drains_for_load_balancers_then_answers_everything_admitted(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    """SIGTERM with 32 requests in flight: /readyz turns 503 at once, the port stays open and
    serving for DIGITS_DRAIN_DELAY_S, every admitted request is answered 200, exit 0."""
    log = tmp_path / "server.log"
    digits = [n % 10 for n in range(32)]
    with serve_in_subprocess(
        trained_model_dir,
        log,
        DIGITS_DEFAULT_MODEL="lenet5",
        DIGITS_DRAIN_DELAY_S="3",
        DIGITS_SHUTDOWN_GRACE_S="10",
    ) as (url, process):
        result = drain(url, process, [digit_png(d) for d in digits])
    assert result.readyz_503_after_s < 2.0
    assert result.served_during_delay == 200  # still serving during the delay
    assert result.statuses == [200] * 32
    assert all(
        f'"digit":{d},'.encode() in body for d, body in zip(digits, result.bodies, strict=True)
    )
    assert result.exit_code == 0
    assert result.exited_after_s >= 3.0  # not before the drain delay
    assert '"message": "draining"' in log.read_text()


def _rss_kib(process: subprocess.Popen[bytes], field: str) -> int:
    status = Path(f"/proc/{process.pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith(field + ":")]
    return int(line.split()[1])


def test_many_large_bodies_at_once_stay_within_the_memory_budget(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    budget_mb = 192
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (1800, 1800), dtype=np.uint8))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")  # ~3.2 MB that decodes to 3.2 megapixels
    large = buffer.getvalue()
    with serve_in_subprocess(
        trained_model_dir,
        tmp_path / "server.log",
        DIGITS_DEFAULT_MODEL="lenet5",
        DIGITS_MEMORY_BUDGET_MB=str(budget_mb),
        DIGITS_MAX_BODY_BYTES=str(8 * 1024 * 1024),
        DIGITS_MAX_IMAGE_PIXELS="4000000",
        DIGITS_PREPROCESS_THREADS="2",
    ) as (url, process):
        before_kib = _rss_kib(process, "VmRSS")

        async def flood() -> list[int]:
            async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
                posts = [client.post("/predict", content=large) for _ in range(80)]
                return [r.status_code for r in await asyncio.gather(*posts)]

        statuses = asyncio.run(flood())
        peak_kib = _rss_kib(process, "VmHWM")
        assert process.poll() is None  # alive
        assert set(statuses) <= {200, 400, 503}, statuses
        assert 503 in statuses and (200 in statuses or 400 in statuses), statuses
        assert (peak_kib - before_kib) / 1024 < budget_mb, (before_kib, peak_kib)
        assert httpx.get(url + "/readyz").status_code == 200


def test_reloads_under_load_lose_no_request(trained_model_dir: Path, tmp_path: Path) -> None:
    """16 clients post phone photos to ?model=lenet5 while its package changes in place (the
    card rewritten atomically) and is reloaded, three times: every answer is 200."""
    photo = (SELFTEST_DIR / "digit5_photo.jpg").read_bytes()
    card_path = trained_model_dir / "lenet5" / "1" / "metadata.json"
    with serve_in_subprocess(
        trained_model_dir, tmp_path / "server.log", DIGITS_DEFAULT_MODEL="lenet5"
    ) as (url, _):

        async def run() -> tuple[list[int], list[dict[str, object]]]:
            statuses: list[int] = []
            reports: list[dict[str, object]] = []
            done = asyncio.Event()
            async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:

                async def post_until_done() -> None:
                    while not done.is_set():
                        response = await client.post("/predict?model=lenet5", content=photo)
                        statuses.append(response.status_code)

                clients = [asyncio.create_task(post_until_done()) for _ in range(16)]
                for round_ in range(3):
                    card = json.loads(card_path.read_text())
                    card["description"] = f"retrained, round {round_}"
                    staged = card_path.with_suffix(".tmp")
                    staged.write_text(json.dumps(card))
                    staged.replace(card_path)
                    reports.append((await client.post("/models/reload")).json())
                done.set()
                await asyncio.gather(*clients)
            return statuses, reports

        statuses, reports = asyncio.run(run())
    assert all(r["loaded"] == [{"name": "lenet5", "version": "1"}] for r in reports), reports
    assert len(statuses) > 48 and set(statuses) == {200}, sorted(set(statuses))
