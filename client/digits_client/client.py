"""A small synchronous Python client for the digits HTTP API.

    from digits_client import DigitsClient

    with DigitsClient("http://127.0.0.1:8000") as digits:
        answer = digits.predict(Path("seven.png"))
        print(answer.digit, answer.confidence, answer.uncertain)

Answers are read into :mod:`digits_client.answers` (lenient: fields a newer service adds do not
break them); every failure, whether the service answered with an error or could not be
reached, is a :class:`DigitsError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from digits_client.answers import (
    BatchPredictionResponse,
    EnsemblePrediction,
    Health,
    ModelsResponse,
    Prediction,
    Readiness,
    Reading,
    ReloadResponse,
)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 30.0
#: ``model=all``: every served model answers (:meth:`DigitsClient.predict_all`).
ALL_MODELS = "all"
#: Errors that concern one file (its image, or its moment in the queue): a run over many files
#: goes on to the next. Any other (a wrong key, an unknown model, no service at all) would
#: fail every file alike, so it stops the run.
PER_FILE_STATUSES = frozenset({400, 413, 415, 500, 503, 504})

#: An image as bytes, or the path of an image file.
ImageSource = bytes | str | os.PathLike[str]

_Answer = TypeVar("_Answer", bound=BaseModel)


class DigitsError(Exception):
    """The service answered with an error, or gave no usable answer.

    ``status`` is the HTTP status, or ``None`` when no answer came (``code`` is then
    ``unreachable`` or ``timeout``); ``code`` and ``message`` are the service's own when it
    sent its error shape.
    """

    def __init__(
        self, status: int | None, code: str, message: str, request_id: str | None = None
    ) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id

    @classmethod
    def from_response(cls, response: httpx.Response) -> DigitsError:
        """Read the service's ``{"error": {...}}``, or describe whatever else came back."""
        try:
            error = response.json()["error"]
            return cls(
                int(error["status"]),
                str(error["code"]),
                str(error["message"]),
                error.get("request_id"),
            )
        except (ValueError, KeyError, TypeError):
            snippet = response.text[:200].strip() or response.reason_phrase
            return cls(response.status_code, "http_error", snippet)


class DigitsClient:
    """Talks to one digits service; use it as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"User-Agent": "digits-client"}
        if api_key:
            headers["X-API-Key"] = api_key
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- predictions ------------------------------------------------------------------------

    def predict(
        self,
        image: ImageSource,
        *,
        model: str | None = None,
        version: str | None = None,
        explain: bool = False,
    ) -> Prediction:
        """One model's answer (default: the service's default model, newest version)."""
        params = _params(model=model, version=version, explain=explain)
        response = self._send("POST", "/predict", params=params, **_raw_body(image))
        return _parse(Prediction, response)

    def predict_all(self, image: ImageSource, *, explain: bool = False) -> EnsemblePrediction:
        """Every served model's answer, and whether they agree."""
        params = _params(model=ALL_MODELS, explain=explain)
        response = self._send("POST", "/predict", params=params, **_raw_body(image))
        return _parse(EnsemblePrediction, response)

    def predict_batch(
        self,
        images: Sequence[str | os.PathLike[str] | tuple[str, bytes]],
        *,
        model: str | None = None,
        version: str | None = None,
        explain: bool = False,
    ) -> BatchPredictionResponse:
        """Several images in one call: paths, or ``(filename, bytes)`` pairs. Each file gets
        its own prediction or its own error, in the order sent."""
        files = [("files", _named(item)) for item in images]
        params = _params(model=model, version=version, explain=explain)
        response = self._send("POST", "/predict/batch", params=params, files=files)
        return _parse(BatchPredictionResponse, response)

    def read(
        self,
        image: ImageSource,
        *,
        model: str | None = None,
        version: str | None = None,
        length: int | None = None,
        explain: bool = False,
    ) -> Reading:
        """A whole number written in one picture (a ZIP code, an amount), digit by digit, left
        to right. ``length``: how many digits it has, when known; the service then answers its
        best reading with exactly that many. ``explain=True`` adds each digit's 28x28 image."""
        params = _params(model=model, version=version, length=length, explain=explain)
        response = self._send("POST", "/read", params=params, **_raw_body(image))
        return _parse(Reading, response)

    # ---- models and health ------------------------------------------------------------------

    def models(self) -> ModelsResponse:
        """Every model package the service found, served or failed."""
        return _parse(ModelsResponse, self._send("GET", "/models"))

    def model(self, name: str) -> ModelsResponse:
        """Every version of one model."""
        return _parse(ModelsResponse, self._send("GET", f"/models/{name}"))

    def reload(self) -> ReloadResponse:
        """Ask the service to load new or changed packages."""
        return _parse(ReloadResponse, self._send("POST", "/models/reload"))

    def health(self) -> Health:
        """Whether the process answers at all (``/healthz``)."""
        return _parse(Health, self._send("GET", "/healthz"))

    def ready(self) -> Readiness:
        """Whether the service is ready, and each model's state (``/readyz``). Not being ready
        is an answer here, not an error."""
        return _parse(Readiness, self._send("GET", "/readyz", ok=(200, 503)))

    # ---- transport --------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **request: Any
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, **request)
        except httpx.TimeoutException as exc:
            raise DigitsError(
                None, "timeout", f"no answer from {self.url} in time ({exc})"
            ) from exc
        except httpx.TransportError as exc:
            raise DigitsError(None, "unreachable", f"cannot reach {self.url}: {exc}") from exc
        if response.status_code not in ok:
            raise DigitsError.from_response(response)
        return response


def _params(**values: str | int | bool | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in values.items():
        if value is True:
            params[name] = "true"
        elif isinstance(value, str):
            params[name] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            params[name] = str(value)
    return params


def _read(image: ImageSource) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def _raw_body(image: ImageSource) -> dict[str, Any]:
    # The service sniffs the format from the bytes; no need to guess it from a file name.
    return {"content": _read(image), "headers": {"Content-Type": "application/octet-stream"}}


def _named(item: str | os.PathLike[str] | tuple[str, bytes]) -> tuple[str, bytes, str]:
    if isinstance(item, tuple):
        name, data = item
    else:
        name, data = Path(item).name, Path(item).read_bytes()
    return name, data, "application/octet-stream"


def _parse(shape: type[_Answer], response: httpx.Response) -> _Answer:
    try:
        return shape.model_validate(response.json())
    # Not JSON, not UTF-8, or not the shape asked for: all ValueErrors.
    except (ValueError, ValidationError) as exc:
        raise DigitsError(
            response.status_code,
            "unexpected_response",
            f"{response.request.url} did not answer like a digits service: {exc}",
        ) from exc
