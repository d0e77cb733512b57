"""Errors -> responses in the API's one error shape (``{"error": {...}}``), for the exception
handlers of ``service.app`` and for the ASGI layers that answer before or beside FastAPI's
routing (the admission limit, the ``/predict`` fast path)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from service.errors import ServiceError
from service.logs import request_id_var
from service.schemas import ErrorDetail, ErrorResponse

logger = logging.getLogger("service.app")


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
