"""``digits eval``: its numbers on hand-made answers, and end to end against the real service
(``service_url``: lenet5, the default, and mlp) on small labelled folders made here."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from digits_client import DigitsClient, DigitsError
from digits_client.cli import main
from digits_client.evaluation import (
    THUMBNAIL_MAX_BYTES,
    Judgement,
    bin_of,
    browser_image_type,
    confusion_matrix,
    expected_calibration_error,
    fate_of,
    model_result,
    original_data_uri,
    per_digit,
    reliability_bins,
)
from digits_client.labelled import LabelledImage

from tests.client.conftest import blank_png, number_picture
from tests.service.conftest import SELFTEST_DIR, free_port
from training.calibration import expected_calibration_error as training_ece

# ---- the metrics, on hand-made answers ------------------------------------------------------


def test_bins_are_equal_width_over_0_to_1_with_1_in_the_last() -> None:
    assert bin_of(0.0) == 0  # nothing is below the first bin
    assert bin_of(1 / 15) == 0  # (0, 1/15]
    assert bin_of(1 / 15 + 1e-9) == 1
    assert bin_of(0.5) == 7  # (7/15, 8/15]
    assert bin_of(14 / 15 + 1e-9) == 14
    assert bin_of(1.0) == 14


def test_reliability_and_ece_by_hand() -> None:
    answers = [(0.95, True), (0.95, False), (0.55, True), (1.0, True)]
    bins = reliability_bins(answers)
    assert len(bins) == 15
    assert [b.count for b in bins] == [0] * 8 + [1] + [0] * 5 + [3]
    last, middle = bins[14], bins[8]
    assert (last.lower, last.upper) == (14 / 15, 1.0)
    assert last.correct == 2 and last.accuracy == pytest.approx(2 / 3)
    assert last.confidence == pytest.approx((0.95 + 0.95 + 1.0) / 3)
    assert middle.correct == 1 and middle.confidence == pytest.approx(0.55)
    assert bins[0].accuracy is None and bins[0].confidence is None
    # |2 - 2.9| for the last bin, |1 - 0.55| for the other, over 4 answers.
    assert expected_calibration_error(bins) == pytest.approx((0.9 + 0.45) / 4)
    assert expected_calibration_error(reliability_bins([])) is None


def test_ece_is_the_one_training_reports() -> None:
    generator = torch.Generator().manual_seed(18)
    logits = torch.randn(500, 10, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, 10, (500,), generator=generator)
    confidence, predicted = logits.softmax(dim=1).max(dim=1)
    answers = [
        (float(c), bool(p == y)) for c, p, y in zip(confidence, predicted, labels, strict=True)
    ]
    ours = expected_calibration_error(reliability_bins(answers))
    assert ours == pytest.approx(training_ece(logits, labels), abs=1e-12)


def test_confusion_rows_are_true_digits_and_columns_answers() -> None:
    matrix = confusion_matrix([(3, 3), (3, 5), (3, 5), (9, 4)])
    assert matrix[3][3] == 1 and matrix[3][5] == 2 and matrix[9][4] == 1
    assert matrix[5][3] == 0
    assert sum(map(sum, matrix)) == 4
    digits = per_digit(matrix, refused=[0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    assert (digits[3].count, digits[3].correct) == (4, 1)  # the refused one is a miss
    assert digits[3].accuracy == pytest.approx(0.25)
    assert (digits[9].count, digits[9].correct, digits[9].accuracy) == (1, 0, 0.0)
    assert digits[0].count == 0 and digits[0].accuracy is None


def _image(label: str, name: str) -> LabelledImage:
    return LabelledImage(Path("/nowhere") / name, label)


def test_model_result_by_hand() -> None:
    answered = [
        (_image("1", "a.png"), Judgement("m/1", "1", 0.99, False)),
        (_image("1", "b.png"), Judgement("m/1", "7", 0.90, False, ("AAAA",))),
        (_image("2", "c.png"), Judgement("m/1", "2", 0.40, True)),
        (_image("7", "d.png"), Judgement("m/1", "1", 0.95, True)),
    ]
    result = model_result("m/1", answered, [_image("2", "e.png")], worst=5)
    assert (result.images, result.answered, result.refused, result.correct) == (5, 4, 1, 2)
    assert result.accuracy == pytest.approx(2 / 5)
    assert result.confident == 2 and result.confident_accuracy == pytest.approx(1 / 2)
    assert result.uncertain_share == pytest.approx(2 / 4)
    assert result.wrong_length is None
    assert [(d.count, d.correct) for d in result.per_digit[1:3]] == [(2, 1), (2, 1)]
    assert result.confusion[1][7] == 1 and result.confusion[7][1] == 1
    # The most confident mistake first; its picture of what the model saw as a data: URI.
    assert [(m.file, m.answer) for m in result.worst] == [
        (str(Path("/nowhere/d.png")), "1"),
        (str(Path("/nowhere/b.png")), "7"),
    ]
    assert result.worst[1].seen == ["data:image/png;base64,AAAA"]
    assert result.worst[0].original is None  # no such file
    assert len(model_result("m/1", answered, [], worst=1).worst) == 1


def test_model_result_of_numbers_aligns_digits_of_readings_as_long_as_the_label() -> None:
    answered = [
        (_image("0412", "a.png"), Judgement("m/1", "0412", 0.9, False)),
        (_image("78", "b.png"), Judgement("m/1", "73", 0.8, False)),
        (_image("510", "c.png"), Judgement("m/1", "51", 0.7, False)),
    ]
    result = model_result("m/1", answered, [_image("5", "d.png")], read=True)
    assert (result.images, result.correct, result.wrong_length) == (4, 1, 1)
    counts = {d.digit: (d.count, d.correct) for d in result.per_digit if d.count}
    assert counts == {0: (1, 1), 1: (1, 1), 2: (1, 1), 4: (1, 1), 7: (1, 1), 8: (1, 0)}
    assert result.confusion[8][3] == 1
    assert [m.label for m in result.worst] == ["78", "510"]


def test_originals_are_embedded_only_when_browsers_show_them_and_small(tmp_path: Path) -> None:
    png = sorted(SELFTEST_DIR.glob("digit7_mnist*.png"))[0]
    assert (original_data_uri(png) or "").startswith("data:image/png;base64,")
    jpeg = SELFTEST_DIR / "digit5_photo.jpg"
    assert (original_data_uri(jpeg) or "").startswith("data:image/jpeg;base64,")
    assert browser_image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert browser_image_type(b"GIF89a...") == "image/gif"
    assert browser_image_type(b"BM....") == "image/bmp"
    assert browser_image_type(b"II*\x00 a TIFF") is None
    tiff = tmp_path / "scan.png"  # the name does not matter: the bytes do
    tiff.write_bytes(b"II*\x00 a TIFF")
    assert original_data_uri(tiff) is None
    large = tmp_path / "large.png"
    large.write_bytes(png.read_bytes() + b"\x00" * THUMBNAIL_MAX_BYTES)
    assert original_data_uri(large) is None


@pytest.mark.parametrize(
    ("status", "code", "fate"),
    [
        (400, "not_an_image", "undecodable"),
        (400, "corrupt_image", "undecodable"),
        (400, "empty_image", "undecodable"),
        (413, "image_too_large", "undecodable"),
        (415, "unsupported_media_type", "undecodable"),
        (400, "no_digit", "refused"),
        (400, "too_many_digits", "refused"),
        (500, "inference_failed", "failed"),
        (503, "overloaded", "failed"),
        (504, "deadline_exceeded", "failed"),
    ],
)
def test_what_each_error_counts_as(status: int, code: str, fate: str) -> None:
    assert fate_of(DigitsError(status, code, "")) == fate


# ---- end to end, against the real service ---------------------------------------------------


def shipped(digit: int) -> Path:
    """The shipped MNIST test image of ``digit``."""
    return sorted(SELFTEST_DIR.glob(f"digit{digit}_mnist*.png"))[0]


#: Put in the wrong class folders on purpose: (the digit in the image, its folder).
MISFILED = ((3, 5), (7, 1))


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    """Each shipped MNIST digit in its class folder, and two more copies filed wrong: 12
    images, 10 right."""
    root = tmp_path / "labelled"
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True)
        shutil.copy(shipped(digit), root / str(digit))
    for digit, folder in MISFILED:
        shutil.copy(shipped(digit), root / str(folder))
    return root


def run_eval(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["eval", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def load(prefix: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(prefix.with_suffix(".json").read_text())
    return report


def hand_count(url: str, root: Path, model: str) -> list[tuple[Path, int, int, float]]:
    """(file, label, the model's digit, its confidence) for each image, asked one by one."""
    with DigitsClient(url) as client:
        return [
            (file, int(file.parent.name), p.digit, p.confidence)
            for file in sorted(root.glob("*/*.png"))
            for p in [client.predict(file, model=model)]
        ]


def hand_ece(answers: list[tuple[float, bool]]) -> float:
    """The ECE written out: per bin, |right - summed confidence|, over the answers."""
    gaps: dict[int, list[float]] = {}
    for confidence, right in answers:
        index = min(max(math.ceil(confidence * 15), 1), 15) - 1
        gap = gaps.setdefault(index, [0.0, 0.0])
        gap[0] += right
        gap[1] += confidence
    return sum(abs(hits - total) for hits, total in gaps.values()) / len(answers)


def assert_self_contained(html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "<link" not in html and "<script" not in html
    assert "<svg" in html and "data:image/png;base64," in html


@pytest.mark.slow
def test_eval_of_a_folder_matches_a_hand_count(
    service_url: str, labelled_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with DigitsClient(service_url) as client:
        for digit in range(10):
            assert client.predict(shipped(digit)).digit == digit  # lenet5 reads them right
    answers = hand_count(service_url, labelled_folder, "lenet5")
    prefix = tmp_path / "out" / "report"

    code, out, err = run_eval(
        [str(labelled_folder), "--url", service_url, "--report", str(prefix)], capsys
    )
    assert code == 0, err
    report = load(prefix)
    assert report["source"] == str(labelled_folder)
    assert report["endpoint"] == "/predict" and report["model"] is None
    assert (report["files"], report["sent"], report["skipped"], report["failed"]) == (
        12,
        12,
        [],
        [],
    )
    [result] = report["models"]
    assert result["model"] == "lenet5/1"
    assert (result["images"], result["answered"], result["refused"]) == (12, 12, 0)
    assert result["correct"] == 10 and result["accuracy"] == pytest.approx(10 / 12)
    counts = [d["count"] for d in result["per_digit"]]
    assert counts == [1, 2, 1, 1, 1, 2, 1, 1, 1, 1]
    assert [d["correct"] for d in result["per_digit"]] == [1] * 10
    expected_confusion = [[int(t == a) for a in range(10)] for t in range(10)]
    for digit, folder in MISFILED:
        expected_confusion[folder][digit] = 1
    assert result["confusion"] == expected_confusion
    # The mistakes, the most confident first, each with its pictures.
    wrong = sorted((-c, str(f)) for f, label, d, c in answers if d != label)
    assert [m["file"] for m in result["worst"]] == [file for _, file in wrong]
    assert [(m["label"], m["answer"]) for m in result["worst"]] == [
        (Path(f).parent.name, Path(f).name[5]) for _, f in wrong
    ]
    for mistake in result["worst"]:
        assert mistake["original"].startswith("data:image/png;base64,")
        [seen] = mistake["seen"]
        assert seen.startswith("data:image/png;base64,")
    hits = [(c, d == label) for _, label, d, c in answers]
    assert sum(b["count"] for b in result["reliability"]) == 12
    assert result["ece"] == pytest.approx(hand_ece(hits))

    html = prefix.with_suffix(".html").read_text()
    assert_self_contained(html)
    assert str(labelled_folder) in html and service_url in html

    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "IMAGES", "ACCURACY", "WORST", "DIGIT", "ECE", "UNCERTAIN"]
    # 1 and 5 are each half right: the smaller digit is named.
    uncertain = f"{100 * result['uncertain_share']:.1f}%"
    assert lines[1].split() == [
        "lenet5/1",
        "12",
        "83.3%",
        "1",
        "(50.0%)",
        f"{result['ece']:.3f}",
        uncertain,
    ]
    assert lines[2:] == [f"report: {prefix}.html", f"report: {prefix}.json"]


@pytest.mark.slow
def test_every_model_gets_its_own_section(
    service_url: str, labelled_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "every"
    code, out, err = run_eval(
        [
            str(labelled_folder),
            "--model",
            "all",
            "--json",
            "--url",
            service_url,
            "--report",
            str(prefix),
        ],
        capsys,
    )
    assert code == 0, err
    printed = json.loads(out)  # --json: the report itself on stdout; the paths on stderr
    assert printed == load(prefix)
    assert f"report: {prefix}.html" in err
    assert [r["model"] for r in printed["models"]] == ["lenet5/1", "mlp/1"]
    for result in printed["models"]:
        name = result["model"].split("/")[0]
        answers = hand_count(service_url, labelled_folder, name)
        assert result["images"] == 12
        assert result["correct"] == sum(d == label for _, label, d, _ in answers)
        assert sum(map(sum, result["confusion"])) == 12
    html = prefix.with_suffix(".html").read_text()
    assert "<h2>lenet5/1</h2>" in html and "<h2>mlp/1</h2>" in html


@pytest.mark.slow
def test_eval_of_numbers_with_read(
    service_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "numbers"
    folder.mkdir()
    pictures = {  # file: (the digits drawn, the label in the CSV)
        "0412.png": ([0, 4, 1, 2], "0412"),
        "73.png": ([7, 3], "78"),  # labelled wrong: the 8 is read as 3
        "51.png": ([5, 1], "510"),  # labelled with another length: no digits aligned
    }
    with DigitsClient(service_url) as client:
        for name, (digits, _) in pictures.items():
            png = number_picture(digits).png
            (folder / name).write_bytes(png)
            assert client.read(png).number == "".join(map(str, digits))
    (folder / "blank.png").write_bytes(blank_png())  # no digit in it: a miss
    table = folder / "labels.csv"
    rows = [f"{name},{label}" for name, (_, label) in pictures.items()]
    table.write_text("file,label\n" + "\n".join([*rows, "blank.png,5"]) + "\n")
    prefix = tmp_path / "read"

    code, out, err = run_eval(
        [str(table), "--read", "--url", service_url, "--report", str(prefix)], capsys
    )
    assert code == 0, err
    report = load(prefix)
    assert report["endpoint"] == "/read"
    [result] = report["models"]
    assert (result["images"], result["answered"], result["refused"]) == (4, 3, 1)
    assert result["correct"] == 1 and result["accuracy"] == pytest.approx(1 / 4)
    assert result["wrong_length"] == 1
    counts = {d["digit"]: (d["count"], d["correct"]) for d in result["per_digit"] if d["count"]}
    assert counts == {0: (1, 1), 1: (1, 1), 2: (1, 1), 4: (1, 1), 7: (1, 1), 8: (1, 0)}
    assert result["confusion"][8][3] == 1
    assert {m["file"] for m in result["worst"]} == {str(folder / "73.png"), str(folder / "51.png")}
    confidences = [m["confidence"] for m in result["worst"]]
    assert confidences == sorted(confidences, reverse=True)
    for mistake in result["worst"]:
        assert mistake["original"].startswith("data:image/png;base64,")
        assert len(mistake["seen"]) == len(mistake["answer"])  # each digit the model saw
    assert_self_contained(prefix.with_suffix(".html").read_text())
    assert out.splitlines()[1].split()[:3] == ["lenet5/1", "4", "25.0%"]

    # --length goes to the service as it does for `digits read`.
    table.write_text("0412.png,0412\n")
    code, _, err = run_eval(
        [str(table), "--read", "--length", "4", "--url", service_url, "--report", str(prefix)],
        capsys,
    )
    assert code == 0, err
    assert load(prefix)["length"] == 4 and load(prefix)["models"][0]["correct"] == 1


@pytest.mark.slow
def test_files_that_cannot_be_used_are_listed_and_not_counted(
    service_url: str, labelled_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (labelled_folder / "4" / "broken.png").write_bytes(b"these bytes are not an image")
    (labelled_folder / "2" / "notes.txt").write_text("not an image by its name")
    prefix = tmp_path / "bad"
    code, out, err = run_eval(
        [str(labelled_folder), "--url", service_url, "--report", str(prefix)], capsys
    )
    assert code == 0, err
    report = load(prefix)
    skipped = {s["file"]: s["reason"] for s in report["skipped"]}
    assert skipped.keys() == {
        str(labelled_folder / "2" / "notes.txt"),
        str(labelled_folder / "4" / "broken.png"),
    }
    assert "not_an_image" in skipped[str(labelled_folder / "4" / "broken.png")]
    assert skipped[str(labelled_folder / "2" / "notes.txt")] == "not an image file (by its name)"
    [result] = report["models"]
    assert result["images"] == 12 and result["correct"] == 10  # the broken file not counted
    assert report["files"] == 14 and report["sent"] == 13
    assert "skipped, not counted: 2 of 14 files" in err
    assert "broken.png" in err and "notes.txt" in err
    assert "broken.png" in prefix.with_suffix(".html").read_text()

    # --strict: a file set aside before sending refuses the run (2) ...
    code, out, err = run_eval(
        [str(labelled_folder), "--strict", "--url", service_url, "--report", str(prefix)], capsys
    )
    assert code == 2 and out == ""
    assert "1 file cannot be used (--strict)" in err and "notes.txt" in err
    # ... and a file the service cannot decode fails it (1), the report written all the same.
    (labelled_folder / "2" / "notes.txt").unlink()
    prefix.with_suffix(".json").unlink()
    code, out, err = run_eval(
        [str(labelled_folder), "--strict", "--url", service_url, "--report", str(prefix)], capsys
    )
    assert code == 1
    assert "the service could not decode some files (--strict)" in err
    assert [s["file"] for s in load(prefix)["skipped"]] == [
        str(labelled_folder / "4" / "broken.png")
    ]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"3/a.png": b"x", "12/b.png": b"x"}, "whole numbers are read with `digits eval --read`"),
        ({"3/a.png": b"x", "x/b.png": b"x"}, "labels must be single digits 0-9"),
        ({"3/a.png": b"x", "5/notes.txt": b"x"}, "empty class folders (no usable images): 5/"),
        ({"a.png": b"x"}, "has no class folders"),
        ({"labels.csv": b"a.png,-1\n", "a.png": b"x"}, "line 1: '-1'"),
    ],
)
def test_bad_data_is_refused_before_anything_is_sent(
    tmp_path: Path, files: dict[str, bytes], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    path = tmp_path / "labels.csv" if "labels.csv" in files else tmp_path
    nowhere = f"http://127.0.0.1:{free_port()}"  # never reached: the data is refused first
    code, out, err = run_eval(
        [str(path), "--url", nowhere, "--report", str(tmp_path / "r")], capsys
    )
    assert code == 2 and out == ""
    assert err.startswith("digits eval: ") and message in err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    "options",
    [
        ["--model", "all", "--read"],
        ["--model", "all", "--version", "1"],
        ["--length", "3"],
        ["--concurrency", "0"],
    ],
)
def test_options_that_do_not_go_together_are_usage_errors(
    labelled_folder: Path, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["eval", str(labelled_folder), *options])
    assert exited.value.code == 2
    assert "digits eval: error:" in capsys.readouterr().err


@pytest.mark.slow
def test_errors_that_would_fail_every_file_stop_the_run(
    service_url: str, labelled_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "stopped"
    arguments = [str(labelled_folder), "--report", str(prefix)]
    code, out, err = run_eval([*arguments, "--model", "nosuch", "--url", service_url], capsys)
    assert code == 1 and out == ""
    assert "404 not_found" in err and "no model nosuch" in err
    assert not prefix.with_suffix(".json").exists()
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, out, err = run_eval([*arguments, "--url", nowhere], capsys)
    assert code == 1 and f"cannot reach {nowhere}" in err
