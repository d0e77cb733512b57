"""Request and response bodies of the HTTP API; their docstrings and field descriptions are the
API reference that OpenAPI (and /docs) shows."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.packages.card import Calibration, Metrics, TensorSpec


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Body):
    status: int = Field(description="The HTTP status, repeated for clients that lose it.")
    code: str = Field(
        description="Stable machine-readable reason. 400: empty_body, empty_image, "
        "not_an_image, corrupt_image, no_digit, too_many_digits, bad_json, bad_base64, "
        "bad_multipart, no_file; "
        "401: unauthorized; 403: admin_disabled; 404: not_found; 405: method_not_allowed; "
        "413: payload_too_large, image_too_large; 415: unsupported_media_type; "
        "422: invalid_parameter; 500: inference_failed, internal_error; 503: overloaded, "
        "shutting_down, model_failed, not_running, no_models; 504: deadline_exceeded.",
        examples=["not_an_image"],
    )
    message: str = Field(description="What went wrong, for people.")
    request_id: str | None = Field(default=None, description="Echo of X-Request-ID.")
    fields: list[str] | None = Field(
        default=None, description="For invalid_parameter: the offending parameters."
    )


class ErrorResponse(_Body):
    """The one shape of every error the service returns."""

    error: ErrorDetail


class ModelRef(_Body):
    name: str = Field(examples=["default"])
    version: str = Field(examples=["1"])


class Timing(_Body):
    queue: float = Field(description="Milliseconds waiting for a batch to start.")
    inference: float = Field(description="Milliseconds of the batch's forward pass.")
    total: float = Field(description="Milliseconds from request received to answer ready.")


class Prediction(_Body):
    """One image's answer."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "digit": 7,
                    "confidence": 0.9974,
                    "probabilities": [
                        0.0002,
                        0.0001,
                        0.0004,
                        0.0003,
                        0.0,
                        0.0,
                        0.0,
                        0.9974,
                        0.0014,
                        0.0003,
                    ],
                    "uncertain": False,
                    "model": {"name": "default", "version": "1"},
                    "timing_ms": {"queue": 0.073, "inference": 1.233, "total": 2.256},
                    "batch_size": 1,
                }
            ]
        },
    )

    digit: int = Field(ge=0, le=9, description="The most probable digit.")
    confidence: float = Field(
        ge=0.0,
        le=1.0,
        description="Calibrated probability of `digit`; equals probabilities[digit].",
    )
    probabilities: list[float] = Field(
        min_length=10, max_length=10, description="Calibrated probability of each digit 0-9."
    )
    uncertain: bool = Field(
        description="True when confidence is below the service's threshold: route to a person."
    )
    model: ModelRef
    timing_ms: Timing
    batch_size: int = Field(ge=1, description="How many images shared the forward pass.")
    digits_seen: int = Field(
        default=1,
        ge=1,
        description="Digit-sized groups of ink in the picture. This route answers one digit "
        "(the largest); over 1 means the picture holds several: POST /read reads them all.",
    )
    image: str | None = Field(
        default=None,
        description="With ?explain=true: the 28x28 image the model saw, as base64 PNG.",
    )


class Box(_Body):
    """Where a digit lies, in pixels of the image as sent (after its EXIF orientation)."""

    x: int = Field(ge=0, description="Left edge.")
    y: int = Field(ge=0, description="Top edge.")
    width: int = Field(ge=1)
    height: int = Field(ge=1)


class ReadDigit(_Body):
    """One digit of a reading."""

    digit: int = Field(ge=0, le=9)
    confidence: float = Field(ge=0.0, le=1.0, description="Calibrated probability of `digit`.")
    probabilities: list[float] = Field(min_length=10, max_length=10)
    box: Box
    image: str | None = Field(
        default=None,
        description="With ?explain=true: the 28x28 image the model saw, as base64 PNG.",
    )


class Reading(_Body):
    """A whole number read from one picture (``POST /read``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "number": "02134",
                    "confidence": 0.97,
                    "uncertain": False,
                    "digits": [
                        {
                            "digit": 0,
                            "confidence": 0.998,
                            "probabilities": [0.998, *([0.0002] * 9)],
                            "box": {"x": 12, "y": 30, "width": 41, "height": 66},
                        }
                    ],
                    "model": {"name": "default", "version": "1"},
                    "timing_ms": {"queue": 0.1, "inference": 1.9, "total": 6.2},
                    "batch_size": 7,
                    "candidates": 7,
                }
            ]
        },
    )

    number: str = Field(
        pattern="^[0-9]+$",
        description="The digits left to right, as a string (leading zeros kept).",
        examples=["02134"],
    )
    confidence: float = Field(
        ge=0.0,
        le=1.0,
        description="How far to trust the whole reading: the lower of its weakest digit's "
        "confidence and the confidence of its most doubtful segmentation choice (the chosen "
        "split of the ink into digits against the best different split, scored by the model).",
    )
    uncertain: bool = Field(
        description="True when confidence is below the service's threshold: route to a person."
    )
    digits: list[ReadDigit] = Field(description="One entry per digit, left to right.")
    model: ModelRef
    timing_ms: Timing
    batch_size: int = Field(
        ge=1, description="How many images shared the forward pass (this reading's and others')."
    )
    candidates: int = Field(
        ge=1,
        description="How many candidate digit images this reading sent to the model (digits "
        "and the alternative splits weighed against them), all in one forward pass.",
    )


class EnsemblePrediction(_Body):
    """Every model's answer to one image (``?model=all``)."""

    digit: int = Field(
        ge=0, le=9, description="The digit most models chose (ties: most confident)."
    )
    agree: bool = Field(description="True when every model chose the same digit.")
    predictions: list[Prediction]


class ImageJSON(_Body):
    """An image sent as JSON, as browsers and many clients do."""

    image: str = Field(
        description="The image file's bytes, base64 (a data: URL prefix is accepted).",
        examples=["iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAA..."],
    )


class BatchItem(_Body):
    """One file of a batch: its prediction, or its own error."""

    filename: str | None
    prediction: Prediction | None = None
    error: ErrorDetail | None = None


class BatchPredictionResponse(_Body):
    results: list[BatchItem] = Field(description="One entry per file, in the order sent.")


class BatchingInfo(_Body):
    max_batch_size: int
    max_wait_ms: float
    queue_size: int


class QueueInfo(_Body):
    depth: int = Field(description="Requests waiting now.")
    capacity: int = Field(description="Requests that may wait before the service answers 503.")


class ModelInfo(_Body):
    """A model package as the service sees it."""

    name: str
    version: str
    status: Literal["ready", "not_running", "failed"] = Field(
        description="not_running: its batching worker is down (being restarted); failed: the "
        "package could not be loaded, failed its self-test, or its worker kept failing."
    )
    error: str | None = Field(
        default=None,
        description="Why it failed, when it did; for a ready version, why its changed files on "
        "disk were not loaded (it keeps serving).",
    )
    default: bool = Field(description="Whether requests naming no model get this one.")
    newest: bool = Field(description="Whether requests naming no version get this one.")
    architecture: str | None = None
    description: str | None = None
    parameters: int | None = None
    input: TensorSpec | None = None
    labels: list[str] | None = None
    metrics: Metrics | None = None
    calibration: Calibration | None = None
    created_at: datetime | None = None
    sha256: str | None = None
    device: str | None = Field(default=None, description="Where it runs, e.g. cpu or cuda:0.")
    batching: BatchingInfo | None = None
    queue: QueueInfo | None = None


class ModelsResponse(_Body):
    default_model: str
    models: list[ModelInfo]


class ReloadResponse(_Body):
    loaded: list[ModelRef] = Field(description="Packages newly loaded or replaced.")
    unchanged: list[ModelRef]
    removed: list[ModelRef]
    failed: list[ModelInfo] = Field(description="Packages that failed; older ones keep serving.")


class Health(_Body):
    status: Literal["ok"] = "ok"


class Readiness(_Body):
    ready: bool
    models: dict[str, Literal["ready", "not_running", "failed"]] = Field(
        description='"<name>/<version>" -> status.'
    )
    reason: str | None = None
