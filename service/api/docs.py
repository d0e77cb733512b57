"""Pieces of the OpenAPI document that FastAPI cannot infer: the error responses every route
may give, and request bodies the routes read themselves (raw image bytes, multipart). The
image types come from the one list, :mod:`service.imaging.formats`."""

from __future__ import annotations

from typing import Any

from service.api.schemas import ErrorResponse
from service.imaging.formats import CANONICAL_MEDIA_TYPES

#: status -> (when it is returned, an example code, an example message)
_ERROR_CODES: dict[int, tuple[str, str, str]] = {
    400: (
        "The body is empty, not an image, truncated or corrupt, or holds no digit.",
        "not_an_image",
        "the body is not an image this service can read",
    ),
    401: (
        "An API key is required and was missing or wrong.",
        "unauthorized",
        "an API key is required: 'Authorization: Bearer <key>' or 'X-API-Key'",
    ),
    403: (
        "Model administration is off: API keys are set but no admin key is.",
        "admin_disabled",
        "model administration is off: API keys are set but no admin key is",
    ),
    404: ("No such model or version.", "not_found", "no model lenet7; serving: default/1"),
    413: (
        "The body is over the size limit, or the image has too many pixels.",
        "image_too_large",
        "image of 30000x30000 pixels is over the limit of 40000000 pixels",
    ),
    415: (
        "The content type is not one the route accepts.",
        "unsupported_media_type",
        "content type 'text/html' is not accepted; send the image bytes as image/png, ...",
    ),
    422: (
        "A query parameter is invalid.",
        "invalid_parameter",
        "query.version: String should match pattern '^[1-9][0-9]{0,8}$'",
    ),
    500: (
        "The model failed on this batch (not caused by the request).",
        "inference_failed",
        "model 'default/1' failed on a batch of 12",
    ),
    503: (
        "Overloaded (queue full), shutting down, or the model is not ready. See Retry-After.",
        "overloaded",
        "model 'default/1' is overloaded (1024 requests queued); retry later",
    ),
    504: (
        "The request waited past its deadline in the queue and was not run.",
        "deadline_exceeded",
        "request to 'default/1' waited past its deadline and was not run",
    ),
}


def _error_response(status: int, text: str, code: str, message: str) -> dict[str, Any]:
    example = {"error": {"status": status, "code": code, "message": message, "request_id": "7f3c"}}
    return {
        "model": ErrorResponse,
        "description": text,
        "content": {"application/json": {"example": example}},
    }


_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: _error_response(status, *entry) for status, entry in _ERROR_CODES.items()
}

#: ``responses=`` for routes that take images: every error in the one documented shape.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: response for status, response in _RESPONSES.items() if status != 403
}

#: ``responses=`` for the read-only routes.
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    status: ERRORS[status] for status in (401, 404, 422, 503)
}

#: ``responses=`` for administration (``POST /models/reload``).
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _RESPONSES[status] for status in (401, 403, 503)
}

_BINARY = {"type": "string", "format": "binary"}

IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image: raw bytes, multipart field `file`, or base64 in JSON.",
        "content": {
            **{
                kind: {"schema": _BINARY}
                for kind in (*CANONICAL_MEDIA_TYPES, "application/octet-stream")
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
