"""Admission: how many ``/predict`` requests may be in progress at once, so that the latency
of the requests accepted does not grow with the load offered. The rest are refused with 503
and ``Retry-After`` before their body is read (~20 us of the event loop's time, measured in
process, against a body read, a decode and a queue slot).

Two limits, both counted from the request's arrival at the edge:

- **Latency** (:class:`ConcurrencyLimit`): an adaptive limit on requests in progress, as TCP
  adapts its window. Each admitted request's latency, arrival to answer, is compared with
  the target (``DIGITS_LATENCY_TARGET_MS``). While answers come in under it and the limit is
  in use, the limit grows by one per limit's worth of answers; when one comes in over it
  with more than the minimum in progress (a queue, not one large image), the limit shrinks
  in proportion (``target / latency``), at most once per half target interval so that a
  burst of late answers counts once. Answers well inside the target (under half) grow it by
  one each, so that it comes back quickly once a flood ends. By Little's law the limit
  settles where the requests in progress take about the target to get through.
  ``DIGITS_MAX_IN_FLIGHT`` replaces it with a fixed limit.
- **Memory** (:class:`MemoryBudget`): each admitted request reserves what its body may cost
  (the declared length, else the body limit, times :data:`BODY_COPIES`) out of the bytes
  the settings leave for bodies; one request is always admitted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Unavailable
from service.http.responses import service_error_response

#: Copies of a body alive at once while it is handled: the bytes read, a multipart part or
#: decoded base64, and the decoder's own buffers.
BODY_COPIES = 3
#: What a request costs besides its body (ASGI scope, tasks, the answer), reserved too.
REQUEST_OVERHEAD_BYTES = 64 * 1024


@dataclass
class ConcurrencyLimit:
    """An additive-increase, proportional-decrease limit on requests in progress."""

    target_s: float
    minimum: int
    maximum: int
    limit: float
    adaptive: bool = True
    #: Requests admitted and not yet answered.
    in_flight: int = 0
    _last_decrease: float = float("-inf")

    @classmethod
    def fixed(cls, limit: int) -> ConcurrencyLimit:
        return cls(target_s=float("inf"), minimum=limit, maximum=limit, limit=limit, adaptive=False)

    def allows(self) -> bool:
        return self.in_flight < int(self.limit)

    def observe(self, latency_s: float, now: float) -> None:
        """One admitted request answered after ``latency_s`` (``in_flight`` already counts
        it out)."""
        in_flight = self.in_flight
        if not self.adaptive:
            return
        if latency_s > self.target_s:
            if in_flight > self.minimum and now - self._last_decrease >= self.target_s / 2:
                # Shrink to what would have met the target: at most halve, at once.
                scale = max(0.5, self.target_s / latency_s)
                self.limit = max(float(self.minimum), min(self.limit, in_flight + 1) * scale)
                self._last_decrease = now
        elif in_flight + 1 >= int(self.limit):
            # Well inside the target, grow fast (one per answer: doubling per round trip);
            # near it, carefully (one per limit's worth of answers).
            step = 1.0 if latency_s < self.target_s / 2 else 1.0 / self.limit
            self.limit = min(float(self.maximum), self.limit + step)


@dataclass
class MemoryBudget:
    """Bytes reserved by the bodies of admitted requests, out of ``capacity``."""

    capacity: int
    max_body_bytes: int
    reserved: int = 0

    def cost(self, declared_length: int | None) -> int:
        body = self.max_body_bytes if declared_length is None else declared_length
        return min(body, self.max_body_bytes) * BODY_COPIES + REQUEST_OVERHEAD_BYTES

    def allows(self, cost: int) -> bool:
        return self.reserved == 0 or self.reserved + cost <= self.capacity


class Admission:
    """ASGI middleware: admits or refuses requests to ``routes`` (those that do the work)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: ConcurrencyLimit,
        memory: MemoryBudget,
        routes: Iterable[BaseRoute],
    ) -> None:
        self.app = app
        self.limit = limit
        self.memory = memory
        self.routes = tuple(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        cost = self.memory.cost(_declared_length(scope))
        limit = self.limit
        if not limit.allows():
            count = limit.in_flight
            why = f"{count} request{'' if count == 1 else 's'} in progress"
        elif not self.memory.allows(cost):
            why = "its memory for request bodies is in use"
        else:
            why = None
        if why is not None:
            scope["route"] = route  # counted under the route it was for
            refusal = Unavailable(
                f"the service is overloaded ({why}); retry later", code="overloaded"
            )
            await service_error_response(refusal)(scope, receive, send)
            return
        limit.in_flight += 1
        self.memory.reserved += cost
        try:
            await self.app(scope, receive, send)
        finally:
            limit.in_flight -= 1
            self.memory.reserved -= cost
            now = time.monotonic()
            arrived: float = scope["state"].get("arrived_at", now) if "state" in scope else now
            limit.observe(now - arrived, now)

    def _route(self, scope: Scope) -> BaseRoute | None:
        if scope["type"] != "http":
            return None
        for route in self.routes:
            if route.matches(scope)[0] is not Match.NONE:
                return route
        return None


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
