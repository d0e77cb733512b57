"""The client's reading of answers: lenient where the server may grow, true to the server's
OpenAPI document, and a distribution of its own that pulls neither torch nor the server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from digits_client import answers
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[2]
OPENAPI = json.loads((REPO / "openapi.json").read_text())["components"]["schemas"]
ANSWERS = [
    model
    for model in vars(answers).values()
    if isinstance(model, type) and issubclass(model, answers.Answer) and model is not answers.Answer
]
#: Where the client's name for an answer differs from the server's schema name.
SERVER_NAME = {"ModelMetrics": "Metrics"}


@pytest.mark.parametrize("model", ANSWERS, ids=lambda m: m.__name__)
def test_every_field_the_client_reads_is_in_the_servers_document(model: type[BaseModel]) -> None:
    schema = OPENAPI[SERVER_NAME.get(model.__name__, model.__name__)]
    assert set(model.model_fields) <= set(schema["properties"]), model.__name__
    required = set(schema.get("required", []))
    for name, field in model.model_fields.items():
        if field.is_required():  # the client must not require what the server may leave out
            assert name in required, f"{model.__name__}.{name}"


def test_a_field_a_newer_server_adds_is_kept_not_refused() -> None:
    body = {
        "digit": 7,
        "confidence": 0.99,
        "probabilities": [0.001] * 9 + [0.99],
        "uncertain": False,
        "model": {"name": "default", "version": "1", "stage": "canary"},
        "timing_ms": {"queue": 0.1, "inference": 1.0, "total": 2.0},
        "batch_size": 1,
        "explanation": {"saliency": "..."},
    }
    answer = answers.Prediction.model_validate(body)
    assert answer.digit == 7
    assert answer.model_extra == {"explanation": {"saliency": "..."}}
    assert answer.model.model_extra == {"stage": "canary"}


def test_importing_the_client_loads_no_server_code_and_no_torch() -> None:
    probe = (
        "import sys, digits_client, digits_client.cli; "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'numpy', 'service', 'training', 'fastapi', 'cv2'}); "
        "print(heavy)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/"
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_client_distribution_depends_on_httpx_pydantic_and_tqdm_only(tmp_path: Path) -> None:
    # Built from a copy: a build writes build/ and egg-info beside the sources.
    source = tmp_path / "client"
    shutil.copytree(REPO / "client", source, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
            "--quiet", "--wheel-dir", str(wheels), str(source),
        ],
        check=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("digits_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [
            line.split(":", 1)[1].strip().split(">=")[0]
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
        entry_points = archive.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    assert sorted(requires) == ["httpx", "pydantic", "tqdm"]  # tqdm: digits eval's progress bar
    assert {n.split("/")[0] for n in names if not n.endswith(".dist-info/" + n.split("/")[-1])} == {
        "digits_client"
    }
    assert "digits = digits_client.cli:main" in entry_points


def reading_body(**changes: object) -> dict[str, object]:
    """A /read answer as the service sends it (the server's own example, two digits)."""
    digits = [
        {
            "digit": digit,
            "confidence": 0.99,
            "probabilities": [0.99 if d == digit else 0.001 for d in range(10)],
            "box": {"x": x, "y": 30, "width": 41, "height": 66},
        }
        for digit, x in ((0, 12), (2, 60))
    ]
    body: dict[str, object] = {
        "number": "02",
        "confidence": 0.97,
        "uncertain": False,
        "digits": digits,
        "model": {"name": "default", "version": "1"},
        "timing_ms": {"queue": 0.1, "inference": 1.9, "total": 6.2},
        "batch_size": 7,
        "candidates": 7,
    }
    return body | changes


def test_a_reading_keeps_its_leading_zero_and_every_digits_box() -> None:
    reading = answers.Reading.model_validate(reading_body())
    assert reading.number == "02"  # a string: a ZIP code's leading zero is kept
    assert [d.digit for d in reading.digits] == [0, 2]
    assert reading.digits[1].box == answers.Box(x=60, y=30, width=41, height=66)
    assert reading.digits[0].image is None
    assert (reading.model.name, reading.batch_size, reading.candidates) == ("default", 7, 7)


def test_a_reading_takes_what_a_newer_server_adds_and_what_an_older_leaves_out() -> None:
    body = reading_body(alternatives=[{"number": "08"}])
    del body["candidates"]
    body["digits"][0]["box"]["angle"] = 3  # type: ignore[index]
    body["digits"][0]["image"] = "iVBORw0KGgo="  # type: ignore[index]
    reading = answers.Reading.model_validate(body)
    assert reading.candidates is None
    assert reading.model_extra == {"alternatives": [{"number": "08"}]}
    assert reading.digits[0].box.model_extra == {"angle": 3}
    assert reading.digits[0].image == "iVBORw0KGgo="


def test_a_prediction_says_how_many_digits_were_seen_and_one_from_an_older_server() -> None:
    body = {
        "digit": 7,
        "confidence": 0.99,
        "probabilities": [0.001] * 9 + [0.99],
        "uncertain": False,
        "model": {"name": "default", "version": "1"},
        "timing_ms": {"queue": 0.1, "inference": 1.0, "total": 2.0},
        "batch_size": 1,
    }
    assert answers.Prediction.model_validate(body).digits_seen == 1
    assert answers.Prediction.model_validate(body | {"digits_seen": 3}).digits_seen == 3
