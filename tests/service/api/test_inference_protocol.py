"""The Open Inference Protocol (KServe v2 / Triton REST) routes: in-process for shapes and
errors, and against a real server with the real client, ``tritonclient``."""

from __future__ import annotations

import base64
import io
import json
import struct
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from benchmarks.image_kinds import default_data_dir, load_mnist_test
from service.app import create_app
from service.settings import Settings
from tests.service.conftest import digit_png, running_app

pytestmark = pytest.mark.anyio

INFER = "/v2/models/lenet5/infer"
KEY = "k" * 24


@pytest.fixture(scope="module")
def mnist() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """The first 64 MNIST test digits and their labels."""
    images, labels = load_mnist_test(default_data_dir())
    return images[:64], labels[:64]


def png(image: npt.NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_photo(digit: int) -> bytes:
    """Dark ink on light paper, small and off-centre in a larger picture."""
    ink = Image.open(io.BytesIO(digit_png(digit))).convert("L")
    paper = Image.new("L", (320, 240), 225)
    paper.paste(
        Image.eval(ink.resize((84, 84), Image.Resampling.LANCZOS), lambda v: 225 - v * 200 // 255),
        (40, 120),
    )
    buffer = io.BytesIO()
    paper.convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def binary_body(document: dict[str, Any], *parts: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(document).encode()
    return head + b"".join(parts), {"Inference-Header-Content-Length": str(len(head))}


def serialized(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def assert_protocol_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return str(body["error"])


def outputs_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in body["outputs"]}


async def predicted_digits(client: httpx.AsyncClient, images: list[bytes]) -> list[int]:
    digits = []
    for image in images:
        response = await client.post("/predict?model=lenet5", content=image)
        assert response.status_code == 200, response.text
        digits.append(int(response.json()["digit"]))
    return digits


# ---- in process ----------------------------------------------------------------------------


async def test_server_metadata_health_and_model_metadata(trained_model_dir: Any) -> None:
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        server = (await client.get("/v2")).json()
        assert server["name"] == "digits"
        assert "binary_tensor_data" in server["extensions"]
        assert isinstance(server["version"], str)
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        ready = await client.get("/v2/health/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True}

        for path in ("/v2/models/lenet5", "/v2/models/lenet5/versions/1"):
            metadata = (await client.get(path)).json()
            assert metadata["name"] == "lenet5"
            assert metadata["versions"] == ["1"]
            assert metadata["platform"] == "pytorch_torchscript"
            assert {"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]} in metadata[
                "inputs"
            ]
            assert {"name": "image", "datatype": "BYTES", "shape": [-1]} in metadata["inputs"]
            assert metadata["outputs"] == [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                {"name": "digit", "datatype": "INT64", "shape": [-1]},
                {"name": "confidence", "datatype": "FP32", "shape": [-1]},
            ]
        for path in ("/v2/models/mlp/ready", "/v2/models/mlp/versions/1/ready"):
            response = await client.get(path)
            assert response.status_code == 200 and response.json()["ready"] is True

        for path in (
            "/v2/models/lenet7",
            "/v2/models/lenet5/versions/9",
            "/v2/models/lenet7/ready",
            "/v2/models/lenet5/versions/9/ready",
        ):
            assert "lenet7" in assert_protocol_error(await client.get(path), 404) or "9" in path
        response = await client.post("/v2/models/lenet7/infer", content=b"{}")
        assert_protocol_error(response, 404)


async def test_infer_json_fp32_uint8_and_bytes_agree_with_predict(
    trained_model_dir: Any, mnist: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
) -> None:
    images, _ = mnist
    batch = images[:16]
    pixels = (batch.astype(np.float32) / 255.0).reshape(16, 1, 28, 28)
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        expected = await predicted_digits(client, [png(i) for i in batch])

        fp32 = {
            "id": "r1",
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [16, 1, 28, 28],
                 "data": pixels.reshape(-1).tolist()}
            ],
        }  # fmt: skip
        response = await client.post(INFER, json=fp32)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["model_name"] == "lenet5" and body["model_version"] == "1"
        assert body["id"] == "r1"
        outputs = outputs_of(body)
        assert list(outputs) == ["probabilities", "digit", "confidence"]
        assert outputs["digit"]["datatype"] == "INT64" and outputs["digit"]["shape"] == [16]
        assert outputs["digit"]["data"] == expected
        probabilities = np.array(outputs["probabilities"]["data"]).reshape(16, 10)
        assert outputs["probabilities"]["shape"] == [16, 10]
        assert probabilities.sum(axis=1) == pytest.approx(np.ones(16), abs=1e-4)
        assert outputs["confidence"]["data"] == pytest.approx(probabilities.max(axis=1).tolist())

        uint8 = {
            "inputs": [
                {"name": "input", "datatype": "UINT8", "shape": [16, 28, 28],
                 "parameters": {"binary_data_size": batch.nbytes}}
            ],
            "outputs": [{"name": "digit"}],
        }  # fmt: skip
        content, headers = binary_body(uint8, batch.tobytes())
        response = await client.post(INFER, content=content, headers=headers)
        assert response.status_code == 200, response.text
        assert [o["name"] for o in response.json()["outputs"]] == ["digit"]
        assert response.json()["outputs"][0]["data"] == expected

        as_base64 = [base64.b64encode(png(i)).decode() for i in batch[:4]]
        encoded = {
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [4], "data": as_base64}],
            "outputs": [{"name": "digit"}],
        }
        response = await client.post("/v2/models/lenet5/versions/1/infer", json=encoded)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == expected[:4]


async def test_binary_outputs_when_asked(trained_model_dir: Any) -> None:
    images = [digit_png(3), jpeg_photo(7)]
    document = {
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [2],
             "parameters": {"binary_data_size": len(serialized(*images))}}
        ],
        "outputs": [{"name": "digit", "parameters": {"binary_data": True}}, {"name": "confidence"}],
    }  # fmt: skip
    content, headers = binary_body(document, serialized(*images))
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        response = await client.post(INFER, content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    head = json.loads(response.content[:length])
    digit, confidence = head["outputs"]
    assert digit["name"] == "digit" and digit["parameters"] == {"binary_data_size": 16}
    assert "data" not in digit and len(confidence["data"]) == 2
    assert np.frombuffer(response.content[length:], "<i8").tolist() == [3, 7]


@pytest.mark.parametrize(
    ("tensor", "binary", "header_extra"),
    [
        # wrong shapes
        ({"datatype": "FP32", "shape": [1, 3, 28, 28], "data": [0.0] * 2352}, b"", 0),
        ({"datatype": "FP32", "shape": [1, 28, 27], "data": [0.0] * 756}, b"", 0),
        ({"datatype": "FP32", "shape": [2, 1, 28, 28], "data": [0.0] * 784}, b"", 0),
        ({"datatype": "BYTES", "shape": [1, 2], "data": ["AA==", "AA=="]}, b"", 0),
        # wrong datatypes / values
        ({"datatype": "FP64", "shape": [1, 1, 28, 28], "data": [0.0] * 784}, b"", 0),
        ({"datatype": "FP32", "shape": [1, 1, 28, 28], "data": ["x"] * 784}, b"", 0),
        ({"datatype": "FP32", "shape": [1, 1, 28, 28], "data": [255.0] * 784}, b"", 0),
        ({"datatype": "BYTES", "shape": [1], "data": ["not base64!"]}, b"", 0),
        # truncated binary sections
        (
            {"datatype": "FP32", "shape": [1, 1, 28, 28],
             "parameters": {"binary_data_size": 3136}},
            bytes(3000), 0,
        ),
        (
            {"datatype": "UINT8", "shape": [1, 28, 28], "parameters": {"binary_data_size": 784}},
            bytes(784) + b"x", 0,
        ),
        (
            {"datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 40}},
            struct.pack("<I", 100) + bytes(36), 0,
        ),
        # a JSON header longer than the body
        ({"datatype": "FP32", "shape": [1, 1, 28, 28], "data": [0.0] * 784}, b"", 10),
    ],
)  # fmt: skip
async def test_malformed_requests_are_400_in_the_protocol_shape(
    trained_model_dir: Any, tensor: dict[str, Any], binary: bytes, header_extra: int
) -> None:
    head = json.dumps({"inputs": [{"name": "input", **tensor}]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(head) + header_extra)}
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        response = await client.post(INFER, content=head + binary, headers=headers)
    assert_protocol_error(response, 400)


async def test_other_bad_requests(trained_model_dir: Any) -> None:
    one = {"name": "input", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}
    async with running_app(
        model_dir=trained_model_dir, default_model="lenet5", max_body_bytes=64 * 1024
    ) as client:
        for body in (b"not json", b"[]", json.dumps({"inputs": [one, one]}).encode()):
            assert_protocol_error(await client.post(INFER, content=body), 400)
        unknown_output = {"inputs": [one], "outputs": [{"name": "logits"}]}
        assert "logits" in assert_protocol_error(await client.post(INFER, json=unknown_output), 400)
        header = {"Inference-Header-Content-Length": "-1"}
        assert_protocol_error(await client.post(INFER, json={"inputs": [one]}, headers=header), 400)
        gzipped = {"Content-Encoding": "gzip"}
        response = await client.post(INFER, json={"inputs": [one]}, headers=gzipped)
        assert_protocol_error(response, 415)
        response = await client.post(INFER, content=bytes(65 * 1024))
        assert_protocol_error(response, 413)
        blank = {"inputs": [{**one, "datatype": "BYTES", "shape": [1], "data": ["AAAA"]}]}
        assert_protocol_error(await client.post(INFER, json=blank), 400)  # not an image


async def test_api_key_guards_models_and_infer_but_not_health(trained_model_dir: Any) -> None:
    async with running_app(
        model_dir=trained_model_dir, default_model="lenet5", api_keys=[KEY]
    ) as client:
        assert (await client.get("/v2/health/ready")).status_code == 200
        assert (await client.get("/v2")).status_code == 200
        assert_protocol_error(await client.get("/v2/models/lenet5"), 401)
        assert_protocol_error(await client.post(INFER, content=b"{}"), 401)
        keyed = await client.get("/v2/models/lenet5", headers={"X-API-Key": KEY})
        assert keyed.status_code == 200


def test_openapi_documents_the_v2_routes() -> None:
    document = create_app(Settings()).openapi()
    paths = document["paths"]
    for path in (
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model}",
        "/v2/models/{model}/versions/{version}",
        "/v2/models/{model}/ready",
        "/v2/models/{model}/versions/{version}/ready",
    ):
        assert paths[path]["get"]["summary"], path
    for path in ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"):
        infer = paths[path]["post"]
        content = infer["requestBody"]["content"]
        assert content["application/json"]["schema"] == {
            "$ref": "#/components/schemas/InferenceRequest"
        }
        assert "application/octet-stream" in content
        assert infer["responses"]["400"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ProtocolErrorBody"
        }
    assert "InferInput" in document["components"]["schemas"]


# ---- a real server, with tritonclient -------------------------------------------------------


def triton_client(service_url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(service_url.removeprefix("http://"))


def test_tritonclient_metadata_and_health(service_url: str) -> None:
    client = triton_client(service_url)
    assert client.is_server_live()
    assert client.is_server_ready()
    server = client.get_server_metadata()
    assert server["name"] == "digits" and "binary_tensor_data" in server["extensions"]
    metadata = client.get_model_metadata("lenet5")
    assert metadata["platform"] == "pytorch_torchscript"
    assert metadata["inputs"][0]["shape"] == [-1, 1, 28, 28]
    assert client.get_model_metadata("mlp", "1")["versions"] == ["1"]
    assert client.is_model_ready("lenet5")
    assert client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("lenet7")
    with pytest.raises(InferenceServerException, match="lenet7"):
        client.get_model_metadata("lenet7")


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_infers_mnist_pixels_as_predict_does(
    service_url: str,
    binary: bool,
    mnist: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
) -> None:
    images, _ = mnist
    expected = [
        httpx.post(f"{service_url}/predict", content=png(i)).json()["digit"] for i in images[:32]
    ]
    pixels = (images[:32].astype(np.float32) / 255.0).reshape(32, 1, 28, 28)
    tensor = triton.InferInput("input", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    client = triton_client(service_url)
    result = client.infer("lenet5", [tensor])  # no outputs named: every output, binary
    assert result.as_numpy("digit").tolist() == expected
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (32, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(result.as_numpy("confidence"), probabilities.max(axis=1))

    wanted = [triton.InferRequestedOutput("digit", binary_data=binary)]
    result = client.infer("lenet5", [tensor], model_version="1", outputs=wanted)
    assert result.as_numpy("digit").tolist() == expected
    assert result.as_numpy("probabilities") is None
    assert result.get_response()["model_version"] == "1"


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_infers_png_and_jpeg_bytes(service_url: str, binary: bool) -> None:
    encoded = [digit_png(4), jpeg_photo(7), digit_png(0)]
    # In JSON, BYTES elements are strings: the images go as base64.
    elements = encoded if binary else [base64.b64encode(e) for e in encoded]
    images = np.array(elements, dtype=np.object_)
    tensor = triton.InferInput("image", [len(encoded)], "BYTES")
    tensor.set_data_from_numpy(images, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("digit", binary_data=binary),
        triton.InferRequestedOutput("confidence", binary_data=binary),
    ]
    result = triton_client(service_url).infer("mlp", [tensor], outputs=outputs)
    assert result.as_numpy("digit").tolist() == [4, 7, 0]
    assert result.as_numpy("confidence").shape == (3,)


def test_tritonclient_errors_are_4xx(service_url: str) -> None:
    client = triton_client(service_url)
    good = triton.InferInput("input", [1, 1, 28, 28], "FP32")
    good.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(InferenceServerException, match="lenet7") as raised:
        client.infer("lenet7", [good])
    assert raised.value.status() == "404"
    wrong_shape = triton.InferInput("input", [1, 1, 32, 32], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 1, 32, 32), np.float32))
    wrong_type = triton.InferInput("input", [1, 1, 28, 28], "FP64")
    wrong_type.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float64))
    for tensor in (wrong_shape, wrong_type):
        with pytest.raises(InferenceServerException) as raised:
            client.infer("lenet5", [tensor])
        assert raised.value.status() == "400"


def test_raw_binary_errors_on_a_real_server(service_url: str) -> None:
    document = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
             "parameters": {"binary_data_size": 3136}}
        ]
    }  # fmt: skip
    content, headers = binary_body(document, bytes(1000))  # truncated binary section
    response = httpx.post(service_url + INFER, content=content, headers=headers)
    assert_protocol_error(response, 400)
    headers = {"Inference-Header-Content-Length": str(len(content) + 1)}  # longer than the body
    response = httpx.post(service_url + INFER, content=content, headers=headers)
    assert_protocol_error(response, 400)
