"""``/v2``: the Open Inference Protocol's REST API (KServe v2, as Triton, KServe, Seldon
MLServer and OpenVINO Model Server speak it), beside the service's own routes, so that
``tritonclient`` and KServe's clients work unchanged.

An infer request carries one input: MNIST-style pixels (``FP32 [N,1,28,28]`` or ``[N,28,28]``
in [0, 1], white ink on black, as the model card says; ``UINT8 [N,28,28]``), or ``BYTES [N]``
of encoded images (what ``POST /predict`` takes), which go through the same imaging stage.
Its N images go to the model's batch queue as one item, sharing forward passes with
``/predict`` and ``/read``; the limits (body, pixels, admission), API key, deadlines, metrics
and access log are those of ``/predict``. The tensors on the wire, JSON and binary, are
:mod:`service.api.inference_tensors`.

Errors of these routes are the protocol's ``{"error": "<message>"}``, not the service's
``{"error": {...}}``: :class:`ProtocolRoute` answers every :class:`ServiceError` a route or
its dependencies raise (400 for a malformed request, 404 for an unknown model or version,
401, 413, 415, 503, 504 as elsewhere). Two answers come before the routes and keep the
service's shape: the admission's 503 (overloaded, refused before the body is read) and
404/405 for paths and methods that match no route.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.answers import arrived_at, record_model, unless_client_leaves
from service.api.dependencies import Accepting, ApiKey, RuntimeDep
from service.api.health import not_ready_because
from service.api.inference_tensors import (
    OUTPUTS,
    InferRequest,
    check_encoding,
    encode_response,
    parse_request,
)
from service.api.intake import read_body
from service.errors import ServiceError, Unavailable
from service.inference import pipeline
from service.inference.registry import ServedModel
from service.inference.runtime import Runtime
from service.observability.logs import request_record

logger = logging.getLogger("service.app")

SERVER_NAME = "digits"
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "pytorch_torchscript"
HEADER_LENGTH = "Inference-Header-Content-Length"
#: Bodies larger than this are parsed in the decode pool, not on the event loop (JSON of
#: pixels is ~10 bytes a value: 64 KiB is a few images).
PARSE_ON_LOOP_BYTES = 64 * 1024


def _server_version() -> str:
    try:
        return importlib.metadata.version("digits")
    except importlib.metadata.PackageNotFoundError:
        return "0"


# ---- errors in the protocol's shape ---------------------------------------------------------


def protocol_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """``{"error": "<message>"}``, the protocol's error shape."""
    return JSONResponse({"error": message}, status, headers=headers)


class ProtocolRoute(APIRoute):
    """A route whose errors, its dependencies' included, are ``{"error": "<message>"}``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                if exc.fault:
                    logger.warning("request failed: %s", exc.message, extra={"code": exc.code})
                return protocol_error(exc.status, exc.message, exc.headers())
            except RequestValidationError as exc:
                return protocol_error(400, "; ".join(str(p.get("msg")) for p in exc.errors()))
            except StarletteHTTPException as exc:
                return protocol_error(exc.status_code, str(exc.detail), exc.headers)

        return route


# ---- bodies, for the OpenAPI document -------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class ProtocolErrorBody(BaseModel):
    """An error of the ``/v2`` routes, in the protocol's shape."""

    error: str = Field(examples=["no model lenet7; serving: lenet5/1, mlp/1"])


class ServerMetadata(BaseModel):
    name: str = Field(examples=[SERVER_NAME])
    version: str = Field(examples=["0.1.0"])
    extensions: list[str] = Field(examples=[EXTENSIONS])


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    version: str | None = None
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(examples=["FP32"])
    shape: list[int] = Field(description="-1 is the batch axis.", examples=[[-1, 1, 28, 28]])


class ModelMetadata(BaseModel):
    name: str = Field(examples=["lenet5"])
    versions: list[str] = Field(examples=[["1"]])
    platform: str = Field(examples=[PLATFORM])
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


Datatype = Literal["FP32", "UINT8", "BYTES"]


class InputParameters(_Body):
    binary_data_size: int | None = Field(
        default=None,
        description="The tensor's bytes in the binary section (binary tensor data extension).",
    )


class InferInput(BaseModel):
    """The one input: pixels, or encoded images (JSON `data` of BYTES: base64 strings)."""

    name: str = Field(examples=["input"])
    datatype: Datatype
    shape: list[int] = Field(examples=[[1, 1, 28, 28]])
    data: list[Any] | None = Field(
        default=None, description="Row-major values, flat or nested; absent when binary."
    )
    parameters: InputParameters | None = None


class OutputParameters(_Body):
    binary_data: bool | None = Field(
        default=None, description="Return this output in the binary section."
    )


class InferRequestedOutput(BaseModel):
    name: Literal["probabilities", "digit", "confidence"]
    parameters: OutputParameters | None = None


class RequestParameters(_Body):
    binary_data_output: bool | None = Field(
        default=None, description="Return every output in the binary section by default."
    )


class InferenceRequest(BaseModel):
    """An infer request's JSON (or, with `Inference-Header-Content-Length`, its first part)."""

    id: str | None = None
    parameters: RequestParameters | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=1)
    outputs: list[InferRequestedOutput] | None = Field(
        default=None, description="Default: probabilities, digit and confidence."
    )


class InferOutput(BaseModel):
    name: str = Field(examples=["digit"])
    datatype: str = Field(examples=["INT64"])
    shape: list[int] = Field(examples=[[1]])
    data: list[float] | None = None
    parameters: dict[str, int] | None = Field(
        default=None, description="`binary_data_size` of a binary output."
    )


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[InferOutput]


#: Schemas the infer route's request body refers to; :func:`service.http.openapi` adds them.
OPENAPI_COMPONENTS: list[type[BaseModel]] = [InferenceRequest]


def openapi_components(ref_template: str) -> dict[str, Any]:
    """The JSON schemas of :data:`OPENAPI_COMPONENTS` and everything they refer to."""
    _, schema = models_json_schema(
        [(m, "validation") for m in OPENAPI_COMPONENTS], ref_template=ref_template
    )
    components: dict[str, Any] = schema.get("$defs", {})
    return components


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ProtocolErrorBody, "description": text}
    for status, text in {
        400: "Malformed request: JSON, shape, datatype, binary section; or an undecodable image.",
        401: "An API key is required and was missing or wrong.",
        404: "No such model or version.",
        413: "The body is over the size limit, or an image has too many pixels.",
        415: "A compressed body (Content-Encoding) is not accepted.",
        503: "Overloaded, shutting down, or the model failed. See Retry-After.",
        504: "The request waited past its deadline in the queue and was not run.",
    }.items()
}
_READ_ERRORS: dict[int | str, dict[str, Any]] = {
    s: r for s, r in _ERRORS.items() if s in (401, 404, 503)
}

_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": (
                    "Binary tensor data extension: the InferenceRequest JSON, of "
                    "`Inference-Header-Content-Length` bytes, then each input's raw bytes "
                    "(`parameters.binary_data_size`; little-endian; BYTES elements as a "
                    "4-byte little-endian length and the bytes). Any or no Content-Type: the "
                    "body is read as bytes."
                ),
            },
        },
    },
    "parameters": [
        {
            "name": HEADER_LENGTH,
            "in": "header",
            "required": False,
            "schema": {"type": "integer", "minimum": 0},
            "description": "Length of the JSON part when binary tensor data follows it.",
        }
    ],
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "The outputs asked for. With binary outputs (`binary_data_output`, or an output's "
            "`binary_data`), the body is `application/octet-stream`: the JSON, of "
            "`Inference-Header-Content-Length` bytes, then each binary output's bytes."
        ),
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            HEADER_LENGTH: {
                "schema": {"type": "integer"},
                "description": "Length of the JSON part, when binary outputs follow it.",
            }
        },
    },
    **_ERRORS,
}


# ---- routes ---------------------------------------------------------------------------------

router = APIRouter(prefix="/v2", tags=["inference protocol"], route_class=ProtocolRoute)


@router.get("", summary="Server metadata (Open Inference Protocol)")
async def server_metadata() -> ServerMetadata:
    """The server's name, version and the protocol extensions it speaks
    (`binary_tensor_data`)."""
    return ServerMetadata(name=SERVER_NAME, version=_server_version(), extensions=EXTENSIONS)


@router.get("/health/live", summary="Server live (Open Inference Protocol)")
async def server_live() -> Live:
    """200 while the process answers at all, as `/healthz`."""
    return Live(live=True)


@router.get(
    "/health/ready",
    summary="Server ready (Open Inference Protocol)",
    responses={503: {"model": Ready, "description": "Not ready (as /readyz)."}},
)
async def server_ready(runtime: RuntimeDep) -> Response:
    """200 when the service is ready, 503 when not, exactly as `/readyz`."""
    ready = not_ready_because(runtime) is None
    return JSONResponse({"ready": ready}, 200 if ready else 503)


@router.get(
    "/models/{model}",
    summary="Model metadata (Open Inference Protocol)",
    responses=_READ_ERRORS,
    dependencies=[ApiKey],
)
async def model_metadata(model: str, runtime: RuntimeDep) -> ModelMetadata:
    """The model's served versions, platform, and its inputs and outputs with datatype and
    shape (-1: the batch axis). The inputs listed are the ways to send images; an infer
    request carries exactly one of them (its name is not checked, its datatype decides)."""
    return _metadata(runtime, runtime.registry.get(model, None), all_versions=True)


@router.get(
    "/models/{model}/versions/{version}",
    summary="Model version metadata (Open Inference Protocol)",
    responses=_READ_ERRORS,
    dependencies=[ApiKey],
)
async def model_version_metadata(model: str, version: str, runtime: RuntimeDep) -> ModelMetadata:
    """As `GET /v2/models/{model}`, for one version."""
    return _metadata(runtime, runtime.registry.get(model, version), all_versions=False)


@router.get(
    "/models/{model}/ready",
    summary="Model ready (Open Inference Protocol)",
    responses=_READ_ERRORS,
    dependencies=[ApiKey],
)
async def model_ready(model: str, runtime: RuntimeDep) -> ModelReady:
    """200 when the model's newest version serves; 404 unknown, 503 not running or failed."""
    return _ready(runtime.registry.get(model, None))


@router.get(
    "/models/{model}/versions/{version}/ready",
    summary="Model version ready (Open Inference Protocol)",
    responses=_READ_ERRORS,
    dependencies=[ApiKey],
)
async def model_version_ready(model: str, version: str, runtime: RuntimeDep) -> ModelReady:
    """As `GET /v2/models/{model}/ready`, for one version."""
    return _ready(runtime.registry.get(model, version))


_INFER_DOC = """Classify the N images of one request, in one batch (shared with `/predict`).

The one input is `FP32 [N,1,28,28]` (or `[N,28,28]`) pixels in [0, 1], white ink on
black, centred as MNIST's; `UINT8 [N,28,28]` (0-255); or `BYTES [N]` of encoded images
(PNG, JPEG, ... as `POST /predict` takes; in JSON `data`, base64 strings), which are
cleaned up and centred as `/predict` does. Outputs: `probabilities FP32 [N,10]`,
`digit INT64 [N]`, `confidence FP32 [N]`; `outputs` picks some. Plain JSON, or the binary
tensor data extension in the request and the response."""


@router.post(
    "/models/{model}/infer",
    summary="Infer (Open Inference Protocol)",
    response_model=InferenceResponse,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_BODY,
    dependencies=[ApiKey, Accepting],
    description=_INFER_DOC,
)
async def model_infer(model: str, request: Request, runtime: RuntimeDep) -> Response:
    return await infer(request, runtime, model, None)


@router.post(
    "/models/{model}/versions/{version}/infer",
    summary="Infer with one version (Open Inference Protocol)",
    response_model=InferenceResponse,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_BODY,
    dependencies=[ApiKey, Accepting],
    description=_INFER_DOC,
)
async def model_version_infer(
    model: str, version: str, request: Request, runtime: RuntimeDep
) -> Response:
    return await infer(request, runtime, model, version)


#: The routes that do the work, for the admission limit.
INFER_ROUTES = [r for r in router.routes if isinstance(r, APIRoute) and r.path.endswith("/infer")]


# ---- what they do ---------------------------------------------------------------------------


async def infer(request: Request, runtime: Runtime, model: str, version: str | None) -> Response:
    """Body -> tensors (or images -> imaging) -> the model's batch queue -> outputs."""
    settings = runtime.settings
    deadline = pipeline.deadline_for(runtime, arrived_at(request))
    with runtime.registry.lease(model, version) as served:
        record_model(request, served)
        check_encoding(request.headers.get("content-encoding"))
        body = await read_body(request, settings.max_body_bytes)
        parse = partial(
            parse_request,
            body,
            request.headers.get(HEADER_LENGTH),
            max_images=settings.max_batch_files,
        )
        if len(body) > PARSE_ON_LOOP_BYTES:
            parsed = await asyncio.get_running_loop().run_in_executor(runtime.decode_pool, parse)
        else:
            parsed = parse()
        pixels = await _pixels(runtime, parsed)
        size = int(pixels.shape[0])
        work = (
            served.batcher.enqueue(pixels[0], deadline=deadline)
            if size == 1
            else served.batcher.enqueue_rows(pixels, deadline=deadline)
        )
        result = await unless_client_leaves(request, work)
        record = request_record(request.scope)
        record["batch_size"] = result.batch_size
        record["images"] = size
        content, header_length = encode_response(
            served.card.name, served.card.version, parsed, result.output.reshape(size, -1)
        )
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(header_length)},
    )


async def _pixels(runtime: Runtime, parsed: InferRequest) -> np.ndarray:
    """The request's ``(N, 28, 28)`` float32 MNIST-style images."""
    if parsed.pixels is not None:
        return np.ascontiguousarray(parsed.pixels, dtype=np.float32)
    found = await asyncio.gather(*(pipeline.decode(runtime, data) for data in parsed.images))
    return np.stack([f.image for f in found]).astype(np.float32, copy=False)


def _metadata(runtime: Runtime, served: ServedModel, *, all_versions: bool) -> ModelMetadata:
    card = served.card
    if all_versions:
        versions = [m.card.version for m in runtime.registry.served() if m.card.name == card.name]
    else:
        versions = [card.version]
    pixel_shape = [-1 if d is None else d for d in card.input.shape]
    return ModelMetadata(
        name=card.name,
        versions=versions,
        platform=PLATFORM,
        inputs=[
            TensorMetadata(name="input", datatype="FP32", shape=pixel_shape),
            TensorMetadata(name="image", datatype="BYTES", shape=[-1]),
        ],
        outputs=[
            TensorMetadata(name=name, datatype=datatype, shape=[-1, *shape])
            for name, (datatype, shape) in OUTPUTS.items()
        ],
    )


def _ready(served: ServedModel) -> ModelReady:
    if not served.batcher.is_running:
        raise Unavailable(f"model {served.label} is not running", code="not_running")
    return ModelReady(name=served.card.name, version=served.card.version, ready=True)
