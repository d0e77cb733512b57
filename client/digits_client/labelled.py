"""A user's labelled images: a folder of class folders, or a CSV of ``file,label``.

    digits/0/scan-001.png  digits/0/...  digits/9/...     one folder per digit
    labels.csv:  file,label                                   or a CSV beside the images
                 cheques/0412.jpg,412

``digits eval`` and ``python -m training finetune`` read their data here, so both take the
same forms and refuse the same mistakes. Labels are single digits ``0``..``9``; with
``numbers=True`` (``digits eval --read``) a CSV's labels may be whole numbers, leading zeros
kept ("0412" is four digits).

Files that cannot be used (not an image by name, empty, unreadable, missing) are listed in
:attr:`LabelledSet.skipped`, or refused with ``strict=True``; wrong labels and empty classes
are a :class:`LabelledDataError` whatever ``strict`` says, since no run can mean what they say.
"""

from __future__ import annotations

import csv
import mimetypes
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DIGITS = tuple(str(digit) for digit in range(10))
#: How many problems of one kind a message names before it says "and N more".
_NAMED = 5
_DIGIT_LABEL = re.compile(r"[0-9]")
_NUMBER_LABEL = re.compile(r"[0-9]+")


class LabelledDataError(ValueError):
    """The data cannot be used as given; the message says what to change."""


@dataclass(frozen=True)
class LabelledImage:
    """One image file and what is written in it."""

    path: Path
    label: str  # "7"; a whole number ("0412") only with numbers=True


@dataclass(frozen=True)
class Skipped:
    """A file that is not used, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class LabelledSet:
    """The usable images of a labelled folder or CSV, in a stable order, and the rest."""

    source: Path
    images: list[LabelledImage]
    skipped: list[Skipped]

    def counts(self) -> Counter[str]:
        """Images per label."""
        return Counter(image.label for image in self.images)

    def require_every_digit(self, minimum: int) -> None:
        """Raise :class:`LabelledDataError` unless each digit 0..9 has ``minimum`` images."""
        require_every_digit(self.counts(), minimum, str(self.source))


def require_every_digit(counts: Mapping[str, int], minimum: int, where: str) -> None:
    """Raise :class:`LabelledDataError` naming ``where`` unless each digit 0..9 has at least
    ``minimum`` in ``counts`` (images per label)."""
    absent = [digit for digit in DIGITS if counts.get(digit, 0) == 0]
    few = [f"{d} has {counts[d]}" for d in DIGITS if 0 < counts.get(d, 0) < minimum]
    problems = []
    if absent:
        problems.append(f"no images of {', '.join(absent)}")
    if few:
        problems.append(f"too few images: {', '.join(few)} (at least {minimum} needed)")
    if problems:
        raise LabelledDataError(f"{where}: {'; '.join(problems)}")


def read_labelled(path: Path, *, numbers: bool = False, strict: bool = False) -> LabelledSet:
    """The labelled images at ``path``: a folder of class folders ``0/``..``9/``, or a CSV.

    Raises :class:`LabelledDataError` for labels that are not digits (or, with ``numbers``,
    whole numbers), an empty class folder, no images at all, a malformed CSV, and, with
    ``strict``, any file that would be skipped.
    """
    if path.is_dir():
        labelled = _read_folder(path, numbers=numbers)
    elif path.is_file():
        labelled = _read_csv(path, numbers=numbers)
    else:
        raise LabelledDataError(f"no such folder or CSV file: {path}")
    if strict and labelled.skipped:
        raise LabelledDataError(
            f"{path}: {_files(len(labelled.skipped))} cannot be used (--strict): "
            + _listed(f"{s.path} ({s.reason})" for s in labelled.skipped)
        )
    if not labelled.images:
        raise LabelledDataError(f"{path}: no usable images")
    return labelled


def is_image_name(path: Path) -> bool:
    """Whether a file's name says it is an image (``image/*`` in the system's MIME table)."""
    kind, _ = mimetypes.guess_type(path.name, strict=False)
    return (kind or "").startswith("image/")


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def _listed(items: Iterable[str]) -> str:
    named = list(items)
    text = ", ".join(named[:_NAMED])
    return text + (f" and {len(named) - _NAMED} more" if len(named) > _NAMED else "")


def _label_error(
    source: Path, wrong: Sequence[tuple[str, str]], numbers: bool
) -> LabelledDataError:
    """``wrong``: (where, label) pairs."""
    expected = "whole numbers (digits only)" if numbers else "single digits 0-9"
    hint = ""
    if not numbers and all(_NUMBER_LABEL.fullmatch(label) for _, label in wrong):
        hint = "; whole numbers are read with `digits eval --read`"
    found = _listed(f"{where}: '{label}'" for where, label in wrong)
    return LabelledDataError(f"{source}: labels must be {expected}, found {found}{hint}")


def _usable(path: Path) -> str | None:
    """Why ``path`` cannot be sent, or ``None`` when it can."""
    if not path.is_file():
        return "no such file" if not path.exists() else "not a file"
    if not is_image_name(path):
        return "not an image file (by its name)"
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if size == 0:
        return "empty file"
    if not os.access(path, os.R_OK):
        return "unreadable: permission denied"
    return None


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _read_folder(root: Path, *, numbers: bool) -> LabelledSet:
    pattern = _NUMBER_LABEL if numbers else _DIGIT_LABEL
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    wrong = [("folder", p.name) for p in folders if not pattern.fullmatch(p.name)]
    if wrong:
        raise _label_error(root, wrong, numbers)
    if not folders:
        raise LabelledDataError(
            f"{root} has no class folders: put each digit's images in {root}/0/ .. "
            f"{root}/9/, or give a CSV of file,label"
        )
    images: list[LabelledImage] = []
    skipped = [
        Skipped(p, "not in a class folder")
        for p in sorted(root.iterdir())
        if p.is_file() and not p.name.startswith(".")
    ]
    empty: list[str] = []
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, root))
        found = 0
        for file in files:
            reason = _usable(file)
            if reason is None:
                images.append(LabelledImage(file, folder.name))
                found += 1
            else:
                skipped.append(Skipped(file, reason))
        if not found:
            empty.append(f"{folder.name}/")
    if empty:
        raise LabelledDataError(
            f"{root}: empty class folders (no usable images): {_listed(empty)}; add images "
            "or remove the folders"
        )
    return LabelledSet(root, images, skipped)


def _read_csv(table: Path, *, numbers: bool) -> LabelledSet:
    pattern = _NUMBER_LABEL if numbers else _DIGIT_LABEL
    try:
        with table.open(newline="", encoding="utf-8-sig") as handle:
            rows = [(number, row) for number, row in enumerate(csv.reader(handle), 1) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelledDataError(f"cannot read the CSV {table}: {exc}") from exc
    if rows and [cell.strip().lower() for cell in rows[0][1]] == ["file", "label"]:
        rows = rows[1:]  # the header
    if not rows:
        raise LabelledDataError(f"{table}: no rows; write one line `file,label` per image")
    malformed = [f"line {n}" for n, row in rows if len(row) != 2]
    if malformed:
        raise LabelledDataError(
            f"{table}: each line must be `file,label` (two columns): {_listed(malformed)}"
        )
    wrong = [(f"line {n}", r[1].strip()) for n, r in rows if not pattern.fullmatch(r[1].strip())]
    if wrong:
        raise _label_error(table, wrong, numbers)
    images: list[LabelledImage] = []
    skipped: list[Skipped] = []
    for _, (name, label) in rows:
        file = table.parent / name.strip()  # relative to the CSV (an absolute path stays)
        reason = _usable(file)
        if reason is None:
            images.append(LabelledImage(file, label.strip()))
        else:
            skipped.append(Skipped(file, reason))
    return LabelledSet(table, images, skipped)
