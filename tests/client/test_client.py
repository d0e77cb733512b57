"""``digits_client`` against the real service in a subprocess, over HTTP."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from digits_client.client import DigitsClient, DigitsError
from PIL import Image

from tests.client.conftest import blank_png, number_picture
from tests.conftest import SERVICE_KEY
from tests.service.conftest import (
    SELFTEST_DIR,
    digit_png,
    free_port,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def client(service_url: str) -> Iterator[DigitsClient]:
    with DigitsClient(service_url, timeout=30.0) as digits:
        yield digits


def shipped(digit: int) -> Path:
    return sorted(SELFTEST_DIR.glob(f"digit{digit}_mnist*.png"))[0]


def test_predict_reads_every_shipped_digit(client: DigitsClient) -> None:
    for digit in range(10):
        answer = client.predict(digit_png(digit))
        assert answer.digit == digit
        assert answer.model.name == "lenet5" and answer.model.version == "1"
        assert answer.confidence == max(answer.probabilities)
        assert answer.image is None


def test_predict_takes_a_path_a_model_and_explains(client: DigitsClient) -> None:
    answer = client.predict(shipped(3), model="mlp", version="1", explain=True)
    assert answer.digit == 3
    assert (answer.model.name, answer.model.version) == ("mlp", "1")
    assert answer.image is not None
    seen = Image.open(io.BytesIO(base64.b64decode(answer.image)))
    assert seen.size == (28, 28)
    assert client.predict(str(shipped(3))).digit == 3  # a str path works too


def test_predict_all_says_whether_the_models_agree(client: DigitsClient) -> None:
    answer = client.predict_all(digit_png(7))
    assert answer.digit == 7 and answer.agree
    assert sorted(p.model.name for p in answer.predictions) == ["lenet5", "mlp"]


def test_predict_batch_answers_each_file_and_fails_bad_ones_alone(
    client: DigitsClient, tmp_path: Path
) -> None:
    answer = client.predict_batch([shipped(1), ("junk.png", b"not an image"), shipped(2)])
    results = answer.results
    assert [r.filename for r in results] == [shipped(1).name, "junk.png", shipped(2).name]
    assert results[0].prediction is not None and results[0].prediction.digit == 1
    assert results[2].prediction is not None and results[2].prediction.digit == 2
    assert results[1].prediction is None
    assert results[1].error is not None and results[1].error.status == 400


def test_read_reads_a_number_and_boxes_each_digit_where_it_is(client: DigitsClient) -> None:
    picture = number_picture([3, 0, 7])
    reading = client.read(picture.png)
    assert reading.number == "307"
    assert len(reading.digits) == 3
    assert "".join(str(d.digit) for d in reading.digits) == reading.number
    assert 0 <= reading.confidence <= min(d.confidence for d in reading.digits) + 1e-9
    assert reading.uncertain == (reading.confidence < 0.9)
    assert (reading.model.name, reading.model.version) == ("lenet5", "1")
    assert reading.batch_size >= 1 and reading.timing_ms.total > 0
    for digit, (left, right) in zip(reading.digits, picture.tiles, strict=True):
        assert len(digit.probabilities) == 10
        assert digit.confidence == max(digit.probabilities)
        assert digit.image is None
        box = digit.box
        # Inside the picture, and around the digit's own ink: its middle in the digit's tile.
        assert box.x >= 0 and box.x + box.width <= picture.width
        assert box.y >= 0 and box.y + box.height <= picture.height
        assert left <= box.x + box.width / 2 <= right
        assert box.width < right - left and box.height < picture.height


def test_read_takes_a_path_a_model_a_length_and_explains(
    client: DigitsClient, tmp_path: Path
) -> None:
    path = tmp_path / "zip.png"
    path.write_bytes(number_picture([0, 2, 1, 3], ink_on_paper=False).png)
    reading = client.read(path, model="mlp", version="1", length=4, explain=True)
    assert (reading.model.name, reading.model.version) == ("mlp", "1")
    assert len(reading.number) == 4 and reading.number.isdigit()
    assert reading.number.startswith("0")  # a string: the leading zero is kept
    for digit in reading.digits:
        assert digit.image is not None
        assert Image.open(io.BytesIO(base64.b64decode(digit.image))).size == (28, 28)
    assert all(0 <= int(c) <= 9 for c in reading.number)


def test_read_with_a_length_answers_that_many_digits_or_says_it_cannot(
    client: DigitsClient,
) -> None:
    picture = number_picture([5, 8])
    exact = client.read(picture.png, length=2)
    assert exact.number == "58" and len(exact.digits) == 2
    for length in (1, 3):
        # No reading of that many digits: the best of any length, with confidence 0.
        reading = client.read(picture.png, length=length)
        assert len(reading.digits) == len(reading.number)
        if len(reading.number) != length:
            assert reading.confidence == 0 and reading.uncertain, reading


def test_read_errors_arrive_as_digits_errors(client: DigitsClient) -> None:
    with pytest.raises(DigitsError) as blank:
        client.read(blank_png())
    assert (blank.value.status, blank.value.code) == (400, "no_digit")
    assert blank.value.request_id
    with pytest.raises(DigitsError) as not_an_image:
        client.read(b"not an image")
    assert (not_an_image.value.status, not_an_image.value.code) == (400, "not_an_image")
    with pytest.raises(DigitsError) as unknown:
        client.read(number_picture([1, 2]).png, model="nosuchmodel")
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    with pytest.raises(DigitsError) as zero:
        client.read(number_picture([1, 2]).png, length=0)
    assert (zero.value.status, zero.value.code) == (422, "invalid_parameter")


def test_predict_says_when_a_picture_holds_several_digits(client: DigitsClient) -> None:
    assert client.predict(digit_png(4)).digits_seen == 1
    assert client.predict(number_picture([3, 0, 7]).png).digits_seen == 3


def test_models_reload_and_health(client: DigitsClient) -> None:
    listing = client.models()
    assert listing.default_model == "lenet5"
    assert [(m.name, m.version, m.status) for m in listing.models] == [
        ("lenet5", "1", "ready"),
        ("mlp", "1", "ready"),
    ]
    lenet5 = listing.models[0]
    assert lenet5.default and lenet5.metrics is not None and lenet5.metrics.test_accuracy > 0.95
    assert [m.name for m in client.model("mlp").models] == ["mlp"]
    reload = client.reload()
    assert sorted(r.name for r in reload.unchanged) == ["lenet5", "mlp"]
    assert reload.loaded == [] and reload.failed == []
    assert client.health().status == "ok"
    ready = client.ready()
    assert ready.ready and ready.models == {"lenet5/1": "ready", "mlp/1": "ready"}


def test_service_errors_arrive_as_digits_errors(client: DigitsClient) -> None:
    with pytest.raises(DigitsError) as bad_image:
        client.predict(b"not an image")
    assert bad_image.value.status == 400
    assert bad_image.value.code and bad_image.value.message
    assert bad_image.value.request_id
    with pytest.raises(DigitsError) as unknown:
        client.predict(digit_png(0), model="nosuchmodel")
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    with pytest.raises(DigitsError) as no_model:
        client.model("nosuchmodel")
    assert no_model.value.status == 404
    with pytest.raises(FileNotFoundError):
        client.predict(Path("/no/such/image.png"))


def test_no_service_is_a_digits_error_without_status() -> None:
    nobody = DigitsClient(f"http://127.0.0.1:{free_port()}", timeout=5.0)
    with nobody, pytest.raises(DigitsError) as error:
        nobody.health()
    assert error.value.status is None
    assert error.value.code == "unreachable"
    assert "cannot reach http://127.0.0.1:" in error.value.message


def test_a_server_that_is_not_digits_is_reported_as_such(tmp_path: Path) -> None:
    # A plain file server: a 404 page that is not the service's error shape, and a 200 that
    # is not JSON.
    (tmp_path / "healthz").write_text("hello")
    handler = _quiet_handler(tmp_path)
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            with DigitsClient(f"http://127.0.0.1:{server.server_address[1]}") as other:
                with pytest.raises(DigitsError) as not_json:
                    other.health()
                with pytest.raises(DigitsError) as not_found:
                    other.models()
        finally:
            server.shutdown()
    assert (not_json.value.status, not_json.value.code) == (200, "unexpected_response")
    assert "did not answer like a digits service" in not_json.value.message
    assert (not_found.value.status, not_found.value.code) == (404, "http_error")


def _quiet_handler(root: Path) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def test_api_key_is_sent_when_given(keyed_service_url: str) -> None:
    with DigitsClient(keyed_service_url) as anonymous, pytest.raises(DigitsError) as refused:
        anonymous.models()
    with DigitsClient(keyed_service_url, api_key=SERVICE_KEY) as keyed:
        assert [m.name for m in keyed.models().models] == ["tiny"]
        assert 0 <= keyed.predict(digit_png(5)).digit <= 9
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
