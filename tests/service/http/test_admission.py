"""Admission: the adaptive limit on requests in progress, the memory budget for bodies, and
refusals (503, before the body is read) counted under their route."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.app import admission_for
from service.http.admission import (
    BODY_COPIES,
    REQUEST_OVERHEAD_BYTES,
    ConcurrencyLimit,
    MemoryBudget,
)
from service.settings import MiB, Settings
from tests.service.api.test_routes import assert_error
from tests.service.conftest import digit_png, running_app, write_package
from tests.service.test_faults import SlowNet

TARGET_S = 0.25


def observe(limit: ConcurrencyLimit, latency_s: float, *, in_flight: int, now: float) -> None:
    """One answer after ``latency_s`` with ``in_flight`` others still in progress."""
    limit.in_flight = in_flight
    limit.observe(latency_s, now)


def adaptive(limit: float = 64.0) -> ConcurrencyLimit:
    return ConcurrencyLimit(target_s=TARGET_S, minimum=8, maximum=1088, limit=limit)


def test_the_limit_grows_while_answers_are_on_time_and_it_is_in_use() -> None:
    limit = adaptive(64.0)
    for _ in range(64):  # near the target: one per limit's worth of answers
        observe(limit, 0.2, in_flight=63, now=1.0)
    assert limit.limit == pytest.approx(65.0, abs=0.02)
    fast = adaptive(16.0)
    for _ in range(16):  # well inside it (under half): one per answer
        observe(fast, 0.05, in_flight=int(fast.limit) - 1, now=1.0)
    assert fast.limit == 32.0
    idle = adaptive(64.0)
    observe(idle, 0.05, in_flight=3, now=1.0)  # not in use: no reason to grow
    assert idle.limit == 64.0


def test_an_interval_whose_quickest_quarter_is_late_shrinks_the_limit_in_proportion() -> None:
    limit = adaptive(64.0)
    for latency in (0.6, 0.5, 0.02, 0.9, 0.7, 0.8, 0.55, 0.65):  # one tiny image was quick
        observe(limit, latency, in_flight=40, now=10.0)
    assert limit.limit == 64.0  # judged when the interval is over
    observe(limit, 0.7, in_flight=38, now=10.3)
    assert limit.limit == pytest.approx(41 * 0.5)  # (most in progress + 1) x target / quartile
    observe(limit, 10.0, in_flight=20, now=10.6)  # at most halved at once
    assert limit.limit == pytest.approx(10.25)
    for step in range(10):
        observe(limit, 10.0, in_flight=9, now=11.0 + step)
    assert limit.limit == 8.0  # never under the minimum


def test_a_quarter_of_answers_on_time_means_no_standing_queue() -> None:
    limit = adaptive(64.0)
    for latency in (0.6, 0.1, 0.9, 0.8, 0.12, 0.7, 0.75, 0.85):
        observe(limit, latency, in_flight=40, now=10.0)
    observe(limit, 0.8, in_flight=38, now=10.3)
    assert limit.limit == 64.0


def test_slow_requests_without_a_queue_are_not_overload() -> None:
    limit = adaptive(64.0)
    observe(limit, 3.0, in_flight=2, now=1.0)  # e.g. a 40-megapixel scan decoding
    observe(limit, 3.0, in_flight=1, now=1.1)
    observe(limit, 0.05, in_flight=1, now=2.0)
    assert limit.limit == 64.0


def test_a_fixed_limit_never_moves() -> None:
    limit = ConcurrencyLimit.fixed(5)
    observe(limit, 10.0, in_flight=4, now=1.0)
    observe(limit, 0.001, in_flight=4, now=2.0)
    limit.in_flight = 4
    assert limit.limit == 5 and limit.allows()
    limit.in_flight = 5
    assert not limit.allows()


def test_bodies_reserve_their_declared_length_else_the_body_limit() -> None:
    memory = MemoryBudget(capacity=10 * MiB, max_body_bytes=2 * MiB)
    assert memory.cost(1000) == 1000 * BODY_COPIES + REQUEST_OVERHEAD_BYTES
    assert memory.cost(None) == memory.cost(50 * MiB) == 2 * MiB * BODY_COPIES + 65536
    assert memory.allows(memory.cost(50 * MiB))  # the first request always gets in
    memory.reserved = 9 * MiB
    assert not memory.allows(memory.cost(None))


def test_settings_choose_the_admission() -> None:
    limit, memory = admission_for(Settings())
    assert limit.adaptive and limit.target_s == 0.25 and limit.limit == 64
    assert memory.capacity == Settings().body_budget_bytes > 0
    fixed, _ = admission_for(Settings(max_in_flight=7))
    assert not fixed.adaptive and fixed.limit == 7


def test_the_default_budget_fits_a_2_gib_container() -> None:
    settings = Settings(preprocess_threads=4)
    assert settings.memory_budget_mb * MiB <= 1 << 30
    # A 10 MiB body (the default limit) fits dozens of times after four decode threads' worth.
    assert settings.body_budget_bytes // (3 * settings.max_body_bytes) >= 12


def test_a_budget_that_cannot_hold_one_body_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="DIGITS_MEMORY_BUDGET_MB"):
        Settings(memory_budget_mb=64, max_body_bytes=10 * MiB, preprocess_threads=2)


@pytest.mark.anyio
async def test_bodies_beyond_the_memory_budget_get_503_before_they_are_read(
    model_dir: Path,
) -> None:
    write_package(model_dir, "default", module=SlowNet())
    budget = {
        "memory_budget_mb": 64,
        "max_body_bytes": MiB,
        "max_image_pixels": 1_000_000,
        "preprocess_threads": 2,
    }
    async with running_app(model_dir=model_dir, selftest=False, **budget) as client:
        # ~1 MiB bodies: 56 MiB for bodies at 3 bytes a byte holds 18 at once.
        large = digit_png(4) + bytes(MiB - 2000)
        responses = await asyncio.gather(
            *(client.post("/predict", content=large) for _ in range(40))
        )
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 400, 503}, statuses
        refused = [r for r in responses if r.status_code == 503]
        assert refused, statuses
        for response in refused:
            error = assert_error(response, 503, "overloaded")
            assert "memory" in str(error["message"])
        metrics = (await client.get("/metrics")).text
        # Shed before routing, counted under the route they were for.
        assert (
            'digits_requests_total{model="",route="/predict",status="503",version=""}' in metrics
        ), [line for line in metrics.splitlines() if "503" in line]


@pytest.mark.anyio
async def test_a_flood_beyond_the_latency_target_is_shed_and_the_limit_comes_down(
    model_dir: Path,
) -> None:
    write_package(model_dir, "default", module=SlowNet())
    async with running_app(
        model_dir=model_dir, selftest=False, latency_target_ms=20, max_batch_size=4
    ) as client:
        png = digit_png(3)
        responses = await asyncio.gather(
            *(client.post("/predict", content=png) for _ in range(300))
        )
        statuses = sorted({r.status_code for r in responses})
        assert statuses == [200, 503], statuses
        for response in responses:
            if response.status_code == 503:
                assert_error(response, 503, "overloaded")
                assert response.headers["retry-after"] == "1"
        assert (await client.get("/readyz")).status_code == 200  # probes are never shed
