"""``digits`` (``digits_client.cli``) against the real service in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from digits_client.cli import build_parser, format_table, main, percent

from tests.client.conftest import blank_png, number_picture
from tests.service.conftest import (
    REPO,
    SELFTEST_DIR,
    copy_bundled,
    free_port,
    serve_in_subprocess,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def digits_folder(tmp_path: Path) -> Path:
    """Shipped MNIST digits 0, 3 and 8 under plain names, plus a file that is not an image."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for digit in (8, 0, 3):
        source = sorted(SELFTEST_DIR.glob(f"digit{digit}_mnist*.png"))[0]
        shutil.copy(source, folder / f"scan-{digit}.png")
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    return folder


def table_rows(text: str) -> list[list[str]]:
    lines = text.strip().splitlines()
    return [line.split() for line in lines]


def test_predict_folder_and_file_print_a_table(
    service_url: str, digits_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    single = sorted(SELFTEST_DIR.glob("digit6_mnist*.png"))[0]
    code = main(["predict", str(digits_folder), str(single), "--url", service_url])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = table_rows(out)
    assert rows[0] == ["FILE", "DIGIT", "CONFIDENCE", "UNCERTAIN", "MODEL"]
    # The folder's images sorted by name (the .txt is not an image), then the file.
    assert [Path(r[0]).name for r in rows[1:]] == [
        "scan-0.png",
        "scan-3.png",
        "scan-8.png",
        single.name,
    ]
    assert [r[1] for r in rows[1:]] == ["0", "3", "8", "6"]
    assert all(r[2].endswith("%") and r[3] in ("yes", "no") for r in rows[1:])
    assert {r[4] for r in rows[1:]} == {"lenet5/1"}
    # Aligned: every column starts at the same place on every line.
    lines = out.strip().splitlines()
    starts = {line.index(line.split()[1], len(line.split()[0])) for line in lines}
    assert len(starts) == 1


def test_predict_json_prints_one_object_per_file(
    service_url: str, digits_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["predict", str(digits_folder), "--json", "--model", "mlp", "--url", service_url])
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["file"]).name for r in records] == ["scan-0.png", "scan-3.png", "scan-8.png"]
    assert [r["digit"] for r in records] == [0, 3, 8]
    assert all(r["model"] == {"name": "mlp", "version": "1"} for r in records)
    assert all(len(r["probabilities"]) == 10 for r in records)


def test_predict_every_model(
    service_url: str, digits_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scan = str(digits_folder / "scan-3.png")
    assert main(["predict", scan, "--model", "all", "--url", service_url]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert row.split()[1] == "3"
    assert "all, agree" in row and "lenet5=3" in row and "mlp=3" in row
    assert main(["predict", scan, "--model", "all", "--json", "--url", service_url]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["digit"] == 3 and record["agree"] is True and len(record["predictions"]) == 2


def test_a_file_that_is_not_an_image_gets_an_error_row_and_exit_1(
    service_url: str, digits_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (digits_folder / "broken.png").write_bytes(b"this is not a PNG")
    code = main(["predict", str(digits_folder), "--url", service_url])
    captured = capsys.readouterr()
    assert code == 1
    rows = {Path(r[0]).name: r for r in table_rows(captured.out)[1:]}
    assert rows["broken.png"][1] == "error"
    assert rows["scan-3.png"][1] == "3"  # the others are still read
    assert "1 of 4 files could not be read" in captured.err

    assert main(["predict", str(digits_folder), "--json", "--url", service_url]) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    broken = next(r for r in records if r["file"].endswith("broken.png"))
    assert broken["error"]["status"] == 400 and broken["error"]["code"]


def test_a_folder_image_in_a_format_the_service_refuses_is_sent_and_its_answer_shown(
    service_url: str, digits_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Which formats the service reads is the service's to say (one list, in the service)."""
    (digits_folder / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (digits_folder / ".hidden.png").write_bytes(b"")  # dotfiles are never picked up
    code = main(["predict", str(digits_folder), "--url", service_url, "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [Path(line["file"]).name for line in lines] == [
        "drawing.svg",
        "scan-0.png",
        "scan-3.png",
        "scan-8.png",
    ]
    assert lines[0]["error"]["status"] == 400 and lines[0]["error"]["code"] == "not_an_image"


def test_unreachable_service_is_a_clear_message_and_exit_1(
    digits_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["predict", str(digits_folder), "--url", url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"cannot reach {url}" in captured.err
    assert "Is the digits service running there?" in captured.err
    assert main(["models", "--url", url]) == 1


def test_unknown_model_stops_the_run(
    service_url: str, digits_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", str(digits_folder), "--model", "nosuch", "--url", service_url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "404 not_found" in captured.err


@pytest.mark.parametrize(
    "arguments",
    [
        [],
        ["predict"],
        ["predict", "/no/such/file.png"],
        ["predict", "{empty}"],
        ["predict", "{scans}", "--model", "all", "--version", "1"],
        ["models", "--timeout", "soon"],
    ],
)
def test_usage_errors_exit_2(
    arguments: list[str],
    digits_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "empty").mkdir()
    argv = [a.format(empty=tmp_path / "empty", scans=digits_folder) for a in arguments]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "usage: digits" in capsys.readouterr().err


@pytest.fixture
def numbers_folder(tmp_path: Path) -> Path:
    """Two pictures of numbers (307 and 21) and a blank page, under plain names."""
    folder = tmp_path / "forms"
    folder.mkdir()
    (folder / "a-307.png").write_bytes(number_picture([3, 0, 7]).png)
    (folder / "b-21.png").write_bytes(number_picture([2, 1], ink_on_paper=False).png)
    (folder / "c-blank.png").write_bytes(blank_png())
    return folder


def test_read_prints_a_number_per_file_and_an_error_row_for_a_blank_page(
    service_url: str, numbers_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["read", str(numbers_folder), "--url", service_url])
    captured = capsys.readouterr()
    assert code == 1  # the blank page could not be read
    rows = table_rows(captured.out)
    assert rows[0] == ["FILE", "NUMBER", "CONFIDENCE", "UNCERTAIN", "MODEL"]
    assert [Path(r[0]).name for r in rows[1:]] == ["a-307.png", "b-21.png", "c-blank.png"]
    assert [r[1] for r in rows[1:3]] == ["307", "21"]
    assert all(r[2].endswith("%") and r[3] in ("yes", "no") for r in rows[1:3])
    assert {r[4] for r in rows[1:3]} == {"lenet5/1"}
    assert rows[3][1:3] == ["error", "no_digit:"]
    assert "1 of 3 files could not be read" in captured.err


def test_read_json_prints_one_object_per_file_with_length_and_model(
    service_url: str, numbers_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(numbers_folder / "a-307.png"), str(numbers_folder / "c-blank.png")]
    arguments = ["read", *files, "--length", "3", "--model", "mlp", "--version", "1"]
    assert main([*arguments, "--json", "--url", service_url]) == 1
    first, blank = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert first["file"] == files[0]
    assert len(first["number"]) == 3 and len(first["digits"]) == 3
    assert first["model"] == {"name": "mlp", "version": "1"}
    assert all(set(d["box"]) >= {"x", "y", "width", "height"} for d in first["digits"])
    assert blank["file"] == files[1]
    assert blank["error"]["status"] == 400 and blank["error"]["code"] == "no_digit"


def test_read_stops_at_an_unknown_model(
    service_url: str, numbers_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["read", str(numbers_folder), "--model", "nosuch", "--url", service_url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "404 not_found" in captured.err


def test_predict_points_to_read_when_a_picture_holds_several_digits(
    service_url: str, numbers_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", str(numbers_folder / "a-307.png"), "--url", service_url]) == 0
    captured = capsys.readouterr()
    assert len(table_rows(captured.out)) == 2  # the table is as ever: one row
    assert "3 digits seen" in captured.err and "digits read" in captured.err


def test_read_arguments() -> None:
    args = build_parser().parse_args(["read", "a.png", "forms/", "--length", "5", "--json"])
    assert (args.command, args.images, args.length, args.json) == (
        "read",
        ["a.png", "forms/"],
        5,
        True,
    )
    assert (args.model, args.version) == (None, None)
    plain = build_parser().parse_args(["read", "a.png", "--model", "mlp", "--version", "2"])
    assert (plain.length, plain.model, plain.version, plain.json) == (None, "mlp", "2", False)


@pytest.mark.parametrize(
    "arguments",
    [
        ["read"],
        ["read", "/no/such/file.png"],
        ["read", "{empty}"],
        ["read", "{image}", "--length", "0"],
        ["read", "{image}", "--length", "-2"],
        ["read", "{image}", "--length", "five"],
        ["read", "{image}", "--length"],
    ],
)
def test_read_usage_errors_exit_2(
    arguments: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    image = tmp_path / "zip.png"
    image.write_bytes(number_picture([1, 2]).png)
    # A port nobody listens on: a usage error must stop the command before it asks anyone.
    argv = [a.format(empty=tmp_path / "empty", image=image) for a in arguments]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--url", f"http://127.0.0.1:{free_port()}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: digits read" in err
    if "--length" in arguments and len(arguments) > 3:
        assert "not a number of digits (1 or more)" in err


def test_models_table_and_json(service_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--url", service_url]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows[0] == [
        "NAME",
        "VERSION",
        "STATUS",
        "DEFAULT",
        "TEST",
        "ACCURACY",
        "PARAMETERS",
        "DEVICE",
    ]
    lenet5, mlp = rows[1], rows[2]
    assert lenet5[:4] == ["lenet5", "1", "ready", "yes"]
    assert mlp[:3] == ["mlp", "1", "ready"] and len(mlp) == 6  # no "yes": not the default
    assert float(lenet5[4].rstrip("%")) > 95.0
    assert int(lenet5[5].replace(",", "")) > 1000
    assert lenet5[6] == "cpu"

    assert main(["models", "--json", "--url", service_url]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["default_model"] == "lenet5"
    assert [m["name"] for m in listing["models"]] == ["lenet5", "mlp"]


def test_the_installed_command_runs_as_a_process(service_url: str, digits_folder: Path) -> None:
    # The URL from the environment, as a user would set it once.
    result = subprocess.run(
        [sys.executable, "-m", "digits_client.cli", "predict", str(digits_folder)],
        cwd=REPO,
        env={**os.environ, "DIGITS_URL": service_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert [r[1] for r in table_rows(result.stdout)[1:]] == ["0", "3", "8"]


def test_table_pads_every_column_but_the_free_text_last() -> None:
    lines = format_table(
        ["A", "BB", "C"], [["long cell", "x", "y"], ["z", "an error that runs long"]]
    )
    assert lines == [
        "A          BB  C",
        "long cell  x   y",
        "z          an error that runs long",
    ]


def test_percentages_never_round_to_certainty() -> None:
    assert [percent(p) for p in (1.0, 0.99996, 0.9994, 0.5, 0.00001, 0.0)] == [
        "100.0%",
        ">99.9%",
        "99.9%",
        "50.0%",
        "<0.1%",
        "0.0%",
    ]
    assert percent(0.99999, 2) == ">99.99%"


def test_reload_lists_what_was_loaded_kept_and_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    copy_bundled(models, "lenet5")
    with serve_in_subprocess(models, tmp_path / "server.log", DIGITS_DEFAULT_MODEL="lenet5") as (
        url,
        _,
    ):
        copy_bundled(models, "mlp")
        assert main(["reload", "--url", url]) == 0
        assert table_rows(capsys.readouterr().out) == [
            ["NAME", "VERSION", "OUTCOME"],
            ["mlp", "1", "loaded"],
            ["lenet5", "1", "unchanged"],
        ]
        shutil.copytree(models / "mlp" / "1", models / "mlp" / "2")
        (models / "mlp" / "2" / "model.pt").write_bytes(b"not torchscript")
        assert main(["reload", "--url", url]) == 1
        captured = capsys.readouterr()
        failed = [row for row in table_rows(captured.out) if row[:2] == ["mlp", "2"]]
        assert failed and failed[0][2] == "failed:"
        assert "1 packages failed to load; the older ones still serve" in captured.err
