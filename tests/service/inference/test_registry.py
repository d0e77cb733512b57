"""The registry swaps packages in and out while requests are in flight and loses none; a dead
batching worker is restarted, and readiness says so while it is down."""

from __future__ import annotations

import asyncio
import gc
import shutil
import time
import weakref
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.inference.registry import MAX_WORKER_RESTARTS, ServedModel
from service.inference.runtime import Runtime
from service.observability.metrics import ServiceMetrics
from tests.service.conftest import digit_png, running_app, write_package

pytestmark = pytest.mark.anyio

IMAGE = np.zeros((28, 28), dtype=np.float32)


def runtime_of(client: httpx.AsyncClient) -> Runtime:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    runtime: Runtime = transport.app.state.runtime  # type: ignore[attr-defined]
    return runtime


def running(served: ServedModel) -> bool:
    return served.batcher.is_running


def deadline() -> float:
    return time.monotonic() + 10.0


async def test_a_request_holding_a_replaced_version_is_answered_by_it(model_dir: Path) -> None:
    write_package(model_dir, "default")
    async with running_app(model_dir=model_dir, selftest=False) as client:
        registry = runtime_of(client).registry
        with registry.lease(None, None) as held:
            write_package(model_dir, "default", description="retrained")  # changed in place
            report = await registry.reload()
            assert report.loaded == [("default", "1")]
            assert registry.get(None, None) is not held  # new requests get the new copy
            # The old copy still answers the request that holds it.
            row = await held.batcher.enqueue(IMAGE, deadline=deadline())
            assert row.output.shape == (10,)
            assert running(held)
        await registry.wait_retired()
        assert not running(held)  # stopped once nobody held it
        released = weakref.ref(held.loaded)
        del held
        gc.collect()
        assert released() is None  # and its module is gone from memory


async def test_a_request_holding_a_removed_package_is_answered_by_it(model_dir: Path) -> None:
    write_package(model_dir, "default")
    write_package(model_dir, "other")
    async with running_app(model_dir=model_dir, selftest=False) as client:
        registry = runtime_of(client).registry
        with registry.lease("other", None) as held:
            shutil.rmtree(model_dir / "other")
            assert (await registry.reload()).removed == [("other", "1")]
            assert (
                await client.post("/predict?model=other", content=digit_png(1))
            ).status_code == 404
            row = await held.batcher.enqueue(IMAGE, deadline=deadline())
            assert row.batch_size == 1
        await registry.wait_retired()
        assert not held.batcher.is_running


async def test_clients_posting_through_swaps_get_only_200(model_dir: Path) -> None:
    """Changed in place, a newer version, an old version removed: while 16 clients post."""
    write_package(model_dir, "default")
    photo = (Path(__file__).parents[3] / "service" / "selftest" / "digit5_photo.jpg").read_bytes()
    statuses: list[int] = []
    async with running_app(model_dir=model_dir, selftest=False) as client:
        registry = runtime_of(client).registry
        done = asyncio.Event()
        flowing = asyncio.Event()  # set once 16 more answers came since the last swap
        swapped_while_held: list[int] = []

        async def post_until_done() -> None:
            while not done.is_set():
                response = await client.post("/predict", content=photo)
                statuses.append(response.status_code)
                if len(statuses) % 16 == 0:
                    flowing.set()

        async def swap(change: object) -> None:
            flowing.clear()
            await flowing.wait()
            before = registry.get(None, None)
            assert callable(change)
            change()
            await registry.reload()
            swapped_while_held.append(before.users)

        clients = [asyncio.create_task(post_until_done()) for _ in range(16)]
        await swap(lambda: write_package(model_dir, "default", description="retrained"))
        await swap(lambda: write_package(model_dir, "default", "2"))
        await swap(lambda: shutil.rmtree(model_dir / "default" / "1"))
        done.set()
        await asyncio.gather(*clients)
        await registry.wait_retired()
        assert [m.label for m in registry.served()] == ["default/2"]
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    # Swaps happened with requests holding the version they replaced (the deterministic
    # tests above hold one on purpose).
    assert max(swapped_while_held) > 0, swapped_while_held


async def crash_next_collect(client: httpx.AsyncClient, served: ServedModel) -> None:
    """Fault injection: the worker's next wait for work raises, as a bug in it would. A
    request first, so that the worker is parked in its current wait, which is not touched."""
    assert (await client.post("/predict", content=digit_png(1))).status_code == 200

    async def crash() -> None:
        raise RuntimeError("injected worker bug")

    served.batcher._collect = crash  # type: ignore[method-assign]


async def test_a_dead_worker_is_restarted_and_counted(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_package(model_dir, "default")
    async with running_app(model_dir=model_dir, selftest=False) as client:
        runtime = runtime_of(client)
        served = runtime.registry.get(None, None)
        first = served.batcher
        await crash_next_collect(client, served)
        # This request is answered; the worker then crashes waiting for the next one.
        answered = await client.post("/predict", content=digit_png(3))
        assert answered.status_code == 200, answered.text
        await asyncio.wait_for(first._worker, 5)  # type: ignore[arg-type]
        assert served.batcher is not first and served.batcher.is_running
        await runtime.registry.wait_retired()
        assert first._executor is not None and first._executor._shutdown  # its thread released
        again = await client.post("/predict", content=digit_png(3))
        assert again.status_code == 200, again.text
        assert (await client.get("/readyz")).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert (
        'digits_worker_failures_total{model="default",restarted="true",version="1"} 1.0' in metrics
    )
    assert "batching worker restarted" in caplog.text


async def test_readiness_and_models_tell_the_truth_about_a_worker_that_keeps_dying(
    model_dir: Path,
) -> None:
    write_package(model_dir, "default")
    async with running_app(model_dir=model_dir, selftest=False) as client:
        registry = runtime_of(client).registry
        served = registry.get(None, None)
        for _ in range(MAX_WORKER_RESTARTS + 1):
            worker = served.batcher
            await crash_next_collect(client, served)
            assert (await client.post("/predict", content=digit_png(3))).status_code == 200
            await asyncio.wait_for(worker._worker, 5)  # type: ignore[arg-type]
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["models"] == {"default/1": "failed"}
        (listed,) = (await client.get("/models")).json()["models"]
        assert listed["status"] == "failed" and "worker failed" in listed["error"]
        refused = await client.post("/predict", content=digit_png(3))
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_failed"


async def test_a_stopped_worker_makes_the_service_not_ready(model_dir: Path) -> None:
    write_package(model_dir, "default")
    async with running_app(model_dir=model_dir, selftest=False) as client:
        served = runtime_of(client).registry.get(None, None)
        await served.batcher.stop()
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["models"] == {"default/1": "not_running"}
        assert "not serving" in ready.json()["reason"]
        (listed,) = (await client.get("/models")).json()["models"]
        assert listed["status"] == "not_running"


def test_metrics_has_one_counter_for_worker_failures() -> None:
    metrics = ServiceMetrics()
    metrics.observe_worker_failure("default", "1", False)
    assert 'restarted="false"' in metrics.render().decode()
