"""Per-request context as plain ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware):
the arrival time, request id in and out, security headers, one structured log line and
metrics per request."""

from __future__ import annotations

import logging
import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.observability.logs import request_id_var, request_record
from service.observability.metrics import ServiceMetrics

logger = logging.getLogger("service.access")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
#: Routes whose every request is not worth a log line or a latency sample.
_QUIET = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # When the request arrived: deadlines and admission count from here.
        scope.setdefault("state", {})["arrived_at"] = time.monotonic()
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        log = request_record(scope)
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(_SECURITY_HEADERS)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            path = scope["path"]
            if path not in _QUIET:
                seconds = time.perf_counter() - started
                self.metrics.observe_request(
                    route_template(scope),
                    str(log.get("model", "")),
                    str(log.get("version", "")),
                    status,
                    seconds,
                )
                logger.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "latency_ms": round(seconds * 1000, 3),
                        **log,
                    },
                )
            request_id_var.reset(token)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _VALID_REQUEST_ID.match(candidate):
                return candidate
            break
    return new_request_id()


def new_request_id() -> str:
    """32 random hex digits, like ``uuid4().hex``. Ids must be unique, not secret: the
    process's Mersenne Twister (seeded from the OS at start-up) gives 128 bits without the
    system call per request that ``uuid4`` makes."""
    return f"{random.getrandbits(128):032x}"


def route_template(scope: Scope) -> str:
    """The path template of the route that answered (``/models/{name}``, or the one a shed
    request was for), for metrics; else ``unmatched``: a 404's path is no label, or anyone
    could add label values."""
    path: str = getattr(scope.get("route"), "path", "unmatched")
    return path
