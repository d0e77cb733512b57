"""Admission: how many ``/predict`` requests may be in progress at once, so that the latency
of the requests accepted does not grow with the load offered. The rest are refused with 503
and ``Retry-After`` before their body is read (~20 us of the event loop's time, measured in
process, against a body read, a decode and a queue slot).

Two limits, both counted from the request's arrival at the edge:

- **Latency** (:class:`ConcurrencyLimit`): an adaptive limit on requests in progress, as TCP
  adapts its window, with a test for a standing queue after CoDel's. Time is cut into
  intervals of half the target (``DIGITS_LATENCY_TARGET_MS``); when in an interval even the
  quickest quarter of the admitted requests took longer than the target to be answered,
  arrival to answer, with at least the minimum in progress, requests wait behind each other:
  the limit shrinks in proportion (``target / that quartile``, at most halving). CoDel looks
  at the quickest answer alone; here tiny images skip the decode pool's queue and would
  always supply one. A few slow requests (large images) do not count either. While answers
  come within the target and the limit is in use, it grows: by one per answer when they come
  within half the target (so that it comes back quickly once a flood ends), else by one per
  limit's worth of answers. By Little's law it settles where the quickest quarter take
  about the target. ``DIGITS_MAX_IN_FLIGHT`` replaces it with a fixed limit.
- **Memory** (:class:`MemoryBudget`): each admitted request reserves what its body may cost
  (the declared length, else the body limit, times :data:`BODY_COPIES`) out of the bytes
  the settings leave for bodies; one request is always admitted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    _interval_start: float = float("-inf")
    _latencies: list[float] = field(default_factory=list)  # this interval's answers
    _most_in_flight: int = 0  # ... and the most requests in progress at one of them

    @classmethod
    def fixed(cls, limit: int) -> ConcurrencyLimit:
        return cls(target_s=float("inf"), minimum=limit, maximum=limit, limit=limit, adaptive=False)

    def allows(self) -> bool:
        return self.in_flight < int(self.limit)

    def observe(self, latency_s: float, now: float) -> None:
        """One admitted request answered after ``latency_s`` (``in_flight`` already counts
        it out)."""
        if not self.adaptive:
            return
        in_flight = self.in_flight
        if now - self._interval_start >= self.target_s / 2:
            self._judge_interval()
            self._interval_start, self._latencies, self._most_in_flight = now, [], 0
        self._latencies.append(latency_s)
        self._most_in_flight = max(self._most_in_flight, in_flight)
        if latency_s <= self.target_s and in_flight + 1 >= int(self.limit):
            step = 1.0 if latency_s < self.target_s / 2 else 1.0 / self.limit
            self.limit = min(float(self.maximum), self.limit + step)

    def _judge_interval(self) -> None:
        if not self._latencies or self._most_in_flight < self.minimum:
            return
        # The 25th percentile, nearest rank: a quarter of the answers at or under it.
        quickest_quarter = sorted(self._latencies)[max(0, math.ceil(len(self._latencies) / 4) - 1)]
        if quickest_quarter > self.target_s:
            # A standing queue: shrink to what would have met the target.
            scale = max(0.5, self.target_s / quickest_quarter)
            busy = min(self.limit, self._most_in_flight + 1)
            self.limit = max(float(self.minimum), busy * scale)


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
        # Most routes have a fixed path: found by a dict lookup, not by matching each.
        paths = [(getattr(r, "path", "{"), r) for r in self.routes]
        self._by_path = {path: r for path, r in paths if "{" not in path}
        self._templated = tuple(r for r in self.routes if r not in self._by_path.values())

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
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                limit.in_flight -= 1
                self.memory.reserved -= cost
                now = time.monotonic()
                arrived: float = scope.get("state", {}).get("arrived_at", now)
                limit.observe(now - arrived, now)

        async def send_releasing(message: Message) -> None:
            # Released as the last of the answer goes out, not after: the client may send its
            # next request on this connection at once, and must find the place free.
            if message["type"] == "http.response.body" and not message.get("more_body"):
                release()
            await send(message)

        try:
            await self.app(scope, receive, send_releasing)
        finally:
            release()

    def _route(self, scope: Scope) -> BaseRoute | None:
        if scope["type"] != "http":
            return None
        route = self._by_path.get(scope["path"])
        if route is not None:
            return route
        for candidate in self._templated:
            if candidate.matches(scope)[0] is not Match.NONE:
                return candidate
        return None


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
