"""The fast path of ``POST /predict``: the route's own function, called without FastAPI's
per-request routing and dependency solving.

For a raw image body FastAPI has nothing to validate but the query, yet its routing,
dependency solving and parameter handling took more of the event loop's time than decoding
an MNIST image (py-spy, LeNet-5, 64 connections on one core). Measured with and without it
(``benchmarks.ab``, 2026-12-02, BENCHMARKS.md): 1.99x the throughput on LeNet-5 with one
PNG, 1.11x on the realistic mix. Here the query is validated by
the route's own model (:class:`service.api.predict.PredictQuery`), the key and shutdown are
checked by the route's own dependencies' functions, and the route function answers: nothing
is validated or answered differently. A query the model refuses goes on to FastAPI, which
refuses it the documented way (422); so does every other request.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import predict
from service.api.dependencies import authorize, check_accepting
from service.errors import ServiceError
from service.http.responses import service_error_response, unexpected_error_response
from service.inference.runtime import Runtime

PATH = "/predict"
_ROUTE = next(
    route
    for route in predict.router.routes
    if isinstance(route, APIRoute) and route.path == PATH and route.methods == {"POST"}
)


_NO_QUERY = predict.PredictQuery.model_validate({})


def fast_path_query(scope: Scope) -> predict.PredictQuery | None:
    """The validated query of a ``POST /predict``, else ``None`` (another request, or a query
    the route refuses). Read as Starlette reads it: blank values kept, the last of repeats."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
        return None
    if not scope["query_string"]:
        return _NO_QUERY  # what the model makes of an empty query, made once
    query = scope["query_string"].decode("latin-1")
    try:
        return predict.PredictQuery.model_validate(dict(parse_qsl(query, keep_blank_values=True)))
    except ValidationError:
        return None


class PredictFastPath:
    """ASGI middleware, innermost of the service's: answers ``POST /predict`` with the route
    function, passes every other request (and a query to refuse) on to FastAPI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = fast_path_query(scope)
        if query is None:
            await self.app(scope, receive, send)
            return
        # What FastAPI's router would have put there: the access log and metrics read it.
        scope["route"] = _ROUTE
        request = Request(scope, receive)
        response: Response
        try:
            runtime: Runtime = scope["app"].state.runtime
            await authorize(request, runtime.settings.api_keys)
            check_accepting(runtime)
            response = await predict.predict(request, runtime, query)
        except ServiceError as exc:
            response = service_error_response(exc)
        except Exception:
            response = unexpected_error_response()
        await response(scope, receive, send)
