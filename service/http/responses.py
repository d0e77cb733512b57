"""Errors -> responses in the API's one error shape (``{"error": {...}}``): the app's
exception handlers, and the ASGI layers that answer before or beside FastAPI's routing (the
admission limit, the ``/predict`` fast path), all use :func:`service_error_response`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.schemas import ErrorDetail, ErrorResponse
from service.errors import ServiceError
from service.observability.logs import request_id_var

logger = logging.getLogger("service.app")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    detail = ErrorDetail(
        status=status, code=code, message=message, request_id=request_id_var.get(), **extra
    )
    return JSONResponse(
        ErrorResponse(error=detail).model_dump(exclude_none=True), status, headers=headers
    )


def service_error_response(exc: ServiceError) -> JSONResponse:
    """A :class:`ServiceError` as its response; the service's own faults are logged too."""
    if exc.fault:
        logger.warning("request failed: %s", exc.message, extra={"code": exc.code})
    return error_response(exc.status, exc.code, exc.message, exc.headers())


def unexpected_error_response() -> JSONResponse:
    """A 500 for an exception nobody expected; call it from ``except``, it logs the trace."""
    logger.exception("unexpected error")
    return error_response(500, "internal_error", "internal error; see the service log")


def install_error_handlers(app: FastAPI) -> None:
    """Every error FastAPI or a route raises -> the one shape."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        fields = [str(p["loc"][-1]) for p in problems if p.get("loc")]
        message = "; ".join(
            f"{'.'.join(str(x) for x in p.get('loc', ()))}: {p.get('msg')}" for p in problems
        )
        return error_response(422, "invalid_parameter", message, fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response()
