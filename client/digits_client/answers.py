"""The service's answers as the client reads them.

Lenient on purpose: the server may add fields in any release, so an unknown field is kept
(in ``model_extra``) rather than refused, and only what the client and the ``digits``
command use is typed. The server's OpenAPI document (``openapi.json``) is the full
reference; a test checks that every field here is in it.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ModelRef(Answer):
    name: str
    version: str


class Timing(Answer):
    queue: float
    inference: float
    total: float


class Prediction(Answer):
    digit: int
    confidence: float
    probabilities: list[float]
    uncertain: bool
    model: ModelRef
    timing_ms: Timing
    batch_size: int
    #: Digit-sized groups of ink the service saw; over 1: the picture holds several digits,
    #: and :meth:`~digits_client.DigitsClient.read` reads them all.
    digits_seen: int = 1
    image: str | None = None


class Box(Answer):
    """Where a digit lies, in pixels of the image as sent (after its EXIF orientation)."""

    x: int
    y: int
    width: int
    height: int


class ReadDigit(Answer):
    digit: int
    confidence: float
    probabilities: list[float]
    box: Box
    image: str | None = None


class Reading(Answer):
    """A whole number read from one picture: its digits left to right, leading zeros kept."""

    number: str
    confidence: float
    uncertain: bool
    digits: list[ReadDigit]
    model: ModelRef
    timing_ms: Timing
    batch_size: int
    candidates: int | None = None


class EnsemblePrediction(Answer):
    digit: int
    agree: bool
    predictions: list[Prediction]


class ErrorDetail(Answer):
    status: int
    code: str
    message: str
    request_id: str | None = None


class BatchItem(Answer):
    filename: str | None
    prediction: Prediction | None = None
    error: ErrorDetail | None = None


class BatchPredictionResponse(Answer):
    results: list[BatchItem]


class ModelMetrics(Answer):
    test_accuracy: float


class ModelInfo(Answer):
    name: str
    version: str
    status: str
    error: str | None = None
    default: bool
    newest: bool
    architecture: str | None = None
    parameters: int | None = None
    metrics: ModelMetrics | None = None
    created_at: datetime | None = None
    device: str | None = None


class ModelsResponse(Answer):
    default_model: str
    models: list[ModelInfo]


class ReloadResponse(Answer):
    loaded: list[ModelRef]
    unchanged: list[ModelRef]
    removed: list[ModelRef]
    failed: list[ModelInfo]


class Health(Answer):
    status: str = "ok"


class Readiness(Answer):
    ready: bool
    models: dict[str, str]
    reason: str | None = None
