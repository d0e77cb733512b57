"""What a running service holds, built once in the app's lifespan and shared by every route."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from service.inference.registry import ModelRegistry
from service.observability.metrics import QueueReading, ServiceMetrics
from service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    registry: ModelRegistry
    metrics: ServiceMetrics
    #: Decoding and preprocessing of all but tiny images run here, off the event loop.
    decode_pool: ThreadPoolExecutor
    #: Set at SIGTERM: ``/readyz`` answers 503 so load balancers stop sending, while
    #: requests are still served (for ``drain_delay_s``).
    draining: bool = False
    #: Set once the server stops accepting: new work is refused.
    shutting_down: bool = False
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def queue_readings(self) -> list[QueueReading]:
        return [
            (m.card.name, m.card.version, m.batcher.queue_depth, m.batcher.queue_capacity)
            for m in self.registry.served()
        ]

    async def watch_model_dir(self) -> None:
        """Re-scan the model folder every ``reload_interval_s``; failures are logged, not fatal."""
        interval = self.settings.reload_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                report = await self.registry.reload()
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
