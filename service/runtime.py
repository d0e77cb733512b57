"""What a running service holds, built once in the app's lifespan and shared by every route."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from service.metrics import QueueReading, ServiceMetrics
from service.repository import ModelRepository
from service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    repository: ModelRepository
    metrics: ServiceMetrics
    #: Decoding and preprocessing of all but tiny images run here, off the event loop.
    decode_pool: ThreadPoolExecutor
    shutting_down: bool = False
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def queue_readings(self) -> list[QueueReading]:
        return [
            (m.card.name, m.card.version, m.batcher.queue_depth, m.batcher.queue_capacity)
            for m in self.repository.served()
        ]

    async def watch_model_dir(self) -> None:
        """Re-scan the model folder every ``reload_interval_s``; failures are logged, not fatal."""
        interval = self.settings.reload_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                report = await self.repository.reload()
            except Exception:
                logger.exception("model folder re-scan failed")
                continue
            if report.loaded or report.removed:
                logger.info(
                    "model folder changed",
                    extra={
                        "loaded": [f"{n}/{v}" for n, v in report.loaded],
                        "removed": [f"{n}/{v}" for n, v in report.removed],
                    },
                )
