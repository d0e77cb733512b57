"""The fast path of ``POST /predict``: the common request, answered by the route's own code
without FastAPI's per-request machinery.

The common request is an image as the body, with no query or just ``model`` and ``version``.
For it there is nothing for FastAPI to validate, yet its routing, dependency solving and
parameter handling took more of the event loop's time than decoding the image (py-spy,
LeNet-5, 64 connections on one core). Here the same checks (API key, shutting down) and
the same answer (:func:`service.routes.predict.answer_one`) run directly. Every other
``/predict`` request (multipart, JSON, ``model=all``, ``explain``, any parameter FastAPI
would refuse) goes on to the FastAPI route, which stays the contract OpenAPI documents.
Tests send each fast-path request both ways and compare the answers.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.dependencies import check_accepting, check_api_key, offered_api_key
from service.error_responses import service_error_response, unexpected_error_response
from service.errors import ServiceError
from service.intake import RAW_IMAGE_TYPES, media_type_of
from service.modelcard import NAME_PATTERN, VERSION_PATTERN
from service.routes import predict
from service.runtime import Runtime

PATH = "/predict"
_NAME = re.compile(NAME_PATTERN)
_VERSION = re.compile(VERSION_PATTERN)
_PREDICT_ROUTE = next(
    route
    for route in predict.router.routes
    if isinstance(route, APIRoute) and route.path == PATH and route.methods == {"POST"}
)


def fast_path_query(scope: Scope) -> tuple[str | None, str | None] | None:
    """``(model, version)`` when the request is one the fast path answers, else ``None``.

    That is ``POST /predict`` whose content type (if any) is a raw image type, and whose
    query is empty or holds ``model`` (a model name; not ``all``) and ``version`` (a version
    number), each at most once and valid: nothing FastAPI would refuse or read differently.
    """
    if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
        return None
    for name, value in scope["headers"]:
        if (
            name == b"content-type"
            and media_type_of(value.decode("latin-1")) not in RAW_IMAGE_TYPES
        ):
            return None
    query: bytes = scope["query_string"]
    if not query:
        return None, None
    try:
        pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    values = dict(pairs)
    if len(values) != len(pairs) or not values.keys() <= {"model", "version"}:
        return None
    model, version = values.get("model"), values.get("version")
    if model is not None and (model == predict.ALL_MODELS or not _NAME.match(model)):
        return None
    if version is not None and not _VERSION.match(version):
        return None
    return model, version


class PredictFastPath:
    """ASGI middleware, innermost of the service's: answers the requests
    :func:`fast_path_query` accepts, passes every other request on to FastAPI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = fast_path_query(scope)
        if query is None:
            await self.app(scope, receive, send)
            return
        model, version = query
        # What FastAPI's router would have put there: the access log and metrics read it.
        scope["route"] = _PREDICT_ROUTE
        request = Request(scope, receive)
        response: Response
        try:
            runtime: Runtime = scope["app"].state.runtime
            keys = runtime.settings.api_keys
            if keys:  # headers are parsed only when a key is needed
                headers = request.headers
                check_api_key(
                    keys, offered_api_key(headers.get("authorization"), headers.get("x-api-key"))
                )
            check_accepting(runtime)
            response = await predict.answer_one(request, runtime, model, version)
        except ServiceError as exc:
            response = service_error_response(exc)
        except Exception:
            response = unexpected_error_response()
        await response(scope, receive, send)
