"""Overload, deadlines and failing models, through the HTTP API: the service answers 200 or a
documented error, never hangs, and keeps serving afterwards."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.service.api.test_routes import assert_error
from tests.service.conftest import TinyNet, digit_png, running_app, write_package

pytestmark = pytest.mark.anyio


class SlowNet(nn.Module):
    """Takes tens of milliseconds a batch, so that requests pile up behind it."""

    def __init__(self, rounds: int = 60) -> None:
        super().__init__()
        self.inner = TinyNet()
        self.rounds = rounds
        self.weight = nn.Parameter(torch.eye(256) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        busy = torch.ones(256, 256)
        for _ in range(self.rounds):
            busy = torch.tanh(busy @ self.weight)
        return self.inner(x) + busy.mean() * 0.0


class BrokenNet(nn.Module):
    """Loads and warms up fine, then fails on every real request (batches of images)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TinyNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            raise RuntimeError("simulated fault inside the model")
        return self.inner(x)


async def test_overload_answers_503_with_retry_after_and_recovers(model_dir: Path) -> None:
    write_package(model_dir, "default", module=SlowNet())
    async with running_app(
        model_dir=model_dir, selftest=False, max_batch_size=4, queue_size=8
    ) as client:
        png = digit_png(3)
        responses = await asyncio.gather(*(client.post("/predict", content=png) for _ in range(60)))
        statuses = sorted({r.status_code for r in responses})
        assert statuses == [200, 503], statuses
        for response in responses:
            if response.status_code == 503:
                error = assert_error(response, 503, "overloaded")
                assert "overloaded" in str(error["message"])
                assert int(response.headers["retry-after"]) >= 1
        # Load gone: every request is served again.
        after = await asyncio.gather(*(client.post("/predict", content=png) for _ in range(4)))
        assert [r.status_code for r in after] == [200] * 4


async def test_requests_past_their_deadline_get_504_before_inference(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_package(model_dir, "default", module=SlowNet(rounds=200))
    async with running_app(
        model_dir=model_dir, selftest=False, max_batch_size=1, request_timeout_ms=50
    ) as client:
        png = digit_png(1)
        responses = await asyncio.gather(*(client.post("/predict", content=png) for _ in range(8)))
        metrics = (await client.get("/metrics")).text
    statuses = [r.status_code for r in responses]
    assert 200 in statuses and 504 in statuses, statuses
    for response in responses:
        if response.status_code == 504:
            assert_error(response, 504, "deadline_exceeded")
    assert 'digits_dropped_total{model="default",reason="deadline",version="1"}' in metrics
    assert fault_warnings(caplog) == []


def fault_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings logged for requests that failed by the service's fault."""
    return [
        str(r.__dict__.get("code"))
        for r in caplog.records
        if r.name == "service.app" and r.getMessage().startswith("request failed")
    ]


async def test_a_failing_model_gives_500_in_the_error_shape_and_others_serve(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_package(model_dir, "default")
    write_package(model_dir, "broken", module=BrokenNet())
    async with running_app(model_dir=model_dir, selftest=False) as client:
        png = digit_png(2)
        for _ in range(3):  # the worker survives each failure and answers the next batch
            failed = await client.post("/predict?model=broken", content=png)
            assert_error(failed, 500, "inference_failed")
        fine = await client.post("/predict", content=png)
        assert fine.status_code == 200
    assert fault_warnings(caplog) == ["inference_failed"] * 3


async def test_requests_beyond_the_in_flight_limit_get_503_before_their_body_is_read(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_package(model_dir, "default", module=SlowNet())
    async with running_app(model_dir=model_dir, selftest=False, max_in_flight=2) as client:
        png = digit_png(3)
        responses = await asyncio.gather(*(client.post("/predict", content=png) for _ in range(12)))
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
        for response in responses:
            if response.status_code == 503:
                assert_error(response, 503, "overloaded")
                assert response.headers["retry-after"] == "1"
        # Refused before the body is read: a body that is not an image is still a 503 then.
        held = [client.post("/predict", content=png) for _ in range(2)]
        garbage = client.post("/predict", content=b"not an image")
        *_, refused = await asyncio.gather(*held, garbage)
        assert_error(refused, 503, "overloaded")
        # The probes and the model listing are never refused.
        assert (await client.get("/readyz")).status_code == 200
    # Load shedding is counted by the access log and metrics, not warned about per request.
    assert fault_warnings(caplog) == []
