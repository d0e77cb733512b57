"""The served models, by name and version, each a loaded package behind its own batcher; and
swapping packages in and out while requests are in flight, losing none of them.

- A request *leases* the version it is answered by (:meth:`ModelRegistry.lease`) before its
  body is read, and holds it until its answer is ready.
- A reload loads, verifies, warms and self-tests a new or changed package in a worker thread
  (:func:`service.packages.loading.load_package`), and only then puts it in the table: new
  requests get it from then on. A package that fails leaves what was serving in place.
- The version it replaces (or a removed package) is *retired*: it waits until no request
  holds it, then its batcher drains its queue and stops, and the module is released.
- A batcher whose worker dies is restarted (a log line, and
  ``digits_worker_failures_total{restarted="true"}``); after :data:`MAX_WORKER_RESTARTS` the
  model is marked failed instead.
- A changed package that fails leaves its older copy serving, marked with the failure
  (:meth:`ModelRegistry.stale_error`) until the files are fixed or removed.

A little over the house's ~300 lines: loading, leasing, retiring and restarting all change
the same two tables, under one lock, and read best side by side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from service.errors import NotFound, Unavailable
from service.inference.batcher import Batcher, BatchReport
from service.packages.card import ModelCard, version_key
from service.packages.discovery import Fingerprint, find_packages, unchanged
from service.packages.loading import LoadedModel, SelfTestDigit, load_package
from service.packages.verification import PackageError
from service.settings import BatchingSettings, Settings

logger = logging.getLogger(__name__)

#: Worker restarts allowed per model version before it is marked failed.
MAX_WORKER_RESTARTS = 3

ModelKey = tuple[str, str]  # (name, version)


@dataclass(eq=False)
class ServedModel:
    """A loaded package ready for requests, and who is using it."""

    loaded: LoadedModel
    batching: BatchingSettings
    batcher: Batcher
    #: Requests holding this version now (see :meth:`ModelRegistry.lease`).
    users: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def card(self) -> ModelCard:
        return self.loaded.card

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    @property
    def label(self) -> str:
        """``name/version``, as log lines and messages name it."""
        return f"{self.card.name}/{self.card.version}"


class Lease:
    """A request's hold on a served version (a class, not a generator: it is on every
    request's path, and a generator-based context manager costs several times more)."""

    __slots__ = ("served",)

    def __init__(self, served: ServedModel) -> None:
        self.served = served

    def __enter__(self) -> ServedModel:
        served = self.served
        served.users += 1
        served.idle.clear()
        return served

    def __exit__(self, *exc: object) -> None:
        served = self.served
        served.users -= 1
        if served.users == 0:
            served.idle.set()


@dataclass(frozen=True)
class FailedPackage:
    name: str
    version: str
    path: Path
    error: str
    fingerprint: Fingerprint | None = None


@dataclass
class ReloadReport:
    loaded: list[ModelKey] = field(default_factory=list)
    unchanged: list[ModelKey] = field(default_factory=list)
    removed: list[ModelKey] = field(default_factory=list)
    failed: list[FailedPackage] = field(default_factory=list)


#: Called on the event loop after each batch: (name, version, report).
OnBatch = Callable[[str, str, BatchReport], None]
#: Called when a worker died: (name, version, whether it was restarted).
OnWorkerFailure = Callable[[str, str, bool], None]


class ModelRegistry:
    """Every served model, by name and version; swaps packages in without losing a request."""

    def __init__(
        self,
        settings: Settings,
        device: torch.device,
        selftest_digits: Sequence[SelfTestDigit],
        *,
        on_batch: OnBatch | None = None,
        on_worker_failure: OnWorkerFailure | None = None,
    ) -> None:
        self._settings = settings
        self._device = device
        self._selftest_digits = selftest_digits
        self._on_batch = on_batch
        self._on_worker_failure = on_worker_failure
        self._models: dict[ModelKey, ServedModel] = {}
        self._failed: dict[ModelKey, FailedPackage] = {}
        #: Served versions whose changed files on disk failed to load.
        self._stale: dict[ModelKey, FailedPackage] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self.loaded_once = False

    # ---- lookup ---------------------------------------------------------------------------

    def served(self) -> list[ServedModel]:
        return sorted(
            self._models.values(), key=lambda m: (m.card.name, version_key(m.card.version))
        )

    def failed(self) -> list[FailedPackage]:
        return sorted(self._failed.values(), key=lambda f: (f.name, f.version))

    def newest_version(self, name: str) -> str | None:
        versions = [v for (n, v) in self._models if n == name]
        return max(versions, key=version_key) if versions else None

    def get(self, name: str | None, version: str | None) -> ServedModel:
        """The model to answer with; 404 with the names that exist when there is none, 503
        when that version failed."""
        name = name or self._settings.default_model
        if version is None:
            version = self.newest_version(name) or self._newest_failed_version(name)
        served = self._models.get((name, version)) if version is not None else None
        if served is not None:
            return served
        failed = self._failed.get((name, version)) if version is not None else None
        if failed is not None:
            raise Unavailable(
                f"model {name}/{version} failed to load: {failed.error}",
                code="model_failed",
                retry_after_s=30,
            )
        known = sorted({f"{n}/{v}" for n, v in self._models})
        wanted = f"{name}/{version}" if version else name
        raise NotFound(f"no model {wanted}; serving: {', '.join(known) or 'none'}")

    def lease(self, name: str | None, version: str | None) -> Lease:
        """:meth:`get`, held until the ``with`` block ends: the version is not stopped
        meanwhile, even if a reload replaces or removes it."""
        return Lease(self.get(name, version))

    def _newest_failed_version(self, name: str) -> str | None:
        versions = [v for (n, v) in self._failed if n == name]
        return max(versions, key=version_key) if versions else None

    def stale_error(self, served: ServedModel) -> str | None:
        """Why the package's changed files on disk were not loaded, while this copy serves."""
        stale = self._stale.get((served.card.name, served.card.version))
        return None if stale is None else stale.error

    def default_ready(self) -> bool:
        """Whether the default model's newest version is in the table with a live worker."""
        version = self.newest_version(self._settings.default_model)
        if version is None:
            return False
        return self._models[(self._settings.default_model, version)].batcher.is_running

    # ---- loading and swapping -------------------------------------------------------------

    async def reload(self) -> ReloadReport:
        """Bring what is served in line with the model folder; one reload at a time."""
        async with self._lock:
            report = await self._reload()
            self.loaded_once = True
            return report

    async def _reload(self) -> ReloadReport:
        report = ReloadReport()
        packages = find_packages(self._settings.model_dir)
        for key, path in packages.items():
            current = self._models.get(key)
            if current is not None and unchanged(path, current.loaded.fingerprint):
                report.unchanged.append(key)
                continue
            stale = self._stale.get(key)
            if stale is not None and unchanged(path, stale.fingerprint):
                report.failed.append(stale)  # same broken files: not retried, old copy serves
                continue
            known_failure = self._failed.get(key)
            if known_failure is not None and unchanged(path, known_failure.fingerprint):
                report.failed.append(known_failure)  # same files, same verdict: not retried
                continue
            batching = self._settings.batching_for(key[0])
            try:
                loaded = await asyncio.to_thread(
                    load_package,
                    path,
                    self._device,
                    warm_batch_sizes=sorted({1, batching.max_batch_size}),
                    selftest_digits=self._selftest_digits,
                )
            except PackageError as exc:
                failure = FailedPackage(key[0], key[1], path, str(exc), Fingerprint.of(path))
                logger.error(
                    "model package failed",
                    extra={"model": f"{key[0]}/{key[1]}", "path": str(path), "reason": str(exc)},
                )
                report.failed.append(failure)
                if current is None:
                    self._failed[key] = failure
                else:  # the copy that works keeps serving, marked
                    self._stale[key] = failure
                continue
            served = ServedModel(loaded, batching, self._batcher_for(loaded, batching))
            served.batcher.start()
            self._models[key] = served
            self._failed.pop(key, None)
            self._stale.pop(key, None)
            report.loaded.append(key)
            logger.info("model serving", extra={"model": served.label, "device": str(self._device)})
            if current is not None:
                self._retire(current)
        for key in [k for k in self._models if k not in packages]:
            report.removed.append(key)
            self._retire(self._models.pop(key))
        for key in [k for k in self._failed if k not in packages]:
            del self._failed[key]
        for key in [k for k in self._stale if k not in self._models]:
            del self._stale[key]
        return report

    def _batcher_for(self, loaded: LoadedModel, batching: BatchingSettings) -> Batcher:
        name, version = loaded.card.name, loaded.card.version
        on_batch = self._on_batch

        def report(batch: BatchReport) -> None:
            if on_batch is not None:
                on_batch(name, version, batch)

        return Batcher(
            loaded.predict,
            name=f"{name}/{version}",
            max_batch_size=batching.max_batch_size,
            max_wait_ms=batching.max_wait_ms,
            queue_size=batching.queue_size,
            device=loaded.device,
            on_batch=report,
            on_worker_failure=lambda: self._worker_failed((name, version)),
            lone_on_loop=loaded.single_image_ms < self._settings.lone_on_loop_below_ms,
            predict_one=loaded.predict_one,
        )

    def _worker_failed(self, key: ModelKey) -> None:
        """A batcher's worker died (its requests already failed): restart it, or give up."""
        served = self._models.get(key)
        if served is None:  # retired meanwhile
            return
        restart = served.restarts < MAX_WORKER_RESTARTS
        if restart:
            served.restarts += 1
            dead = served.batcher
            served.batcher = self._batcher_for(served.loaded, served.batching)
            served.batcher.start()
            # Its requests are failed already; stopping it releases its inference thread.
            self._in_background(dead.stop(drain=False))
            logger.error(
                "batching worker restarted",
                extra={"model": served.label, "restarts": served.restarts},
            )
        else:
            del self._models[key]
            self._failed[key] = FailedPackage(
                key[0],
                key[1],
                served.loaded.path,
                f"its batching worker failed {MAX_WORKER_RESTARTS + 1} times",
                served.loaded.fingerprint,
            )
            logger.critical("model marked failed", extra={"model": served.label})
            self._retire(served)
        if self._on_worker_failure is not None:
            self._on_worker_failure(key[0], key[1], restart)

    def _retire(self, served: ServedModel) -> None:
        """Stop ``served`` once no request holds it (in the background)."""
        self._in_background(self._drain_and_stop(served))

    def _in_background(self, stopping: Coroutine[Any, Any, None]) -> None:
        """Run a stop as a task that :meth:`wait_retired` (and so :meth:`close`) awaits."""
        task = asyncio.get_running_loop().create_task(stopping)
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _drain_and_stop(self, served: ServedModel) -> None:
        grace = self._settings.shutdown_grace_s
        try:
            async with asyncio.timeout(grace):
                await served.idle.wait()
        except TimeoutError:
            logger.warning(
                "retiring a model still in use",
                extra={"model": served.label, "users": served.users, "waited_s": grace},
            )
        await served.batcher.stop(drain=True, timeout_s=grace)
        logger.info("model retired", extra={"model": served.label})

    async def wait_retired(self) -> None:
        """Until every version retired so far has stopped."""
        await asyncio.gather(*self._retiring)

    async def close(self) -> None:
        """Answer everything queued, then stop every batcher (retiring ones included)."""
        async with self._lock:
            for key in list(self._models):
                self._retire(self._models.pop(key))
            await self.wait_retired()
