"""Dynamic batching: many concurrent single-image requests -> one forward pass per batch.

One :class:`Batcher` serves one model. The data flow, and the step that does each part:

``enqueue`` (event loop, per request)
    Validate the item, wrap it with an :class:`asyncio.Future` and put it on a bounded queue.
    A full queue answers ``Unavailable(code="overloaded")`` at once rather than letting
    latency grow without bound.
``collect`` (event loop, the worker coroutine)
    Wait on an :class:`asyncio.Event` (never a polling loop) for the first item. If it is
    alone, take it and run at once: a single client pays no batching delay. If others are
    queued too, wait until the batch is full or ``max_wait_ms`` has passed since the first
    one arrived. Items whose deadline passed, or whose caller has gone (future cancelled),
    are dropped here, before inference.
``batch`` -> ``predict`` (the batcher's one inference thread)
    Copy the items into one preallocated host buffer ``(max_batch_size, 1, 28, 28)``
    (pinned on CUDA), move ``[:n]`` to the device, run ``predict`` once under
    ``torch.inference_mode()``, check the output is ``(n, C)`` and bring it back to the CPU
    once. On ``torch.OutOfMemoryError`` the batch is split in halves and retried, down to
    single items.
``unbatch`` (event loop)
    Split the ``(n, C)`` result into one :class:`BatchResult` per request and set each
    future's result (or an exception on every future of a failed batch, so no caller
    waits forever).

While a batch runs in the inference thread the event loop keeps accepting requests, so the
next batch is already waiting in the queue when the thread becomes free (pipelining).

Items are numpy ``float32`` arrays of shape ``(28, 28)``, already preprocessed;
``(1, 28, 28)`` is accepted too, since that is how one image looks inside the model's input.
``enqueue_rows`` queues several images of one request (a reading's candidate digits) as one
item of ``k`` rows: they go into the same forward pass, and the request gets its ``(k, C)``
rows back. A batch holds at most ``max_batch_size`` rows; an item of more rows than that runs
alone, in forward passes of ``max_batch_size``.

This module is longer than the house's ~300 lines because it is one state machine (queue,
worker, inference thread, failure paths) whose parts share the same few fields; split across
modules they would have to reach into each other's state.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import numpy.typing as npt
import torch

from service.errors import DeadlineExceeded, InferenceFailed, ServiceError, Unavailable
from service.observability.logs import request_id_var

logger = logging.getLogger(__name__)

IMAGE_SIZE = 28
ITEM_SHAPE = (IMAGE_SIZE, IMAGE_SIZE)
_CHANNEL_ITEM_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)

Predict = Callable[[torch.Tensor], torch.Tensor]
"""``(B, 1, 28, 28)`` float32 on the device -> ``(B, C)`` (e.g. forward + softmax)."""

_ErrorForModel = Callable[[str], ServiceError]
"""Builds the error for one failed request, given the model's name."""

# Weight of the newest batch in the moving average of batch time behind ``Retry-After``.
_BATCH_TIME_SMOOTHING = 0.2


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one request gets back."""

    output: npt.NDArray[np.float32]
    """``(C,)``: this request's row of the model's output, on the CPU (``(k, C)``: its rows,
    for ``enqueue_rows``)."""
    queue_ms: float
    """From ``enqueue`` until its batch was handed to the inference thread."""
    inference_ms: float
    """Time of its batch in the inference thread (copy in, forward, copy out)."""
    batch_size: int
    """Number of images (rows) in the forward pass that answered it."""


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What happened to one collected batch; given to ``on_batch`` (e.g. to feed metrics).

    A collection whose items were all dropped is reported too, with ``batch_size == 0``.
    """

    batch_size: int
    """Images (rows) sent to the model, after dropping expired and cancelled requests."""
    queue_wait_s: tuple[float, ...]
    """Per request sent to the model: seconds from ``enqueue`` to the start of inference."""
    inference_s: float
    """Seconds the batch spent in the inference thread (0 when nothing ran)."""
    dropped_expired: int
    """Requests dropped before inference because their deadline had passed."""
    dropped_cancelled: int
    """Requests dropped before inference because their caller had gone."""
    failed: int
    """Requests of this batch answered with ``InferenceFailed``."""


@dataclass(slots=True, eq=False)
class _Request:
    item: npt.NDArray[np.float32]  # (28, 28); (rows, 28, 28) when not single
    rows: int  # images in item
    single: bool  # enqueued by enqueue(): answered with its one row, (C,)
    future: asyncio.Future[BatchResult]
    enqueued_at: float  # time.monotonic()
    deadline: float | None  # time.monotonic() value
    request_id: str | None  # for the batch's log lines


@dataclass(slots=True)
class _Segment:
    """Rows ``[start, stop)`` of a batch and their outcome: ``(stop - start, C)`` outputs or
    the error that failed them (only out-of-memory fails part of a batch)."""

    start: int
    stop: int
    outcome: npt.NDArray[np.float32] | BaseException


class Batcher:
    """Per-model request queue with one worker coroutine and one inference thread.

    Use ``start()`` / ``await stop()`` or ``async with Batcher(...)``; then
    ``await enqueue(item)`` from request handlers, on the loop the batcher was started on.

    Args:
        predict: ``(B, 1, 28, 28)`` float32 on ``device`` -> ``(B, C)``; called in the
            batcher's inference thread (see ``lone_on_loop``), under ``torch.inference_mode()``.
        name: the model's name in log lines and error messages (e.g. ``"lenet/3"``).
        device: where ``predict`` wants its input; the host buffer is pinned for CUDA.
        max_batch_size: the most requests in one forward pass.
        max_wait_ms: how long a batch may wait to fill, counted from its first request's
            arrival (time queued while the previous batch ran counts). A request alone in
            an idle batcher never waits. 0: run whatever is queued.
        queue_size: the most requests waiting; beyond it ``enqueue`` answers
            ``Unavailable(code="overloaded")``.
        on_batch: called on the event loop after each batch (e.g. to feed metrics); its
            errors are logged and otherwise ignored.
        on_worker_failure: called on the event loop once the worker has died (its requests
            have been failed): whoever owns the batcher restarts or replaces it.
        lone_on_loop: run a batch of one on the event loop instead of the inference thread.
            Only for models whose single-image forward pass is cheaper than the hand-off
            between threads (tens of microseconds): the loop is blocked while it runs.
        predict_one: what to run instead of ``predict`` for a batch of one: a variant of
            the same model that is faster for one image (default: ``predict``).
    """

    def __init__(
        self,
        predict: Predict,
        *,
        name: str = "model",
        device: torch.device | str = "cpu",
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        queue_size: int = 1024,
        on_batch: Callable[[BatchReport], None] | None = None,
        on_worker_failure: Callable[[], None] | None = None,
        lone_on_loop: bool = False,
        predict_one: Predict | None = None,
    ) -> None:
        _check_settings(predict, max_batch_size, max_wait_ms, queue_size)
        self._predict = predict
        self._predict_one = predict_one or predict
        self._name = name
        self._device = torch.device(device)
        self._max_batch_size = max_batch_size
        self._max_wait_ms = float(max_wait_ms)
        self._max_wait_s = self._max_wait_ms / 1000.0
        self._queue_size = queue_size
        self._on_batch = on_batch
        self._on_worker_failure = on_worker_failure
        # For a model whose single-image forward pass costs less than the hand-off to the
        # inference thread and back (~0.1-0.3 ms of wake-ups), a lone request runs on the loop.
        self._lone_on_loop = lone_on_loop

        # One host buffer for every batch; pinned so the copy to a GPU can be asynchronous.
        self._host_batch = torch.empty(
            (max_batch_size, 1, IMAGE_SIZE, IMAGE_SIZE),
            dtype=torch.float32,
            pin_memory=self._device.type == "cuda",
        )  # (max_batch_size, 1, 28, 28)
        self._host_batch_np: npt.NDArray[np.float32] = self._host_batch.numpy()

        self._queue: deque[_Request] = deque()
        self._queued_rows = 0  # images in the queue (a request of enqueue_rows holds several)
        self._not_empty = asyncio.Event()
        self._full = asyncio.Event()
        self._in_flight: list[_Request] = []
        self._accepting = False
        self._stopped = False
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._batch_seconds = 0.0  # moving average, for Retry-After

    # -- observability -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def queue_depth(self) -> int:
        """Requests waiting in the queue (not counting the batch in flight)."""
        return len(self._queue)

    @property
    def queue_capacity(self) -> int:
        return self._queue_size

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def max_wait_ms(self) -> float:
        return self._max_wait_ms

    @property
    def is_running(self) -> bool:
        """True while requests are accepted and the worker is alive (for readiness)."""
        return self._accepting and self._worker is not None and not self._worker.done()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker on the running event loop, and the inference thread. At once:
        ``enqueue`` is accepted as soon as this returns."""
        if self._worker is not None or self._stopped:
            raise RuntimeError(f"batcher {self._name!r} can be started only once")
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"inference-{self._name}"
        )
        self._accepting = True
        self._worker = asyncio.create_task(self._serve(), name=f"batcher-{self._name}")

    async def stop(self, *, drain: bool = True, timeout_s: float = 30.0) -> None:
        """Stop accepting requests and end the worker.

        With ``drain`` every request already accepted is answered first (the worker no
        longer waits for batches to fill). Without it, queued requests get
        ``Unavailable(code="shutting_down")`` at once and only the batch in flight finishes.
        Whatever is still unanswered after ``timeout_s`` gets ``Unavailable`` too.
        """
        self._accepting = False
        self._stopped = True
        if not drain:
            self._fail_queued(_shutting_down)
        self._wake_worker()
        worker = self._worker
        if worker is not None and not worker.done():
            done, _ = await asyncio.wait({worker}, timeout=timeout_s)
            if not done:
                logger.warning(
                    "batcher %s: not drained after %.1f s; failing %d queued and %d in-flight "
                    "requests",
                    self._name,
                    timeout_s,
                    len(self._queue),
                    len(self._in_flight),
                    extra={"request_ids": self._request_ids(self._in_flight, self._queue)},
                )
                worker.cancel()
                await asyncio.wait({worker})
        self._fail_queued(_shutting_down)
        if self._executor is not None:
            # A predict call stuck in the thread cannot be interrupted; do not wait for it.
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> Batcher:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop(drain=True)

    # -- enqueue -----------------------------------------------------------------------------

    def enqueue(
        self, item: npt.NDArray[np.float32], *, deadline: float | None = None
    ) -> asyncio.Future[BatchResult]:
        """Queue one item and return the future its :class:`BatchResult` will be set on.

        ``deadline`` is a ``time.monotonic()`` value: if it passes while the item is queued,
        the item is dropped and the future raises ``DeadlineExceeded``. Cancelling the future
        cancels the request; it is then dropped before inference.

        Raises at once: ``Unavailable`` (overloaded, shutting down, not running),
        ``DeadlineExceeded`` (deadline already passed), ``ValueError`` (not a float32
        ``(28, 28)`` array: a bug in the caller, not bad client input).
        """
        return self._queued(_checked_item(item), 1, True, deadline)

    def enqueue_rows(
        self, items: npt.NDArray[np.float32], *, deadline: float | None = None
    ) -> asyncio.Future[BatchResult]:
        """Queue ``(k, 28, 28)`` images of one request, to be run in one forward pass (unless
        ``k`` exceeds ``max_batch_size``); the :class:`BatchResult`'s output is ``(k, C)``.

        Raises as :meth:`enqueue` does; ``ValueError`` for anything but float32
        ``(k, 28, 28)`` with ``k >= 1``.
        """
        if (
            not isinstance(items, np.ndarray)
            or items.dtype != np.float32
            or items.ndim != 3
            or items.shape[1:] != ITEM_SHAPE
            or items.shape[0] < 1
        ):
            shape = items.shape if isinstance(items, np.ndarray) else type(items).__name__
            raise ValueError(f"enqueue_rows takes float32 (k, 28, 28) arrays, got {shape}")
        return self._queued(items, int(items.shape[0]), False, deadline)

    def _queued(
        self, item: npt.NDArray[np.float32], rows: int, single: bool, deadline: float | None
    ) -> asyncio.Future[BatchResult]:
        if not self._accepting:
            raise self._not_accepting_error()
        if len(self._queue) >= self._queue_size:
            raise Unavailable(
                f"model {self._name!r} is overloaded ({self._queue_size} requests queued); "
                "retry later",
                code="overloaded",
                retry_after_s=self._retry_after_s(),
            )
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            raise _deadline_exceeded(self._name)
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._queue.append(
            _Request(item, rows, single, future, now, deadline, request_id_var.get())
        )
        self._queued_rows += rows
        self._not_empty.set()
        if self._queued_rows >= self._max_batch_size:
            self._full.set()
        return future

    def _not_accepting_error(self) -> Unavailable:
        if self._stopped:
            return _shutting_down(self._name)
        return Unavailable(
            f"model {self._name!r} is not running (not started, or its worker failed)",
            code="not_running",
        )

    def _retry_after_s(self) -> int:
        """Seconds until the queue has likely drained: whole seconds, at least 1."""
        batches_ahead = math.ceil(len(self._queue) / self._max_batch_size)
        return max(1, math.ceil(batches_ahead * self._batch_seconds))

    # -- worker: collect -> predict -> unbatch -----------------------------------------------

    async def _serve(self) -> None:
        """The worker: one batch at a time until stopped and drained. Never dies silently."""
        try:
            while (collected := await self._collect()) is not None:
                await self._process(*collected)
        except asyncio.CancelledError:
            self._fail_in_flight(_shutting_down)
            self._fail_queued(_shutting_down)
            raise
        except Exception as exc:
            self._accepting = False
            logger.critical(
                "batcher %s: worker crashed; failing %d in-flight and %d queued requests",
                self._name,
                len(self._in_flight),
                len(self._queue),
                exc_info=True,
                extra={"request_ids": self._request_ids(self._in_flight, self._queue)},
            )
            worker_failed = _worker_failed(exc)
            self._fail_in_flight(worker_failed)
            self._fail_queued(worker_failed)
            if self._on_worker_failure is not None:
                try:
                    self._on_worker_failure()
                except Exception:
                    logger.exception("batcher %s: on_worker_failure callback failed", self._name)

    async def _collect(self) -> tuple[list[_Request], int, int] | None:
        """Wait for work and take the next batch off the queue.

        Returns the live requests and the counts dropped as expired and as cancelled, or
        ``None`` once stopped with nothing left to drain.
        """
        queue = self._queue
        while not queue:
            if not self._accepting:
                return None
            self._not_empty.clear()
            await self._not_empty.wait()
        # A lone request runs at once; with company, give the batch a chance to fill.
        if len(queue) > 1 and self._accepting:
            await self._wait_for_more(queue[0].enqueued_at)

        live: list[_Request] = []
        rows = expired = cancelled = 0
        now = time.monotonic()
        while queue and rows < self._max_batch_size:
            if rows and rows + queue[0].rows > self._max_batch_size:
                break  # a request's rows share one pass: it waits for the next batch
            request = queue.popleft()
            self._queued_rows -= request.rows
            future = request.future
            if future.done():  # the caller has gone
                cancelled += 1
            elif request.deadline is not None and request.deadline <= now:
                future.set_exception(_deadline_exceeded(self._name))
                expired += 1
            else:
                live.append(request)
                rows += request.rows
        return live, expired, cancelled

    async def _wait_for_more(self, first_enqueued_at: float) -> None:
        """Until the queue holds a full batch, or ``max_wait`` after the first arrival."""
        remaining_s = first_enqueued_at + self._max_wait_s - time.monotonic()
        if remaining_s <= 0 or self._queued_rows >= self._max_batch_size:
            return
        self._full.clear()
        try:
            async with asyncio.timeout(remaining_s):
                await self._full.wait()
        except TimeoutError:
            pass

    async def _process(self, batch: list[_Request], expired: int, cancelled: int) -> None:
        """Run one collected batch in the inference thread and answer its requests."""
        rows = sum(request.rows for request in batch)
        started = time.monotonic()
        queue_wait_s = tuple(started - request.enqueued_at for request in batch)
        inference_s = 0.0
        failed = 0
        if batch:
            self._in_flight = batch
            try:
                if rows == 1 and self._lone_on_loop:
                    segments, inference_s = self._predict_batch(batch, rows)
                else:
                    segments, inference_s = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._predict_batch, batch, rows
                    )
            except Exception as exc:
                # One log line per batch, not per request; the cause stays chained.
                logger.error(
                    "batcher %s: inference failed for a batch of %d",
                    self._name,
                    rows,
                    exc_info=exc,
                    extra={"request_ids": self._request_ids(batch)},
                )
                segments = [_Segment(0, rows, exc)]
            failed = self._unbatch(batch, rows, segments, queue_wait_s, inference_s)
            self._in_flight = []
            self._batch_seconds += _BATCH_TIME_SMOOTHING * (inference_s - self._batch_seconds)
        self._report(BatchReport(rows, queue_wait_s, inference_s, expired, cancelled, failed))

    def _unbatch(
        self,
        batch: list[_Request],
        rows: int,
        segments: list[_Segment],
        queue_wait_s: tuple[float, ...],
        inference_s: float,
    ) -> int:
        """Give each request its rows of the output; returns how many requests failed."""
        inference_ms = inference_s * 1000.0
        failed = 0
        start = 0
        for index, request in enumerate(batch):
            stop = start + request.rows
            outcome = _rows_of(segments, start, stop)
            start = stop
            future = request.future
            if isinstance(outcome, BaseException):
                failed += 1
                if not future.done():
                    future.set_exception(_inference_failed(self._name, rows, outcome))
            elif not future.done():  # cancelled while in flight
                output = outcome[0] if request.single else outcome
                future.set_result(
                    BatchResult(output, queue_wait_s[index] * 1000.0, inference_ms, rows)
                )
        return failed

    def _report(self, report: BatchReport) -> None:
        if self._on_batch is None:
            return
        try:
            self._on_batch(report)
        except Exception:
            logger.exception("batcher %s: on_batch callback failed", self._name)

    # -- inference thread: batch -> predict --------------------------------------------------

    def _predict_batch(self, batch: list[_Request], rows: int) -> tuple[list[_Segment], float]:
        """In the inference thread (or, for a lone image with ``lone_on_loop``, on the loop):
        assemble, run and copy back one batch of ``rows`` images; with its seconds."""
        started = time.perf_counter()
        host = self._host_batch_np  # (max_batch_size, 1, 28, 28)
        if all(request.single for request in batch):  # single images only: the hot path
            np.stack([request.item for request in batch], out=host[:rows, 0])
        elif rows <= self._max_batch_size:
            offset = 0
            for request in batch:
                host[offset : offset + request.rows, 0] = request.item.reshape(-1, *ITEM_SHAPE)
                offset += request.rows
        else:  # one request of more rows than a batch: forward passes of a batch each
            return self._predict_in_passes(batch[0].item), time.perf_counter() - started
        # From pinned memory this copy is asynchronous; the copy back to the CPU in
        # _forward waits for it, so the buffer is free again when this function returns.
        inputs = self._host_batch[:rows].to(self._device, non_blocking=True)  # (n, 1, 28, 28)
        with torch.inference_mode():
            segments = self._forward_splitting_on_oom(inputs, 0)
        return segments, time.perf_counter() - started

    def _predict_in_passes(self, items: npt.NDArray[np.float32]) -> list[_Segment]:
        """``(k, 28, 28)`` with ``k > max_batch_size``, a batch's worth at a time."""
        segments: list[_Segment] = []
        for offset in range(0, items.shape[0], self._max_batch_size):
            chunk = items[offset : offset + self._max_batch_size]
            size = chunk.shape[0]
            self._host_batch_np[:size, 0] = chunk
            inputs = self._host_batch[:size].to(self._device, non_blocking=True)
            with torch.inference_mode():
                segments += self._forward_splitting_on_oom(inputs, offset)
        return segments

    def _forward_splitting_on_oom(self, inputs: torch.Tensor, offset: int) -> list[_Segment]:
        """Forward ``inputs`` (rows ``offset...``); on out-of-memory retry each half."""
        size = inputs.shape[0]
        try:
            return [_Segment(offset, offset + size, self._forward(inputs))]
        except torch.OutOfMemoryError as exc:
            if size == 1:
                logger.error(
                    "batcher %s: out of memory even for a single request",
                    self._name,
                    extra={"request_ids": self._request_ids(self._in_flight)},
                )
                return [_Segment(offset, offset + 1, exc)]
        # Retried outside the except block so the exception's frames (and the tensors they
        # hold) are released before trying again.
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
        half = size // 2
        logger.warning(
            "batcher %s: out of memory on a batch of %d; retrying as %d + %d",
            self._name,
            size,
            half,
            size - half,
            extra={"request_ids": self._request_ids(self._in_flight)},
        )
        return self._forward_splitting_on_oom(
            inputs[:half], offset
        ) + self._forward_splitting_on_oom(inputs[half:], offset + half)

    def _forward(self, inputs: torch.Tensor) -> npt.NDArray[np.float32]:
        """One forward pass: ``(n, 1, 28, 28)`` on the device -> ``(n, C)`` float32 on the CPU."""
        size = inputs.shape[0]
        outputs = self._predict_one(inputs) if size == 1 else self._predict(inputs)
        if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2 or outputs.shape[0] != size:
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs)
            raise ValueError(
                f"predict returned {shape} for a batch of {size}; expected ({size}, C)"
            )
        # Always a fresh copy: the output may be a view of the input buffer, which the next
        # batch overwrites while callers may still hold these rows.
        copied: npt.NDArray[np.float32] = (
            outputs.detach().to(device="cpu", dtype=torch.float32, copy=True).numpy()
        )
        return copied

    # -- failing requests --------------------------------------------------------------------

    @staticmethod
    def _request_ids(*groups: Iterable[_Request]) -> list[str]:
        """The request ids of a batch's log line: a failure names the requests it failed."""
        return [r.request_id for group in groups for r in group if r.request_id is not None]

    def _wake_worker(self) -> None:
        self._not_empty.set()
        self._full.set()

    def _fail_queued(self, error: _ErrorForModel) -> None:
        while self._queue:
            future = self._queue.popleft().future
            if not future.done():
                future.set_exception(error(self._name))
        self._queued_rows = 0

    def _fail_in_flight(self, error: _ErrorForModel) -> None:
        for request in self._in_flight:
            if not request.future.done():
                request.future.set_exception(error(self._name))
        self._in_flight = []


def _shutting_down(name: str) -> Unavailable:
    return Unavailable(f"model {name!r} is shutting down", code="shutting_down")


def _deadline_exceeded(name: str) -> DeadlineExceeded:
    return DeadlineExceeded(f"the request to model {name!r} waited past its deadline")


def _worker_failed(cause: BaseException) -> _ErrorForModel:
    def error(name: str) -> InferenceFailed:
        failure = InferenceFailed(f"model {name!r}: the batching worker failed")
        failure.__cause__ = cause
        return failure

    return error


def _inference_failed(name: str, size: int, cause: BaseException) -> InferenceFailed:
    if isinstance(cause, torch.OutOfMemoryError):
        message = f"model {name!r} ran out of memory"
    else:
        message = f"model {name!r} failed on a batch of {size}"
    failure = InferenceFailed(message)
    failure.__cause__ = cause
    return failure


def _rows_of(
    segments: list[_Segment], start: int, stop: int
) -> npt.NDArray[np.float32] | BaseException:
    """Rows ``[start, stop)`` of a batch's output, or the error that failed any of them."""
    if len(segments) == 1:  # the whole batch in one outcome: the usual case
        outcome = segments[0].outcome
        return outcome if isinstance(outcome, BaseException) else outcome[start:stop]
    parts: list[npt.NDArray[np.float32]] = []
    for segment in segments:
        if segment.stop <= start or segment.start >= stop:
            continue
        if isinstance(segment.outcome, BaseException):
            return segment.outcome
        low, high = max(start, segment.start), min(stop, segment.stop)
        parts.append(segment.outcome[low - segment.start : high - segment.start])
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _checked_item(item: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The item as a ``(28, 28)`` float32 array (a view; nothing is copied)."""
    if not isinstance(item, np.ndarray) or item.dtype != np.float32:
        kind = item.dtype if isinstance(item, np.ndarray) else type(item).__name__
        raise ValueError(f"batcher items must be float32 numpy arrays, got {kind}")
    if item.shape == ITEM_SHAPE:
        return item
    if item.shape == _CHANNEL_ITEM_SHAPE:
        image: npt.NDArray[np.float32] = item[0]
        return image
    raise ValueError(
        f"batcher items must have shape {ITEM_SHAPE} or {_CHANNEL_ITEM_SHAPE}, got {item.shape}"
    )


def _check_settings(
    predict: Predict, max_batch_size: int, max_wait_ms: float, queue_size: int
) -> None:
    if not callable(predict):
        raise TypeError(f"predict must be callable, got {type(predict).__name__}")
    if (
        isinstance(max_batch_size, bool)
        or not isinstance(max_batch_size, int)
        or max_batch_size < 1
    ):
        raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
    if not math.isfinite(max_wait_ms) or max_wait_ms < 0:
        raise ValueError(
            f"max_wait_ms must be a finite number >= 0 (0 = never wait to fill a batch), "
            f"got {max_wait_ms!r}"
        )
    if (
        isinstance(queue_size, bool)
        or not isinstance(queue_size, int)
        or queue_size < max_batch_size
    ):
        raise ValueError(
            f"queue_size must be an integer >= max_batch_size ({max_batch_size}) so that a full "
            f"batch fits in the queue, got {queue_size!r}: raise queue_size or lower "
            "max_batch_size"
        )
