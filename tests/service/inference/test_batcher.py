"""service.inference.batcher: batching policy, answers routed to their requests, failures,
lifecycle.

Timing is controlled with events, not sleeps: ``HeldPredict`` blocks the inference thread
on a ``threading.Event`` so a test can hold one batch in flight, queue more requests, and
release it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
import torch
from torch import nn

from service.errors import DeadlineExceeded, InferenceFailed, Unavailable
from service.inference.batcher import Batcher, BatchReport, BatchResult
from service.observability.logs import request_id_var

pytestmark = pytest.mark.anyio  # asyncio: see anyio_backend in conftest.py

PIXELS = 28 * 28
WAIT_S = 10.0  # upper bound for anything a test waits on; reaching it is a failure
T = TypeVar("T")


def image(value: float) -> npt.NDArray[np.float32]:
    return np.full((28, 28), value, dtype=np.float32)


def row_sums(batch: torch.Tensor) -> torch.Tensor:
    """(B, 1, 28, 28) -> (B, 1): an output that says which input it came from."""
    return batch.sum(dim=(1, 2, 3)).unsqueeze(1)


class HeldPredict:
    """A predict function under the test's control.

    Records every batch it is given (and on which thread, in which mode) and, while held,
    blocks the inference thread until ``release()``. Build it inside the running loop.
    """

    def __init__(
        self, forward: Callable[[torch.Tensor], torch.Tensor] = row_sums, *, held: bool = False
    ) -> None:
        self._forward = forward
        self._released = threading.Event()
        if not held:
            self._released.set()
        self._loop = asyncio.get_running_loop()
        self._called = asyncio.Event()
        self.batches: list[torch.Tensor] = []  # copies of the inputs, (B, 1, 28, 28)
        self.threads: set[int] = set()
        self.in_inference_mode: list[bool] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.batches.append(batch.clone())
        self.threads.add(threading.get_ident())
        self.in_inference_mode.append(torch.is_inference_mode_enabled())
        self._loop.call_soon_threadsafe(self._called.set)
        if not self._released.wait(timeout=WAIT_S):
            raise TimeoutError("the test never released the held batch")
        return self._forward(batch)

    def release(self) -> None:
        self._released.set()

    async def wait_for_batches(self, count: int) -> None:
        """Until predict has been called ``count`` times (its batch is then in flight)."""
        async with asyncio.timeout(WAIT_S):
            while len(self.batches) < count:
                self._called.clear()
                await self._called.wait()

    @property
    def sizes(self) -> list[int]:
        return [batch.shape[0] for batch in self.batches]

    @property
    def values_seen(self) -> list[float]:
        """The fill value of every image predict was given (images here are constant)."""
        return [float(v) for batch in self.batches for v in batch[:, 0, 0, 0]]


@contextlib.asynccontextmanager
async def serving(
    predict: Callable[[torch.Tensor], torch.Tensor], **settings: Any
) -> AsyncIterator[Batcher]:
    """A started batcher (defaults: batches of 8, no waiting to fill); always stopped."""
    options: dict[str, Any] = {"max_batch_size": 8, "max_wait_ms": 0.0, "queue_size": 64}
    batcher = Batcher(predict, name="test", **(options | settings))
    batcher.start()
    try:
        yield batcher
    finally:
        if isinstance(predict, HeldPredict):
            predict.release()
        await batcher.stop(drain=True, timeout_s=WAIT_S)


async def within(
    awaitable: Coroutine[Any, Any, T] | asyncio.Future[T], seconds: float = WAIT_S
) -> T:
    async with asyncio.timeout(seconds):
        return await awaitable


async def answers(futures: list[asyncio.Future[BatchResult]]) -> list[BatchResult]:
    return await within(asyncio.gather(*futures))


def summed(prediction: BatchResult) -> float:
    return float(prediction.output[0])


# -- batching policy -------------------------------------------------------------------------


async def test_lone_request_runs_at_once_despite_a_long_max_wait() -> None:
    predict = HeldPredict()
    async with serving(predict, max_batch_size=64, max_wait_ms=10_000) as batcher:
        prediction = await within(batcher.enqueue(image(3.0)), seconds=2.0)

    assert summed(prediction) == 3.0 * PIXELS
    assert prediction.batch_size == 1
    assert prediction.queue_ms < 1_000


async def test_requests_queued_during_inference_form_the_next_batch() -> None:
    predict = HeldPredict(held=True)
    async with serving(predict, max_batch_size=16) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        queued = [batcher.enqueue(image(float(i))) for i in range(1, 11)]
        assert batcher.queue_depth == 10
        predict.release()
        predictions = await answers([first, *queued])

    assert predict.sizes == [1, 10]
    assert [p.batch_size for p in predictions] == [1] + [10] * 10
    # Each answer is its own request's: the row sum of its own image.
    assert [summed(p) for p in predictions] == [i * PIXELS for i in range(11)]


async def test_max_batch_size_is_honoured() -> None:
    predict = HeldPredict(held=True)
    async with serving(predict, max_batch_size=4, max_wait_ms=0) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        queued = [batcher.enqueue(image(float(i))) for i in range(1, 11)]
        predict.release()
        predictions = await answers([first, *queued])

    assert predict.sizes == [1, 4, 4, 2]
    assert [summed(p) for p in predictions] == [i * PIXELS for i in range(11)]


async def test_partial_batch_runs_once_max_wait_has_passed() -> None:
    predict = HeldPredict(held=True)
    async with serving(predict, max_batch_size=64, max_wait_ms=50) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        queued = [batcher.enqueue(image(float(i))) for i in range(1, 4)]
        predict.release()
        predictions = await answers([first, *queued])

    assert predict.sizes == [1, 3]
    # The batch waited for company until max_wait after its first request's arrival, and
    # then ran without more arrivals (the upper bound is deliberately generous).
    assert 49.0 <= max(p.queue_ms for p in predictions[1:]) < 5_000


async def test_a_full_batch_does_not_wait_for_max_wait() -> None:
    predict = HeldPredict(held=True)
    async with serving(predict, max_batch_size=4, max_wait_ms=10_000) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        queued = [batcher.enqueue(image(float(i))) for i in range(1, 4)]
        predict.release()
        await within(first)  # the worker now waits for a 4th request to fill the batch
        assert predict.sizes == [1]
        queued.append(batcher.enqueue(image(4.0)))
        predictions = await answers(queued)

    assert predict.sizes == [1, 4]
    assert [summed(p) for p in predictions] == [i * PIXELS for i in range(1, 5)]


async def test_predict_runs_in_one_inference_thread_under_inference_mode() -> None:
    predict = HeldPredict()
    async with serving(predict) as batcher:
        for value in range(3):
            await within(batcher.enqueue(image(float(value))))

    assert len(predict.threads) == 1
    assert threading.get_ident() not in predict.threads
    assert predict.in_inference_mode == [True, True, True]


async def test_lone_on_loop_runs_a_batch_of_one_on_the_loop_and_larger_ones_in_the_thread() -> None:
    predict = HeldPredict()
    loop_thread = threading.get_ident()
    async with serving(predict, lone_on_loop=True) as batcher:
        alone = await within(batcher.enqueue(image(2.0)))
        assert predict.threads == {loop_thread}  # no hand-off for the lone request
        # Queued together before the worker runs: one batch of three, in the inference thread.
        together = [batcher.enqueue(image(float(v))) for v in range(3)]
        results = await answers(together)

    assert summed(alone) == 2.0 * PIXELS
    assert [summed(r) for r in results] == [v * PIXELS for v in range(3)]
    assert predict.sizes == [1, 3]
    assert len(predict.threads - {loop_thread}) == 1
    assert predict.in_inference_mode == [True, True]


async def test_predict_one_runs_batches_of_one_and_predict_the_rest() -> None:
    batched, single = HeldPredict(), HeldPredict(lambda b: row_sums(b) * 2)
    async with serving(batched, predict_one=single) as batcher:
        alone = await within(batcher.enqueue(image(1.0)))
        together = await answers([batcher.enqueue(image(float(v))) for v in range(3)])

    assert summed(alone) == 2.0 * PIXELS  # the single-image variant answered
    assert [summed(r) for r in together] == [v * PIXELS for v in range(3)]
    assert [len(b) for b in single.batches] == [1]
    assert [len(b) for b in batched.batches] == [3]


async def test_channel_first_items_are_accepted() -> None:
    async with serving(HeldPredict()) as batcher:
        prediction = await within(batcher.enqueue(image(2.0)[np.newaxis]))  # (1, 28, 28)

    assert summed(prediction) == 2.0 * PIXELS


async def test_scripted_model_gets_the_same_answers_as_a_direct_call() -> None:
    torch.manual_seed(0)
    model = torch.jit.script(
        nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, 10), nn.Softmax(dim=1)).eval()
    )
    images = np.random.default_rng(0).random((6, 28, 28), dtype=np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(images).unsqueeze(1)).numpy()  # (6, 10)
    predict = HeldPredict(model, held=True)

    async with serving(predict) as batcher:
        first = batcher.enqueue(images[0])
        await predict.wait_for_batches(1)
        queued = [batcher.enqueue(item) for item in images[1:]]
        predict.release()
        predictions = await answers([first, *queued])

    assert predict.sizes == [1, 5]
    np.testing.assert_allclose(np.stack([p.output for p in predictions]), expected, atol=1e-6)


async def test_outputs_stay_intact_after_later_batches_reuse_the_buffer() -> None:
    # This predict returns a view of its input, i.e. of the batcher's reused host buffer.
    def flatten(batch: torch.Tensor) -> torch.Tensor:
        return batch.reshape(batch.shape[0], -1)  # (B, 784)

    async with serving(HeldPredict(flatten)) as batcher:
        ones = await within(batcher.enqueue(image(1.0)))
        twos = await within(batcher.enqueue(image(2.0)))

    assert np.all(ones.output == 1.0)
    assert np.all(twos.output == 2.0)


# -- failures --------------------------------------------------------------------------------


def fails_on_negative_input(batch: torch.Tensor) -> torch.Tensor:
    if bool((batch < 0).any()):
        raise RuntimeError("poisoned batch")
    return row_sums(batch)


async def test_a_failed_batch_logs_the_request_ids_it_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    predict = HeldPredict(fails_on_negative_input, held=True)
    async with serving(predict) as batcher:
        first = batcher.enqueue(image(1.0))  # no request id: not named
        await predict.wait_for_batches(1)
        poisoned = []
        for name in ("req-a", "req-b"):
            token = request_id_var.set(name)
            poisoned.append(batcher.enqueue(image(-1.0)))
            request_id_var.reset(token)
        predict.release()
        await within(first)
        for future in poisoned:
            with pytest.raises(InferenceFailed):
                await within(future)
    (record,) = [r for r in caplog.records if "inference failed" in r.getMessage()]
    assert record.__dict__["request_ids"] == ["req-a", "req-b"]


async def test_an_error_fails_only_its_batch_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    predict = HeldPredict(fails_on_negative_input, held=True)
    async with serving(predict) as batcher:
        poisoned = batcher.enqueue(image(-1.0))
        await predict.wait_for_batches(1)
        healthy = [batcher.enqueue(image(float(i))) for i in range(1, 6)]
        predict.release()
        with pytest.raises(InferenceFailed) as failure:
            await within(poisoned)
        predictions = await answers(healthy)
        later = await within(batcher.enqueue(image(9.0)))

    assert isinstance(failure.value.__cause__, RuntimeError)
    assert failure.value.status == 500
    assert [summed(p) for p in predictions] == [i * PIXELS for i in range(1, 6)]
    assert summed(later) == 9.0 * PIXELS
    assert predict.sizes == [1, 5, 1]
    assert any(r.levelno == logging.ERROR and r.exc_info is not None for r in caplog.records), (
        "a failed batch is logged with its traceback"
    )


@pytest.mark.parametrize(
    "wrong_output",
    [
        pytest.param(lambda batch: row_sums(batch)[:-1], id="too-few-rows"),
        pytest.param(lambda batch: row_sums(torch.cat([batch, batch])), id="too-many-rows"),
        pytest.param(lambda batch: batch.sum(dim=(1, 2, 3)), id="one-dimensional"),
    ],
)
async def test_output_of_the_wrong_shape_fails_the_batch(
    wrong_output: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    async with serving(HeldPredict(wrong_output)) as batcher:
        with pytest.raises(InferenceFailed) as failure:
            await within(batcher.enqueue(image(1.0)))

    assert "expected (1, C)" in str(failure.value.__cause__)


async def test_a_full_queue_rejects_at_once_with_retry_after() -> None:
    predict = HeldPredict(held=True)
    async with serving(predict, max_batch_size=2, queue_size=2) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        queued = [batcher.enqueue(image(1.0)), batcher.enqueue(image(2.0))]
        with pytest.raises(Unavailable) as rejected:
            batcher.enqueue(image(3.0))
        predict.release()
        predictions = await answers([first, *queued])

    assert rejected.value.code == "overloaded"
    assert rejected.value.status == 503
    assert rejected.value.retry_after_s >= 1
    assert rejected.value.headers() == {"Retry-After": str(rejected.value.retry_after_s)}
    assert [summed(p) for p in predictions] == [0.0, 1.0 * PIXELS, 2.0 * PIXELS]
    assert 3.0 not in predict.values_seen


async def test_request_whose_deadline_passed_in_the_queue_is_dropped_before_inference() -> None:
    reports: list[BatchReport] = []
    predict = HeldPredict(held=True)
    async with serving(predict, on_batch=reports.append) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        deadline = time.monotonic() + 0.02
        doomed = batcher.enqueue(image(7.0), deadline=deadline)
        in_time = batcher.enqueue(image(8.0), deadline=time.monotonic() + 60)
        # Let the clock pass the deadline while the request sits in the queue (the event
        # loop's clock is time.monotonic()).
        deadline_passed = asyncio.Event()
        asyncio.get_running_loop().call_at(deadline, deadline_passed.set)
        await within(deadline_passed.wait())
        predict.release()
        with pytest.raises(DeadlineExceeded) as expired:
            await within(doomed)
        await answers([first, in_time])

    assert expired.value.status == 504
    assert 7.0 not in predict.values_seen
    assert predict.sizes == [1, 1]
    assert reports[1].dropped_expired == 1
    assert reports[1].batch_size == 1


async def test_deadline_already_passed_is_rejected_at_enqueue() -> None:
    predict = HeldPredict()
    async with serving(predict) as batcher:
        with pytest.raises(DeadlineExceeded):
            batcher.enqueue(image(1.0), deadline=time.monotonic() - 0.001)

    assert predict.batches == []


async def test_cancelled_request_is_dropped_before_inference(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reports: list[BatchReport] = []
    predict = HeldPredict(held=True)
    async with serving(predict, on_batch=reports.append) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        gone = batcher.enqueue(image(7.0))
        assert batcher.queue_depth == 1
        gone.cancel()  # like a handler that stops waiting when its client disconnects
        staying = batcher.enqueue(image(8.0))
        predict.release()
        await answers([first, staying])

    assert gone.cancelled()
    assert 7.0 not in predict.values_seen
    assert reports[1] == BatchReport(1, reports[1].queue_wait_s, reports[1].inference_s, 0, 1, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_collection_of_only_dropped_requests_is_reported_and_runs_nothing() -> None:
    reports: list[BatchReport] = []
    predict = HeldPredict(held=True)
    async with serving(predict, on_batch=reports.append) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        batcher.enqueue(image(7.0)).cancel()
        predict.release()
        await within(first)
    # Leaving the block drained the batcher: every collection has been reported.

    assert predict.sizes == [1]
    assert [(r.batch_size, r.dropped_cancelled, r.queue_wait_s) for r in reports] == [
        (1, 0, reports[0].queue_wait_s),
        (0, 1, ()),
    ]


def small_batches_only(batch: torch.Tensor) -> torch.Tensor:
    """Row sums, as a device that runs out of memory beyond two images would give them."""
    if batch.shape[0] > 2:
        raise torch.OutOfMemoryError("batch too large for the device")
    return row_sums(batch)


async def test_out_of_memory_splits_the_batch_in_halves_and_retries() -> None:
    predict = HeldPredict(small_batches_only, held=True)
    async with serving(predict, max_batch_size=8) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        queued = [batcher.enqueue(image(float(i))) for i in range(1, 9)]
        predict.release()
        predictions = await answers([first, *queued])

    assert predict.sizes == [1, 8, 4, 2, 2, 4, 2, 2]
    assert [summed(p) for p in predictions] == [i * PIXELS for i in range(9)]
    assert [p.batch_size for p in predictions[1:]] == [8] * 8


async def test_out_of_memory_on_a_single_item_fails_only_that_item() -> None:
    reports: list[BatchReport] = []

    def runs_out_on_sevens(batch: torch.Tensor) -> torch.Tensor:
        if bool((batch == 7.0).any()):
            raise torch.OutOfMemoryError("no memory for this one")
        return row_sums(batch)

    predict = HeldPredict(runs_out_on_sevens, held=True)
    async with serving(predict, on_batch=reports.append) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        queued = {value: batcher.enqueue(image(value)) for value in (5.0, 6.0, 7.0, 8.0)}
        predict.release()
        await within(first)
        with pytest.raises(InferenceFailed) as failure:
            await within(queued.pop(7.0))
        predictions = await answers(list(queued.values()))

    assert isinstance(failure.value.__cause__, torch.OutOfMemoryError)
    assert [summed(p) for p in predictions] == [5.0 * PIXELS, 6.0 * PIXELS, 8.0 * PIXELS]
    assert predict.sizes == [1, 4, 2, 2, 1, 1]
    assert reports[1].failed == 1


async def test_a_failing_on_batch_callback_does_not_stop_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_callback(report: BatchReport) -> None:
        raise RuntimeError("metrics are down")

    async with serving(HeldPredict(), on_batch=broken_callback) as batcher:
        first = await within(batcher.enqueue(image(1.0)))
        second = await within(batcher.enqueue(image(2.0)))

    assert (summed(first), summed(second)) == (1.0 * PIXELS, 2.0 * PIXELS)
    assert "on_batch callback failed" in caplog.text


async def test_a_crashed_worker_fails_every_waiting_request(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Fault injection: a bug in the worker itself, outside the model call.
    def broken_unbatch(*args: object) -> int:
        raise RuntimeError("bug in the worker")

    predict = HeldPredict(held=True)
    async with serving(predict) as batcher:
        monkeypatch.setattr(batcher, "_unbatch", broken_unbatch)
        in_flight = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        queued = batcher.enqueue(image(1.0))
        predict.release()
        for future in (in_flight, queued):
            with pytest.raises(InferenceFailed) as failure:
                await within(future)
            assert isinstance(failure.value.__cause__, RuntimeError)
        assert not batcher.is_running
        with pytest.raises(Unavailable) as refused:
            batcher.enqueue(image(2.0))

    assert refused.value.code == "not_running"
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)


# -- lifecycle -------------------------------------------------------------------------------


async def test_stop_with_drain_answers_everything_accepted() -> None:
    predict = HeldPredict(held=True)
    # A long max_wait: draining must not wait for batches to fill.
    batcher = Batcher(predict, max_batch_size=4, max_wait_ms=10_000, queue_size=16)
    batcher.start()
    first = batcher.enqueue(image(0.0))
    await predict.wait_for_batches(1)
    queued = [batcher.enqueue(image(float(i))) for i in range(1, 10)]
    stopping = asyncio.create_task(batcher.stop(drain=True, timeout_s=WAIT_S))
    await asyncio.sleep(0)  # one turn of the loop: stop() has begun
    with pytest.raises(Unavailable) as refused:
        batcher.enqueue(image(99.0))
    predict.release()
    await within(stopping)

    assert refused.value.code == "shutting_down"
    assert all(future.done() for future in [first, *queued])
    predictions = [future.result() for future in [first, *queued]]
    assert [summed(p) for p in predictions] == [i * PIXELS for i in range(10)]
    assert predict.sizes == [1, 4, 4, 1]
    assert not batcher.is_running


async def test_stop_without_drain_fails_the_queue_and_finishes_the_batch_in_flight() -> None:
    predict = HeldPredict(held=True)
    batcher = Batcher(predict, max_batch_size=4, queue_size=16)
    batcher.start()
    in_flight = batcher.enqueue(image(1.0))
    await predict.wait_for_batches(1)
    queued = [batcher.enqueue(image(2.0)) for _ in range(3)]
    stopping = asyncio.create_task(batcher.stop(drain=False, timeout_s=WAIT_S))
    await asyncio.sleep(0)  # one turn of the loop: stop() has begun
    for future in queued:
        with pytest.raises(Unavailable, match="shutting down"):
            future.result()
    predict.release()
    await within(stopping)

    assert summed(in_flight.result()) == 1.0 * PIXELS
    assert predict.sizes == [1]


async def test_stop_fails_what_is_left_after_its_timeout() -> None:
    predict = HeldPredict(held=True)
    batcher = Batcher(predict, max_batch_size=4, queue_size=16)
    batcher.start()
    in_flight = batcher.enqueue(image(1.0))
    await predict.wait_for_batches(1)
    queued = batcher.enqueue(image(2.0))
    try:
        await within(batcher.stop(drain=True, timeout_s=0.05))
    finally:
        predict.release()

    for future in (in_flight, queued):
        with pytest.raises(Unavailable) as failure:
            future.result()
        assert failure.value.code == "shutting_down"


async def test_enqueue_after_stop_is_refused_as_shutting_down() -> None:
    async with serving(HeldPredict()) as batcher:
        pass
    with pytest.raises(Unavailable) as refused:
        await batcher.enqueue(image(1.0))

    assert refused.value.code == "shutting_down"
    assert refused.value.status == 503


async def test_enqueue_before_start_is_refused_as_not_running() -> None:
    batcher = Batcher(row_sums)
    with pytest.raises(Unavailable) as refused:
        await batcher.enqueue(image(1.0))

    assert refused.value.code == "not_running"


async def test_context_manager_starts_and_stops() -> None:
    async with Batcher(row_sums, name="digits") as batcher:
        running_inside = batcher.is_running
        prediction = await within(batcher.enqueue(image(1.0)))
    running_after = batcher.is_running

    assert (running_inside, running_after) == (True, False)
    assert summed(prediction) == 1.0 * PIXELS


async def test_settings_and_queue_are_observable() -> None:
    predict = HeldPredict(held=True)
    async with serving(predict, max_batch_size=4, max_wait_ms=1.5, queue_size=32) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        queued = [batcher.enqueue(image(1.0)) for _ in range(3)]
        assert batcher.queue_depth == 3  # the batch in flight is not counted
        predict.release()
        await answers([first, *queued])
        assert batcher.queue_depth == 0

    assert (batcher.max_batch_size, batcher.max_wait_ms, batcher.queue_capacity) == (4, 1.5, 32)
    assert batcher.name == "test"


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1"),
        ({"max_batch_size": 2.5}, "max_batch_size must be an integer >= 1"),
        ({"max_wait_ms": -1.0}, "max_wait_ms must be a finite number >= 0"),
        ({"max_wait_ms": float("nan")}, "max_wait_ms must be a finite number >= 0"),
        ({"max_batch_size": 64, "queue_size": 8}, "raise queue_size or lower max_batch_size"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Batcher(row_sums, **settings)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (np.zeros((28, 28), dtype=np.float64), "float32"),
        (np.zeros((28, 28), dtype=np.uint8), "float32"),
        ([[0.0] * 28] * 28, "float32"),
        (np.zeros((2, 28, 28), dtype=np.float32), r"shape \(28, 28\)"),
        (np.zeros((28, 27), dtype=np.float32), r"shape \(28, 28\)"),
    ],
)
async def test_items_of_the_wrong_kind_are_refused(item: Any, message: str) -> None:
    async with serving(HeldPredict()) as batcher:
        with pytest.raises(ValueError, match=message):
            batcher.enqueue(item)
        assert batcher.queue_depth == 0


# -- enqueue_rows: several images of one request ----------------------------------------------


def images(*values: float) -> npt.NDArray[np.float32]:
    """``(k, 28, 28)``: one constant image per value."""
    return np.stack([image(value) for value in values])


def sums(prediction: BatchResult) -> list[float]:
    """The row sums of a rows request's ``(k, 1)`` output, in its rows' order."""
    assert prediction.output.ndim == 2
    return [float(v) for v in prediction.output[:, 0]]


async def test_rows_come_back_in_order_and_equal_single_runs_of_the_same_images() -> None:
    torch.manual_seed(0)
    model = torch.jit.script(
        nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, 10), nn.Softmax(dim=1)).eval()
    )
    items = np.random.default_rng(1).random((5, 28, 28), dtype=np.float32)
    async with serving(HeldPredict(model)) as batcher:
        together = await within(batcher.enqueue_rows(items))
        alone = [await within(batcher.enqueue(item)) for item in items]

    assert together.output.shape == (5, 10)
    assert together.output.dtype == np.float32
    np.testing.assert_allclose(together.output, np.stack([a.output for a in alone]), atol=1e-6)
    assert together.batch_size == 5


async def test_a_rows_request_and_single_requests_share_one_forward_pass() -> None:
    predict = HeldPredict(held=True)
    async with serving(predict, max_batch_size=8) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        before = batcher.enqueue(image(1.0))
        rows = batcher.enqueue_rows(images(2.0, 3.0, 4.0))
        after = batcher.enqueue(image(5.0))
        predict.release()
        answered = await answers([first, before, rows, after])

    assert predict.sizes == [1, 5]  # two forward passes in all: the rows went with the singles
    assert predict.values_seen == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert summed(answered[1]) == 1.0 * PIXELS
    assert answered[2].output.shape == (3, 1)
    assert sums(answered[2]) == [2.0 * PIXELS, 3.0 * PIXELS, 4.0 * PIXELS]
    assert summed(answered[3]) == 5.0 * PIXELS
    assert [a.batch_size for a in answered] == [1, 5, 5, 5]


async def test_a_rows_request_that_does_not_fit_goes_whole_into_the_next_batch() -> None:
    predict = HeldPredict(held=True)
    async with serving(predict, max_batch_size=4) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        singles = [batcher.enqueue(image(1.0)), batcher.enqueue(image(2.0))]
        rows = batcher.enqueue_rows(images(3.0, 4.0, 5.0))  # 2 + 3 > 4: not behind the singles
        last = batcher.enqueue(image(6.0))
        predict.release()
        answered = await answers([first, *singles, rows, last])

    assert predict.sizes == [1, 2, 4]
    assert [[float(v) for v in batch[:, 0, 0, 0]] for batch in predict.batches] == [
        [0.0],
        [1.0, 2.0],
        [3.0, 4.0, 5.0, 6.0],
    ]
    assert sums(answered[3]) == [3.0 * PIXELS, 4.0 * PIXELS, 5.0 * PIXELS]
    assert summed(answered[4]) == 6.0 * PIXELS
    assert [a.batch_size for a in answered] == [1, 2, 2, 4, 4]


async def test_a_rows_request_larger_than_a_batch_runs_alone_in_passes_of_a_batch() -> None:
    reports: list[BatchReport] = []
    predict = HeldPredict(held=True)
    values = [float(v) for v in range(1, 11)]
    async with serving(predict, max_batch_size=4, on_batch=reports.append) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        before = batcher.enqueue(image(20.0))
        rows = batcher.enqueue_rows(images(*values))
        after = batcher.enqueue(image(30.0))
        predict.release()
        answered = await answers([first, before, rows, after])

    assert predict.sizes == [1, 1, 4, 4, 2, 1]  # the 10 rows shared their passes with nobody
    assert predict.values_seen == [0.0, 20.0, *values, 30.0]
    assert answered[2].output.shape == (10, 1)
    assert sums(answered[2]) == [v * PIXELS for v in values]
    assert (summed(answered[1]), summed(answered[3])) == (20.0 * PIXELS, 30.0 * PIXELS)
    assert answered[2].batch_size == 10
    assert [r.batch_size for r in reports] == [1, 1, 10, 1]


async def test_a_rows_request_larger_than_a_batch_in_an_idle_batcher() -> None:
    predict = HeldPredict()
    async with serving(predict, max_batch_size=3) as batcher:
        answered = await within(batcher.enqueue_rows(images(*[float(v) for v in range(7)])))
        later = await within(batcher.enqueue(image(9.0)))

    assert predict.sizes == [3, 3, 1, 1]
    assert sums(answered) == [v * PIXELS for v in range(7)]
    assert summed(later) == 9.0 * PIXELS


@pytest.mark.parametrize("with_single", [False, True], ids=["alone", "with-a-single"])
async def test_a_rows_request_of_one_row(with_single: bool) -> None:
    predict = HeldPredict(held=True)
    async with serving(predict) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        futures = [batcher.enqueue(image(1.0))] if with_single else []
        rows = batcher.enqueue_rows(images(2.0))
        predict.release()
        answered = await answers([first, *futures, rows])

    assert answered[-1].output.shape == (1, 1)
    assert sums(answered[-1]) == [2.0 * PIXELS]


async def test_batch_size_counts_rows_not_requests() -> None:
    reports: list[BatchReport] = []
    predict = HeldPredict(held=True)
    async with serving(predict, max_batch_size=16, on_batch=reports.append) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        queued = [
            batcher.enqueue_rows(images(1.0, 2.0, 3.0)),
            batcher.enqueue(image(4.0)),
            batcher.enqueue_rows(images(5.0, 6.0)),
        ]
        predict.release()
        answered = await answers([first, *queued])

    assert predict.sizes == [1, 6]
    assert [a.batch_size for a in answered] == [1, 6, 6, 6]
    assert [(r.batch_size, len(r.queue_wait_s)) for r in reports] == [(1, 1), (6, 3)]


async def test_rows_count_towards_a_full_batch() -> None:
    predict = HeldPredict(held=True)
    async with serving(predict, max_batch_size=4, max_wait_ms=10_000) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        queued = [batcher.enqueue_rows(images(1.0, 2.0)), batcher.enqueue_rows(images(3.0, 4.0))]
        predict.release()
        # Four rows queued fill the batch: it runs without waiting out max_wait.
        answered = await within(asyncio.gather(first, *queued), seconds=5.0)

    assert predict.sizes == [1, 4]
    assert [sums(a) for a in answered[1:]] == [
        [1.0 * PIXELS, 2.0 * PIXELS],
        [3.0 * PIXELS, 4.0 * PIXELS],
    ]


async def test_a_cancelled_rows_request_is_dropped_before_inference() -> None:
    reports: list[BatchReport] = []
    predict = HeldPredict(held=True)
    async with serving(predict, on_batch=reports.append) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        gone = batcher.enqueue_rows(images(7.0, 7.0, 7.0))
        gone.cancel()
        staying = batcher.enqueue_rows(images(8.0, 9.0))
        predict.release()
        answered = await answers([first, staying])

    assert 7.0 not in predict.values_seen
    assert predict.sizes == [1, 2]
    assert sums(answered[1]) == [8.0 * PIXELS, 9.0 * PIXELS]
    assert (reports[1].batch_size, reports[1].dropped_cancelled) == (2, 1)


async def test_an_inference_failure_fails_the_rows_request_and_the_worker_goes_on() -> None:
    predict = HeldPredict(fails_on_negative_input, held=True)
    async with serving(predict) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        poisoned = batcher.enqueue_rows(images(1.0, -1.0, 2.0))
        predict.release()
        await within(first)
        with pytest.raises(InferenceFailed) as failure:
            await within(poisoned)
        later = await within(batcher.enqueue_rows(images(3.0, 4.0)))

    assert isinstance(failure.value.__cause__, RuntimeError)
    assert failure.value.status == 500
    assert sums(later) == [3.0 * PIXELS, 4.0 * PIXELS]


async def test_out_of_memory_splits_a_rows_request_and_joins_its_rows_again() -> None:
    predict = HeldPredict(small_batches_only, held=True)
    async with serving(predict, max_batch_size=8) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        single = batcher.enqueue(image(1.0))
        rows = batcher.enqueue_rows(images(2.0, 3.0, 4.0, 5.0, 6.0))  # rows 1-5 of the batch
        predict.release()
        answered = await answers([first, single, rows])

    assert predict.sizes == [1, 6, 3, 1, 2, 3, 1, 2]  # 6 -> 3 + 3 -> (1 + 2) + (1 + 2)
    assert summed(answered[1]) == 1.0 * PIXELS
    assert sums(answered[2]) == [v * PIXELS for v in (2.0, 3.0, 4.0, 5.0, 6.0)]
    assert answered[2].batch_size == 6


async def test_out_of_memory_on_one_of_its_rows_fails_the_whole_rows_request() -> None:
    def runs_out_on_sevens(batch: torch.Tensor) -> torch.Tensor:
        if bool((batch == 7.0).any()):
            raise torch.OutOfMemoryError("no memory for this one")
        return row_sums(batch)

    predict = HeldPredict(runs_out_on_sevens, held=True)
    async with serving(predict) as batcher:
        first = batcher.enqueue(image(0.0))
        await predict.wait_for_batches(1)
        doomed = batcher.enqueue_rows(images(6.0, 7.0))
        healthy = batcher.enqueue_rows(images(8.0, 9.0))
        predict.release()
        await within(first)
        with pytest.raises(InferenceFailed) as failure:
            await within(doomed)
        answered = await within(healthy)

    assert isinstance(failure.value.__cause__, torch.OutOfMemoryError)
    assert sums(answered) == [8.0 * PIXELS, 9.0 * PIXELS]


async def test_rows_after_stop_are_refused_and_queued_rows_fail_on_stop_without_drain() -> None:
    predict = HeldPredict(held=True)
    batcher = Batcher(predict, max_batch_size=4, queue_size=16)
    batcher.start()
    in_flight = batcher.enqueue(image(1.0))
    await predict.wait_for_batches(1)
    queued = batcher.enqueue_rows(images(2.0, 3.0))
    stopping = asyncio.create_task(batcher.stop(drain=False, timeout_s=WAIT_S))
    await asyncio.sleep(0)  # one turn of the loop: stop() has begun
    with pytest.raises(Unavailable) as refused:
        batcher.enqueue_rows(images(4.0))
    predict.release()
    await within(stopping)

    assert refused.value.code == "shutting_down"
    with pytest.raises(Unavailable, match="shutting down"):
        queued.result()
    assert summed(in_flight.result()) == 1.0 * PIXELS
    assert predict.sizes == [1]


@pytest.mark.parametrize(
    "items",
    [
        pytest.param(np.zeros((28, 28), dtype=np.float32), id="one-image-2d"),
        pytest.param(np.zeros((0, 28, 28), dtype=np.float32), id="no-rows"),
        pytest.param(np.zeros((3, 28, 27), dtype=np.float32), id="wrong-width"),
        pytest.param(np.zeros((3, 27, 28), dtype=np.float32), id="wrong-height"),
        pytest.param(np.zeros((3, 1, 28, 28), dtype=np.float32), id="channel-axis"),
        pytest.param(np.zeros((3, 28, 28), dtype=np.float64), id="float64"),
        pytest.param(np.zeros((3, 28, 28), dtype=np.uint8), id="uint8"),
        pytest.param([[[0.0] * 28] * 28] * 3, id="list"),
    ],
)
async def test_rows_of_the_wrong_kind_are_refused(items: Any) -> None:
    predict = HeldPredict()
    async with serving(predict) as batcher:
        with pytest.raises(ValueError, match=r"float32 \(k, 28, 28\)"):
            batcher.enqueue_rows(items)
        assert batcher.queue_depth == 0
        # ...and the batcher still serves.
        assert sums(await within(batcher.enqueue_rows(images(1.0, 2.0)))) == [
            1.0 * PIXELS,
            2.0 * PIXELS,
        ]

    assert predict.sizes == [2]
