"""The HTTP API, called in-process through httpx's ASGI transport, on real model packages."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from PIL import Image

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import REPO, digit_png, running_app, write_package

pytestmark = pytest.mark.anyio

KEY = "k" * 24


def assert_error(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, object]:
    """Every error has the one documented shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["status"] == status
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code
    return error


def assert_prediction(body: dict[str, object], digit: int | None = None) -> None:
    probabilities = body["probabilities"]
    assert isinstance(probabilities, list) and len(probabilities) == 10
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert body["confidence"] == probabilities[int(body["digit"])]  # type: ignore[call-overload]
    assert body["confidence"] == max(probabilities)
    assert isinstance(body["uncertain"], bool)
    timing = body["timing_ms"]
    assert isinstance(timing, dict) and set(timing) == {"queue", "inference", "total"}
    if digit is not None:
        assert body["digit"] == digit


# ---- /predict on trained models -------------------------------------------------------------


async def test_predict_raw_png_reads_each_digit(trained_model_dir: Path) -> None:
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        for digit in range(10):
            response = await client.post(
                "/predict", content=digit_png(digit), headers={"content-type": "image/png"}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert_prediction(body, digit)
            assert body["model"] == {"name": "lenet5", "version": "1"}
            assert body["batch_size"] >= 1


async def test_predict_accepts_multipart_json_and_untyped_bodies(trained_model_dir: Path) -> None:
    png = digit_png(3)
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        multipart = await client.post("/predict", files={"file": ("three.png", png, "image/png")})
        as_json = await client.post("/predict", json={"image": base64.b64encode(png).decode()})
        data_url = await client.post(
            "/predict", json={"image": "data:image/png;base64," + base64.b64encode(png).decode()}
        )
        untyped = await client.post("/predict", content=png, headers={"content-type": ""})
        mistyped = await client.post(
            "/predict", content=png, headers={"content-type": "image/jpeg"}
        )
    for response in (multipart, as_json, data_url, untyped, mistyped):
        assert response.status_code == 200, response.text
        assert_prediction(response.json(), 3)


async def test_predict_jpeg_photo_of_a_digit(trained_model_dir: Path) -> None:
    # Dark ink on light paper, small and off-centre in a larger picture, saved as JPEG.
    digit = Image.open(io.BytesIO(digit_png(7))).convert("L")
    paper = Image.new("L", (320, 240), 225)
    ink = Image.eval(
        digit.resize((84, 84), Image.Resampling.LANCZOS), lambda v: 225 - v * 200 // 255
    )
    paper.paste(ink, (40, 120))
    buffer = io.BytesIO()
    paper.convert("RGB").save(buffer, "JPEG", quality=85)
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        response = await client.post(
            "/predict", content=buffer.getvalue(), headers={"content-type": "image/jpeg"}
        )
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), 7)


async def test_predict_named_model_and_version(trained_model_dir: Path) -> None:
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        response = await client.post(
            "/predict?model=mlp&version=1",
            content=digit_png(2),
            headers={"content-type": "image/png"},
        )
        assert response.status_code == 200
        assert response.json()["model"] == {"name": "mlp", "version": "1"}
        unknown = await client.post("/predict?model=nope", content=digit_png(2))
        assert_error(unknown, 404, "not_found")
        no_version = await client.post("/predict?model=mlp&version=7", content=digit_png(2))
        assert_error(no_version, 404, "not_found")


async def test_predict_all_models_answers_and_says_whether_they_agree(
    trained_model_dir: Path,
) -> None:
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        response = await client.post("/predict?model=all", content=digit_png(0))
        assert response.status_code == 200, response.text
        body = response.json()
        assert {p["model"]["name"] for p in body["predictions"]} == {"lenet5", "mlp"}
        assert body["agree"] is True and body["digit"] == 0
        for prediction in body["predictions"]:
            assert_prediction(prediction, 0)
        with_version = await client.post("/predict?model=all&version=1", content=digit_png(0))
        assert_error(with_version, 422, "invalid_parameter")


async def test_explain_returns_the_28x28_image_the_model_saw(trained_model_dir: Path) -> None:
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        response = await client.post("/predict?explain=true", content=digit_png(5))
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["image"])))
    assert image.size == (28, 28) and image.mode == "L"


async def test_uncertain_follows_the_threshold(trained_model_dir: Path) -> None:
    async with running_app(
        model_dir=trained_model_dir, default_model="lenet5", uncertain_below=1.0
    ) as client:
        response = await client.post("/predict", content=digit_png(1))
    assert response.json()["uncertain"] is True


async def test_predict_batch_answers_each_file_and_isolates_bad_ones(
    trained_model_dir: Path,
) -> None:
    files = [
        ("files", ("four.png", digit_png(4), "image/png")),
        ("files", ("junk.bin", b"this is not an image", "application/octet-stream")),
        ("files", ("nine.png", digit_png(9), "image/png")),
    ]
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        response = await client.post("/predict/batch", files=files)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["filename"] for r in results] == ["four.png", "junk.bin", "nine.png"]
        assert_prediction(results[0]["prediction"], 4)
        assert results[1]["error"]["status"] == 400 and "prediction" not in results[1]
        assert_prediction(results[2]["prediction"], 9)
        raw = await client.post("/predict/batch", content=digit_png(4))
        assert_error(raw, 415, "unsupported_media_type")
        no_files = await client.post("/predict/batch", files={"other": ("a.png", b"x")})
        assert_error(no_files, 400, "no_file")


# ---- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/predict", "/read"])
async def test_bad_bodies_get_documented_4xx(model_dir: Path, route: str) -> None:
    write_package(model_dir, "default")
    async with running_app(model_dir=model_dir, selftest=False, max_body_bytes=4096) as client:
        assert_error(await client.post(route, content=b""), 400, "empty_body")
        assert_error(await client.post(route, content=b"\x00garbage" * 10), 400)
        html = await client.post(
            route, content=b"<html></html>", headers={"content-type": "text/html"}
        )
        assert_error(html, 415, "unsupported_media_type")
        too_big = await client.post(route, content=b"\x89PNG" + b"0" * 5000)
        assert_error(too_big, 413, "payload_too_large")
        bad_json = await client.post(
            route, content=b"{", headers={"content-type": "application/json"}
        )
        assert_error(bad_json, 400, "bad_json")
        bad_b64 = await client.post(route, json={"image": "***"})
        assert_error(bad_b64, 400, "bad_base64")
        no_file = await client.post(route, files={"image": ("a.png", b"abc")})
        assert_error(no_file, 400, "no_file")
        bad_model = await client.post(f"{route}?model=Bad%20Name", content=b"x")
        assert_error(bad_model, 422, "invalid_parameter")
        bad_explain = await client.post(f"{route}?explain=maybe", content=b"x")
        assert_error(bad_explain, 422, "invalid_parameter")
        assert_error(await client.get("/nowhere"), 404, "not_found")
        assert_error(await client.get(route), 405, "method_not_allowed")
        # ...and the service still answers afterwards.
        assert (await client.get("/healthz")).status_code == 200


async def test_chunked_body_over_the_limit_is_refused(model_dir: Path) -> None:
    write_package(model_dir, "default")

    async def chunks() -> AsyncIterator[
        bytes
    ]:  # no Content-Length: the limit must hold while streaming
        for _ in range(10):
            yield b"\x00" * 1024

    async with running_app(model_dir=model_dir, selftest=False, max_body_bytes=4096) as client:
        response = await client.post("/predict", content=chunks())
    assert_error(response, 413, "payload_too_large")


# ---- /models ---------------------------------------------------------------------------------


async def test_models_lists_cards_device_batching_and_queue(trained_model_dir: Path) -> None:
    async with running_app(
        model_dir=trained_model_dir,
        default_model="lenet5",
        batching={"mlp": {"max_batch_size": 8, "max_wait_ms": 1, "queue_size": 16}},
    ) as client:
        body = (await client.get("/models")).json()
        one = (await client.get("/models/mlp")).json()
        assert_error(await client.get("/models/nope"), 404, "not_found")
    assert body["default_model"] == "lenet5"
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == {"lenet5", "mlp"}
    lenet = by_name["lenet5"]
    assert lenet["status"] == "ready" and lenet["default"] is True and lenet["newest"] is True
    assert lenet["device"] == "cpu"
    assert lenet["metrics"]["test_accuracy"] > 0.98
    assert len(lenet["sha256"]) == 64
    assert lenet["queue"] == {"depth": 0, "capacity": 1024}
    assert by_name["mlp"]["batching"] == {"max_batch_size": 8, "max_wait_ms": 1.0, "queue_size": 16}
    assert one["models"][0]["name"] == "mlp"


async def test_reload_swaps_in_new_versions_and_keeps_old_ones_on_failure(model_dir: Path) -> None:
    write_package(model_dir, "default")
    async with running_app(model_dir=model_dir, selftest=False) as client:
        write_package(model_dir, "default", "2")
        report = (await client.post("/models/reload")).json()
        assert report["loaded"] == [{"name": "default", "version": "2"}]
        assert report["unchanged"] == [{"name": "default", "version": "1"}]
        answer = await client.post("/predict", content=digit_png(1))
        assert answer.json()["model"]["version"] == "2"

        # Corrupt version 2 in place: it fails verification, and the loaded copy keeps serving.
        (model_dir / "default" / "2" / "model.pt").write_bytes(b"not torchscript")
        report = (await client.post("/models/reload")).json()
        assert [f["version"] for f in report["failed"]] == ["2"]
        assert "sha256" in report["failed"][0]["error"]
        answer = await client.post("/predict", content=digit_png(1))
        assert answer.json()["model"]["version"] == "2"
        # ... and /models says so, while it serves; the same broken files are not retried.
        listed = {m["version"]: m for m in (await client.get("/models")).json()["models"]}
        assert listed["2"]["status"] == "ready" and "sha256" in listed["2"]["error"]
        again = (await client.post("/models/reload")).json()
        assert [f["version"] for f in again["failed"]] == ["2"] and not again["loaded"]

        # A broken new package is listed as failed and does not disturb the others.
        broken = write_package(model_dir, "other")
        (broken / "metadata.json").write_text("{}")
        await client.post("/models/reload")
        models = {(m["name"], m["status"]) for m in (await client.get("/models")).json()["models"]}
        assert ("other", "failed") in models and ("default", "ready") in models
        failed = await client.post("/predict?model=other", content=digit_png(1))
        assert_error(failed, 503, "model_failed")

        # Removing a package stops it serving.
        for path in sorted((model_dir / "default" / "2").iterdir()):
            path.unlink()
        (model_dir / "default" / "2").rmdir()
        report = (await client.post("/models/reload")).json()
        assert report["removed"] == [{"name": "default", "version": "2"}]
        answer = await client.post("/predict", content=digit_png(1))
        assert answer.json()["model"]["version"] == "1"


async def test_selftest_failure_marks_an_untrained_model_failed(trained_model_dir: Path) -> None:
    write_package(trained_model_dir, "untrained")
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        models = (await client.get("/models")).json()["models"]
        ready = (await client.get("/readyz")).json()
    untrained = next(m for m in models if m["name"] == "untrained")
    assert untrained["status"] == "failed" and "self-test" in untrained["error"]
    assert ready["models"]["untrained/1"] == "failed"
    assert ready["ready"] is True  # the default serves; a broken extra does not hold it back


async def test_missing_default_model_stops_start_up(model_dir: Path) -> None:
    write_package(model_dir, "other")
    app = create_app(Settings(model_dir=model_dir, selftest=False))
    with pytest.raises(SystemExit, match="DIGITS_DEFAULT_MODEL"):
        async with app.router.lifespan_context(app):
            pass


# ---- health, metrics, headers, keys ---------------------------------------------------------


async def test_health_ready_metrics_and_request_id(trained_model_dir: Path) -> None:
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        answer = await client.post(
            "/predict", content=digit_png(6), headers={"x-request-id": "abc-123"}
        )
        assert answer.headers["x-request-id"] == "abc-123"
        assert answer.headers["x-content-type-options"] == "nosniff"
        generated = await client.get("/models")
        assert len(generated.headers["x-request-id"]) == 32
        metrics = (await client.get("/metrics")).text
    sample = 'digits_requests_total{model="lenet5",route="/predict",status="200",version="1"} 1.0'
    assert sample in metrics
    assert 'digits_batch_size_count{model="lenet5",version="1"}' in metrics
    assert 'digits_queue_depth{model="lenet5",version="1"} 0.0' in metrics


async def test_api_keys_guard_predict_and_models_but_not_probes(trained_model_dir: Path) -> None:
    async with running_app(
        model_dir=trained_model_dir, default_model="lenet5", api_keys=[KEY]
    ) as client:
        assert_error(await client.get("/models"), 401, "unauthorized")
        assert_error(await client.post("/predict", content=digit_png(1)), 401, "unauthorized")
        wrong = await client.get("/models", headers={"authorization": "Bearer " + "x" * 24})
        assert_error(wrong, 401, "unauthorized")
        assert (await client.get("/models", headers={"x-api-key": KEY})).status_code == 200
        bearer = await client.post(
            "/predict", content=digit_png(1), headers={"authorization": f"Bearer {KEY}"}
        )
        assert bearer.status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_reload_takes_an_admin_key_not_a_prediction_key(trained_model_dir: Path) -> None:
    admin = "a" * 24
    async with running_app(
        model_dir=trained_model_dir, default_model="lenet5", api_keys=[KEY], admin_keys=[admin]
    ) as client:
        missing = await client.post("/models/reload")
        assert_error(missing, 401, "unauthorized")
        assert missing.json()["error"]["message"].startswith("an admin key is required")
        with_api_key = await client.post("/models/reload", headers={"x-api-key": KEY})
        assert_error(with_api_key, 401, "unauthorized")
        as_admin = await client.post("/models/reload", headers={"authorization": f"Bearer {admin}"})
        assert as_admin.status_code == 200, as_admin.text
        # The admin key is for administration only.
        predicted = await client.post(
            "/predict", content=digit_png(1), headers={"x-api-key": admin}
        )
        assert_error(predicted, 401, "unauthorized")


async def test_with_api_keys_and_no_admin_key_reload_is_off(trained_model_dir: Path) -> None:
    async with running_app(
        model_dir=trained_model_dir, default_model="lenet5", api_keys=[KEY]
    ) as client:
        refused = await client.post("/models/reload", headers={"x-api-key": KEY})
        assert_error(refused, 403, "admin_disabled")
        assert "DIGITS_ADMIN_KEYS" in refused.json()["error"]["message"]


async def test_a_wrong_method_on_reload_is_405_with_allow() -> None:
    async with running_app(model_dir=REPO / "models") as client:
        wrong = await client.get("/models/reload")
    assert_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"


async def test_with_no_keys_at_all_reload_is_open(trained_model_dir: Path) -> None:
    async with running_app(model_dir=trained_model_dir, default_model="lenet5") as client:
        assert (await client.post("/models/reload")).status_code == 200


# ---- the committed OpenAPI document ----------------------------------------------------------


def test_committed_openapi_matches_the_app() -> None:
    live = create_app(Settings()).openapi()
    committed = json.loads((REPO / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(live)), "run `make openapi` and commit openapi.json"


def test_openapi_documents_every_error_in_the_one_shape() -> None:
    document = create_app(Settings()).openapi()
    predict = document["paths"]["/predict"]["post"]
    for status in ("400", "413", "415", "422", "503", "504"):
        schema = predict["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "image/png" in predict["requestBody"]["content"]
    assert "multipart/form-data" in predict["requestBody"]["content"]


async def test_watching_the_model_folder_serves_a_dropped_in_package(model_dir: Path) -> None:
    write_package(model_dir, "default")
    async with running_app(model_dir=model_dir, selftest=False, reload_interval_s=0.05) as client:
        write_package(model_dir, "extra")
        for _ in range(200):  # bounded: the watcher re-scans every 50 ms
            names = {m["name"] for m in (await client.get("/models")).json()["models"]}
            if "extra" in names:
                break
            await anyio.sleep(0.05)
        answer = await client.post("/predict?model=extra", content=digit_png(4))
    assert "extra" in names
    assert answer.status_code == 200 and answer.json()["model"]["name"] == "extra"


async def test_one_log_line_per_request_with_its_id_and_never_the_key(
    trained_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="service.access")
    async with running_app(
        model_dir=trained_model_dir, default_model="lenet5", api_keys=[KEY]
    ) as client:
        await client.post(
            "/predict",
            content=digit_png(8),
            headers={"x-api-key": KEY, "x-request-id": "req-42"},
        )
    lines = [r for r in caplog.records if r.name == "service.access"]
    assert len(lines) == 1
    line = lines[0].__dict__
    assert line["status"] == 200 and line["path"] == "/predict"
    assert line["model"] == "lenet5" and line["version"] == "1" and line["batch_size"] >= 1
    assert "latency_ms" in line
    assert line["request_id"] == "req-42"
    assert all(KEY not in record.getMessage() + str(record.__dict__) for record in caplog.records)
