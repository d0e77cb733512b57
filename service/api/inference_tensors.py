"""The Open Inference Protocol's tensors on the wire (KServe v2 / Triton REST): an infer
request's body -> the images it carries, and the model's answers -> the response body.

A body is JSON, or, with the *binary tensor data* extension, JSON of
``Inference-Header-Content-Length`` bytes followed by the tensors' raw bytes, in input order,
each of its ``parameters.binary_data_size`` (little-endian; a ``BYTES`` element is a 4-byte
little-endian length and its bytes). Nothing here knows HTTP or the models: errors are
:class:`service.errors.ServiceError`, which the router turns into the protocol's shape.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from service.errors import BadImage, ServiceError, UnsupportedMediaType

IMAGE_SIZE = 28
CLASSES = 10

#: The response's outputs, in the order they are returned by default.
OUTPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    # name: (datatype, shape after the batch axis)
    "probabilities": ("FP32", (CLASSES,)),
    "digit": ("INT64", ()),
    "confidence": ("FP32", ()),
}
#: Input datatypes taken: pixels as FP32 in [0, 1] or UINT8 in [0, 255], or encoded images.
PIXEL_DATATYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
BYTES = "BYTES"

_LENGTH = struct.Struct("<I")


class ProtocolError(ServiceError):
    """A request the protocol's rules refuse: bad JSON, shape, datatype, binary section."""

    status = 400
    code = "bad_request"


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """What an infer request asks: one input, as pixels or as encoded images."""

    id: str | None
    outputs: list[RequestedOutput]
    #: ``(N, 28, 28)`` float32 MNIST-style pixels in [0, 1] (FP32 and UINT8 inputs) ...
    pixels: npt.NDArray[np.float32] | None = None
    #: ... or the N encoded images of a BYTES input, for the imaging stage.
    images: list[bytes] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.images) if self.pixels is None else int(self.pixels.shape[0])


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The body -> (its JSON, its binary section), by ``Inference-Header-Content-Length``."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not text.isdigit():
        raise ProtocolError(
            f"Inference-Header-Content-Length must be a non-negative integer, not {text!r}"
        )
    length = int(text)
    if length > len(body):
        raise ProtocolError(
            f"Inference-Header-Content-Length is {length} but the body has only {len(body)} bytes"
        )
    return body[:length], body[length:]


def check_encoding(content_encoding: str | None) -> None:
    """Compressed requests are not taken (the body limit counts the bytes as sent)."""
    if content_encoding is not None and content_encoding.strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding {content_encoding!r} is not accepted; send the body uncompressed"
        )


def parse_request(body: bytes, header_length: str | None, *, max_images: int) -> InferRequest:
    """An infer request's body -> its images and the outputs it asks for (400 for any fault)."""
    head, binary = split_body(body, header_length)
    try:
        document = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"the request's JSON is not valid: {exc}") from None
    if not isinstance(document, dict):
        raise ProtocolError("the request must be a JSON object with 'inputs'")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(
            "'inputs' must list exactly one tensor: FP32 [N,1,28,28] or [N,28,28] pixels in "
            "[0, 1], UINT8 [N,28,28], or BYTES [N] of encoded images"
        )
    tensor: dict[str, Any] = inputs[0]
    parameters = _parameters(document.get("parameters"), "request")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    binary_default = bool(parameters.get("binary_data_output"))
    outputs = _requested_outputs(document.get("outputs"), binary_default)

    name = tensor.get("name")
    datatype = tensor.get("datatype")
    shape = tensor.get("shape")
    if not isinstance(name, str):
        raise ProtocolError("the input tensor must have a 'name'")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ProtocolError(f"input {name!r}: 'shape' must be a list of non-negative integers")
    raw, offset = _tensor_bytes(tensor, name, binary)
    if offset != len(binary):
        raise ProtocolError(
            f"the binary section has {len(binary) - offset} bytes after the last input's "
            "binary_data_size"
        )
    if datatype in PIXEL_DATATYPES:
        pixels = _pixels(name, datatype, shape, tensor, raw)
        if pixels.shape[0] < 1:
            raise ProtocolError(f"input {name!r}: the batch is empty")
        return InferRequest(request_id, outputs, pixels=pixels)
    if datatype == BYTES:
        images = _images(name, shape, tensor, raw)
        if not images:
            raise ProtocolError(f"input {name!r}: the batch is empty")
        if len(images) > max_images:
            raise ProtocolError(
                f"input {name!r}: {len(images)} encoded images; at most {max_images} per request"
            )
        return InferRequest(request_id, outputs, images=images)
    raise ProtocolError(
        f"input {name!r}: datatype {datatype!r} is not accepted; send FP32 or UINT8 pixels "
        "or BYTES of encoded images"
    )


def _parameters(value: object, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"the {what}'s 'parameters' must be a JSON object")
    return value


def _requested_outputs(value: object, binary_default: bool) -> list[RequestedOutput]:
    if value is None:
        return [RequestedOutput(name, binary_default) for name in OUTPUTS]
    if not isinstance(value, list) or not value:
        raise ProtocolError("'outputs' must be a non-empty list of {\"name\": ...}")
    wanted: list[RequestedOutput] = []
    for entry in value:
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in OUTPUTS:
            raise ProtocolError(f"unknown output {name!r}; the outputs are {', '.join(OUTPUTS)}")
        parameters = _parameters(entry.get("parameters"), f"output {name!r}")
        if parameters.get("classification"):
            raise ProtocolError("the classification extension is not supported")
        if any(w.name == name for w in wanted):
            raise ProtocolError(f"output {name!r} is asked for twice")
        binary = parameters.get("binary_data", binary_default)
        wanted.append(RequestedOutput(name, bool(binary)))
    return wanted


def _tensor_bytes(tensor: Mapping[str, Any], name: str, binary: bytes) -> tuple[bytes | None, int]:
    """The input's raw bytes from the binary section (``None``: its data is in the JSON)."""
    parameters = _parameters(tensor.get("parameters"), f"input {name!r}")
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise ProtocolError(f"input {name!r} has neither 'data' nor binary_data_size")
        return None, 0
    if "data" in tensor:
        raise ProtocolError(f"input {name!r} has both 'data' and binary_data_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ProtocolError(f"input {name!r}: binary_data_size must be a non-negative integer")
    if size > len(binary):
        raise ProtocolError(
            f"input {name!r}: binary_data_size is {size} but the binary section holds only "
            f"{len(binary)} bytes (truncated?)"
        )
    return binary[:size], size


def _pixels(
    name: str, datatype: str, shape: Sequence[int], tensor: Mapping[str, Any], raw: bytes | None
) -> npt.NDArray[np.float32]:
    """An FP32 or UINT8 input -> ``(N, 28, 28)`` float32 in [0, 1]."""
    if (
        len(shape) not in (3, 4)
        or tuple(shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE)
        or (len(shape) == 4 and shape[1] != 1)
    ):
        raise ProtocolError(
            f"input {name!r}: shape {list(shape)} is not accepted; send [N,1,28,28] or [N,28,28]"
        )
    dtype = PIXEL_DATATYPES[datatype]
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise ProtocolError(
                f"input {name!r}: {datatype} {list(shape)} is {count * dtype.itemsize} bytes, "
                f"binary_data_size says {len(raw)}"
            )
        values = np.frombuffer(raw, dtype=dtype)
    else:
        try:
            values = np.asarray(tensor["data"], dtype=dtype).reshape(-1)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ProtocolError(
                f"input {name!r}: 'data' is not {datatype} numbers: {exc}"
            ) from None
        if values.size != count:
            raise ProtocolError(
                f"input {name!r}: shape {list(shape)} holds {count} values, 'data' has "
                f"{values.size}"
            )
    images = values.reshape(shape[0], IMAGE_SIZE, IMAGE_SIZE)
    if datatype == "UINT8":
        scaled: npt.NDArray[np.float32] = images.astype(np.float32) / np.float32(255.0)
        return scaled
    pixels: npt.NDArray[np.float32] = images.astype(
        np.float32
    )  # a copy: frombuffer's array is read-only
    if not np.isfinite(pixels).all() or pixels.min() < 0.0 or pixels.max() > 1.0:
        raise ProtocolError(
            f"input {name!r}: FP32 pixels must be finite and in [0, 1] (white ink on black)"
        )
    return pixels


def _images(
    name: str, shape: Sequence[int], tensor: Mapping[str, Any], raw: bytes | None
) -> list[bytes]:
    """A BYTES input -> its encoded images (JSON strings are base64)."""
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise ProtocolError(
            f"input {name!r}: BYTES shape {list(shape)} is not accepted; send [N] or [N,1]"
        )
    count = shape[0]
    if raw is not None:
        images = _deserialize_bytes(name, raw)
    else:
        data = tensor["data"]
        if not isinstance(data, list):
            raise ProtocolError(f"input {name!r}: 'data' must be a list of base64 strings")
        images = [_from_base64(name, item) for item in _flat(data)]
    if len(images) != count:
        raise ProtocolError(
            f"input {name!r}: shape {list(shape)} holds {count} elements, the data {len(images)}"
        )
    for image in images:
        if not image:
            raise BadImage("an image is empty", code="empty_body")
    return images


def _flat(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in data:
        out.extend(_flat(item) if isinstance(item, list) else [item])
    return out


def _from_base64(name: str, item: object) -> bytes:
    if not isinstance(item, str):
        raise ProtocolError(f"input {name!r}: BYTES elements in JSON must be base64 strings")
    if item.startswith("data:"):
        item = item.partition(",")[2]
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"input {name!r}: an element is not valid base64: {exc}") from None


def _deserialize_bytes(name: str, raw: bytes) -> list[bytes]:
    """Elements as 4-byte little-endian length + bytes, back to back."""
    elements: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise ProtocolError(f"input {name!r}: a BYTES element's length is cut off")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise ProtocolError(
                f"input {name!r}: a BYTES element of {length} bytes is cut off "
                f"({len(raw) - offset} left)"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    return elements


# ---- the response ---------------------------------------------------------------------------


def output_arrays(probabilities: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
    """The model's ``(N, 10)`` probabilities -> every output's array."""
    probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)
    digit = probabilities.argmax(axis=1).astype(np.int64)  # the first of equal maxima
    confidence = probabilities[np.arange(len(digit)), digit].astype(np.float32)
    return {"probabilities": probabilities, "digit": digit, "confidence": confidence}


_WIRE_DTYPE: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "INT64": np.dtype("<i8")}


def encode_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    probabilities: npt.NDArray[np.float32],
) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON part when binary outputs follow it
    (``None``: the body is JSON alone)."""
    arrays = output_arrays(probabilities)
    outputs: list[dict[str, Any]] = []
    binary: list[bytes] = []
    for wanted in request.outputs:
        datatype, item_shape = OUTPUTS[wanted.name]
        array = arrays[wanted.name]
        entry: dict[str, Any] = {
            "name": wanted.name,
            "datatype": datatype,
            "shape": [int(array.shape[0]), *item_shape],
        }
        if wanted.binary:
            data = np.ascontiguousarray(array, dtype=_WIRE_DTYPE[datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            binary.append(data)
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = outputs
    head = json.dumps(document, separators=(",", ":")).encode()
    if not binary:
        return head, None
    return b"".join([head, *binary]), len(head)
