"""FastAPI dependencies, as ``Annotated`` aliases the routes declare, and the checks behind
them. The ``/predict`` fast path (``service.http.fast_path``) runs the same checks through
:func:`authorize` and :func:`check_accepting`."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from service.errors import Forbidden, Unauthorized, Unavailable
from service.inference.runtime import Runtime

# Dependencies are ``async def`` although they never await: FastAPI runs a plain ``def``
# dependency in a worker thread, a hand-off per dependency per request (measured: 972 -> 1,691
# req/s at 64 connections when these three became async).


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

# The one reading of a key: FastAPI's security schemes (which also document it in OpenAPI).
# auto_error=False: a missing key is reported in the service's own error shape (401), below.
_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token.")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key.")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
KeyHeader = Annotated[str | None, Depends(_header)]


async def require_api_key(runtime: RuntimeDep, bearer: Bearer, header: KeyHeader) -> None:
    """When API keys are configured, one of them must come with the request."""
    check_key(runtime.settings.api_keys, _offered(bearer, header))


async def require_admin_key(runtime: RuntimeDep, bearer: Bearer, header: KeyHeader) -> None:
    """Administration (``POST /models/reload``) takes an admin key, not a prediction key.
    With no keys configured at all (a local service) it is open, like everything else."""
    settings = runtime.settings
    if not settings.admin_keys and not settings.api_keys:
        return
    if not settings.admin_keys:
        raise Forbidden(
            "model administration is off: API keys are set but no admin key is "
            "(set DIGITS_ADMIN_KEYS to allow it)",
            code="admin_disabled",
        )
    check_key(settings.admin_keys, _offered(bearer, header), kind="an admin key")


async def require_accepting(runtime: RuntimeDep) -> None:
    """Refuse new work while shutting down."""
    check_accepting(runtime)


ApiKey = Depends(require_api_key)
AdminKey = Depends(require_admin_key)
Accepting = Depends(require_accepting)


async def authorize(request: Request, keys: Sequence[SecretStr]) -> None:
    """:func:`require_api_key` outside FastAPI's dependency injection (the fast path)."""
    if keys:  # headers are parsed only when a key is needed
        check_key(keys, _offered(await _bearer(request), await _header(request)))


def _offered(bearer: HTTPAuthorizationCredentials | None, header: str | None) -> str | None:
    # ``Authorization: Bearer <key>`` first, else ``X-API-Key``.
    return bearer.credentials if bearer is not None else header or None


def check_key(keys: Sequence[SecretStr], offered: str | None, *, kind: str = "an API key") -> None:
    """Raise 401 unless ``offered`` is one of ``keys`` (no keys configured: anything passes)."""
    if not keys:
        return
    if offered is None:
        raise Unauthorized(f"{kind} is required: 'Authorization: Bearer <key>' or 'X-API-Key'")
    candidate = offered.encode()
    # Compare with every key, in constant time each, so timing reveals neither key nor index.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.get_secret_value().encode())
    if not matched:
        raise Unauthorized(f"the {kind.removeprefix('an ')} is not valid")


def check_accepting(runtime: Runtime) -> None:
    """Raise 503 while the service is shutting down."""
    if runtime.shutting_down:
        raise Unavailable("the service is shutting down", code="shutting_down", retry_after_s=5)
