"""Errors are part of the API: one exception type per HTTP status, one JSON shape at the edge.

Code anywhere in the service raises one of these; the edge (``service.http.responses``)
turns it into::

    {"error": {"status": 413, "code": "image_too_large", "message": "...", "request_id": "..."}}

``code`` is stable and machine-readable; ``message`` is for people and may change.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service reports to a client."""

    status: int = 500
    code: str = "internal_error"
    #: The service's own failure, logged as a warning beside the access-log line. Client
    #: errors are not, nor is load shedding (503, 504): under overload that comes thousands
    #: of times a second, and the access log and metrics already count it.
    fault: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. ``Retry-After``)."""
        return {}


class BadImage(ServiceError):
    """The body is empty, not an image, truncated or otherwise undecodable."""

    status = 400
    code = "bad_image"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    """The key is valid, or not needed, but this action is not allowed with it."""

    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    """Unknown model, version or route."""

    status = 404
    code = "not_found"


class PayloadTooLarge(ServiceError):
    """Body over the byte limit, or an image whose header declares too many pixels."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class InvalidParameter(ServiceError):
    """A query parameter or JSON field that does not validate."""

    status = 422
    code = "invalid_parameter"


class InferenceFailed(ServiceError):
    """The model raised while running a batch: the service's fault, not the client's."""

    status = 500
    code = "inference_failed"
    fault = True


class Unavailable(ServiceError):
    """Overloaded (queue full), shutting down, or not ready; the client may retry later."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: int = 1) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ClientGone(ServiceError):
    """The client disconnected before its answer was ready; nothing can be sent back (499 is
    the conventional status for logs and metrics)."""

    status = 499
    code = "client_closed_request"


class DeadlineExceeded(ServiceError):
    """The request waited in the queue past its deadline and was dropped before inference."""

    status = 504
    code = "deadline_exceeded"
