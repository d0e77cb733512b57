"""``digits_client.labelled``: the labelled folders and CSVs of ``digits eval`` (and of
fine-tuning), and every mistake in them it refuses or sets aside."""

from __future__ import annotations

from pathlib import Path

import pytest
from digits_client.labelled import LabelledDataError, LabelledImage, Skipped, read_labelled

#: read_labelled goes by names and sizes only; what is in the files is the service's to judge.
SOME_BYTES = b"\x89PNG\r\n\x1a\n pretend"


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    """``files``: paths relative to ``root`` and their bytes."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def every_digit(root: Path, per_digit: int = 1) -> Path:
    return make_folder(
        root, {f"{d}/scan-{i}.png": SOME_BYTES for d in range(10) for i in range(per_digit)}
    )


def test_a_folder_of_class_folders(tmp_path: Path) -> None:
    root = make_folder(
        tmp_path / "data",
        {
            "3/b.png": SOME_BYTES,
            "3/a.jpg": SOME_BYTES,
            "7/deeper/c.webp": SOME_BYTES,  # sub-folders of a class folder belong to it
            "7/.hidden.png": SOME_BYTES,  # dotfiles are never picked up
        },
    )
    labelled = read_labelled(root)
    assert labelled.source == root
    assert labelled.images == [
        LabelledImage(root / "3" / "a.jpg", "3"),
        LabelledImage(root / "3" / "b.png", "3"),
        LabelledImage(root / "7" / "deeper" / "c.webp", "7"),
    ]
    assert labelled.skipped == []
    assert labelled.counts() == {"3": 2, "7": 1}


def test_a_csv_with_or_without_a_header_paths_relative_to_it(tmp_path: Path) -> None:
    make_folder(tmp_path / "scans", {"one.png": SOME_BYTES, "two.png": SOME_BYTES})
    elsewhere = make_folder(tmp_path / "elsewhere", {"three.png": SOME_BYTES})
    table = tmp_path / "scans" / "labels.csv"
    rows = f"one.png,1\n two.png , 2 \n\n{elsewhere / 'three.png'},3\n"
    for text in ("file,label\n" + rows, rows, "\ufeffFile, Label\n" + rows):
        table.write_text(text, encoding="utf-8")
        labelled = read_labelled(table)
        assert labelled.images == [
            LabelledImage(tmp_path / "scans" / "one.png", "1"),
            LabelledImage(tmp_path / "scans" / "two.png", "2"),
            LabelledImage(elsewhere / "three.png", "3"),  # an absolute path stays
        ]
        assert labelled.source == table


@pytest.mark.parametrize(
    ("folder", "hint"),
    [("12", True), ("x", False), ("-1", False)],
)
def test_a_class_folder_that_is_not_a_digit_is_refused(
    tmp_path: Path, folder: str, hint: bool
) -> None:
    root = make_folder(tmp_path / "data", {"3/a.png": SOME_BYTES, f"{folder}/b.png": SOME_BYTES})
    with pytest.raises(LabelledDataError) as raised:
        read_labelled(root)
    message = str(raised.value)
    assert "labels must be single digits 0-9" in message
    assert f"folder: '{folder}'" in message
    assert ("digits eval --read" in message) is hint


@pytest.mark.parametrize(
    ("label", "hint"),
    [("12", True), ("-1", False), ("seven", False), ("", False)],
)
def test_a_csv_label_that_is_not_a_digit_is_refused(tmp_path: Path, label: str, hint: bool) -> None:
    make_folder(tmp_path, {"a.png": SOME_BYTES, "b.png": SOME_BYTES})
    table = tmp_path / "labels.csv"
    table.write_text(f"file,label\na.png,4\nb.png,{label}\n")
    with pytest.raises(LabelledDataError) as raised:
        read_labelled(table)
    message = str(raised.value)
    assert f"line 3: '{label}'" in message
    assert ("whole numbers are read with `digits eval --read`" in message) is hint


def test_numbers_takes_whole_numbers_with_their_leading_zeros(tmp_path: Path) -> None:
    make_folder(tmp_path, {"cheque.png": SOME_BYTES, "zip.png": SOME_BYTES})
    table = tmp_path / "labels.csv"
    table.write_text("cheque.png,0412\nzip.png,7\n")
    labelled = read_labelled(table, numbers=True)
    assert [image.label for image in labelled.images] == ["0412", "7"]
    table.write_text("cheque.png,-412\n")
    with pytest.raises(LabelledDataError, match="whole numbers"):
        read_labelled(table, numbers=True)


def test_an_empty_class_folder_is_refused(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", {"3/a.png": SOME_BYTES, "5/notes.txt": b"no images here"})
    (root / "8").mkdir()
    with pytest.raises(LabelledDataError) as raised:
        read_labelled(root)
    assert "empty class folders (no usable images): 5/, 8/" in str(raised.value)


def test_a_folder_without_class_folders_is_refused(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", {"a.png": SOME_BYTES})
    with pytest.raises(LabelledDataError, match="has no class folders"):
        read_labelled(root)


def test_nothing_at_the_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LabelledDataError, match="no such folder or CSV file"):
        read_labelled(tmp_path / "nowhere")


@pytest.mark.parametrize("line", ["a.png", "a.png,3,extra"])
def test_a_malformed_csv_row_is_refused(tmp_path: Path, line: str) -> None:
    make_folder(tmp_path, {"a.png": SOME_BYTES, "b.png": SOME_BYTES})
    table = tmp_path / "labels.csv"
    table.write_text(f"b.png,2\n{line}\n")
    with pytest.raises(LabelledDataError, match=r"two columns\): line 2"):
        read_labelled(table)


def test_an_empty_csv_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text("file,label\n")
    with pytest.raises(LabelledDataError, match="no rows"):
        read_labelled(table)


def test_a_csv_that_is_not_text_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_bytes(b"\xff\xfe\x00\x81 not utf-8")
    with pytest.raises(LabelledDataError, match="cannot read the CSV"):
        read_labelled(table)


def test_files_that_cannot_be_used_are_listed_or_with_strict_refused(tmp_path: Path) -> None:
    root = make_folder(
        tmp_path / "data",
        {
            "1/good.png": SOME_BYTES,
            "1/notes.txt": b"not an image",
            "2/good.png": SOME_BYTES,
            "2/empty.png": b"",
            "stray.png": SOME_BYTES,
        },
    )
    labelled = read_labelled(root)
    assert [image.path for image in labelled.images] == [root / "1/good.png", root / "2/good.png"]
    assert labelled.skipped == [
        Skipped(root / "stray.png", "not in a class folder"),
        Skipped(root / "1/notes.txt", "not an image file (by its name)"),
        Skipped(root / "2/empty.png", "empty file"),
    ]
    with pytest.raises(LabelledDataError) as raised:
        read_labelled(root, strict=True)
    message = str(raised.value)
    assert "3 files cannot be used (--strict)" in message
    assert f"{root / '2/empty.png'} (empty file)" in message


def test_a_missing_csv_file_is_listed_or_with_strict_refused(tmp_path: Path) -> None:
    make_folder(tmp_path, {"here.png": SOME_BYTES})
    table = tmp_path / "labels.csv"
    table.write_text("here.png,1\ngone.png,2\n")
    labelled = read_labelled(table)
    assert labelled.images == [LabelledImage(tmp_path / "here.png", "1")]
    assert labelled.skipped == [Skipped(tmp_path / "gone.png", "no such file")]
    with pytest.raises(LabelledDataError, match=r"1 file cannot be used \(--strict\)"):
        read_labelled(table, strict=True)


def test_a_csv_naming_no_usable_file_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text("gone.png,2\n")
    with pytest.raises(LabelledDataError, match="no usable images"):
        read_labelled(table)


def test_require_every_digit(tmp_path: Path) -> None:
    every_digit(tmp_path / "full", per_digit=2).joinpath("9", "extra.png").write_bytes(b"x")
    read_labelled(tmp_path / "full").require_every_digit(2)

    some = make_folder(tmp_path / "some", {"0/a.png": SOME_BYTES, "4/a.png": SOME_BYTES})
    (some / "4" / "b.png").write_bytes(SOME_BYTES)
    with pytest.raises(LabelledDataError) as raised:
        read_labelled(some).require_every_digit(2)
    message = str(raised.value)
    assert "no images of 1, 2, 3, 5, 6, 7, 8, 9" in message
    assert "too few images: 0 has 1 (at least 2 needed)" in message
    assert "4 has" not in message
