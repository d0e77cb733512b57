"""Pieces of the OpenAPI document that FastAPI cannot infer: the error responses every route
may give, and request bodies the routes read themselves (raw image bytes, multipart)."""

from __future__ import annotations

from typing import Any

from service.schemas import ErrorResponse

_ERROR_CODES: dict[int, str] = {
    400: "The body is empty, not an image, truncated or corrupt, or holds no digit.",
    401: "An API key is required and was missing or wrong.",
    404: "No such model or version.",
    413: "The body is over the size limit, or the image has too many pixels.",
    415: "The content type is not one the route accepts.",
    422: "A query parameter is invalid.",
    500: "The model failed on this batch (not caused by the request).",
    503: "Overloaded (queue full), shutting down, or the model is not ready. See Retry-After.",
    504: "The request waited past its deadline in the queue and was not run.",
}

#: ``responses=`` for routes that take images: every error in the one documented shape.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in _ERROR_CODES.items()
}

#: ``responses=`` for the read-only routes.
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    status: ERRORS[status] for status in (401, 404, 422, 503)
}

_BINARY = {"type": "string", "format": "binary"}

IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image: raw bytes, multipart field `file`, or base64 in JSON.",
        "content": {
            **{
                kind: {"schema": _BINARY}
                for kind in (
                    "image/png",
                    "image/jpeg",
                    "image/webp",
                    "image/bmp",
                    "image/tiff",
                    "image/gif",
                    "application/octet-stream",
                )
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": _BINARY},
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {"$ref": "#/components/schemas/ImageJSON"},
            },
        },
    }
}

MULTIPART_FILES_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": _BINARY}},
                    "required": ["files"],
                }
            }
        },
    }
}
