"""``digits eval``: send a labelled set of images to the service and measure its answers.

    images = read_labelled(Path("digits/"))           # class folders 0/..9/, or a CSV
    outcomes = send_all(client, images.images, Question(model="lenet5"))
    report = evaluate(outcomes, images, ...)         # an EvaluationReport (pydantic)

Every image is sent once, concurrently (threads sharing one :class:`DigitsClient`), with a
progress bar on standard error when it is a terminal. Each model's answers are then counted
in plain Python: accuracy overall, per digit and when confident; the confusion matrix; the
reliability of the confidences (15 equal-width bins and the expected calibration error, as
``training/calibration.py`` defines them); and the mistakes made with the most confidence.

What counts: ``images`` are the files the service could decode. A picture in which it found
no digit (``no_digit``, and with ``--read`` ``too_many_digits``) is *refused*: it counts as a
miss. A file it could not decode (empty, not an image, corrupt, too large, a format it does
not read) is *skipped*, as are the files :func:`read_labelled` set aside, and is left out of
every number. Any other per-file error (500, 503 after retries, 504) is *failed*.
"""

from __future__ import annotations

import base64
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict
from tqdm import tqdm

from digits_client.answers import EnsemblePrediction, Prediction, Reading
from digits_client.client import ALL_MODELS, PER_FILE_STATUSES, DigitsClient, DigitsError
from digits_client.labelled import LabelledImage, LabelledSet

#: Bins of the reliability diagram and the ECE: equal-width over (0, 1], as in training.
ECE_BINS = 15
DEFAULT_CONCURRENCY = 8
DEFAULT_WORST = 24
#: An original image is embedded in the report only up to this size (the report stays small).
THUMBNAIL_MAX_BYTES = 256 * 1024
#: 503 (the service is overloaded, or its queue is full): tries after the first, and the
#: wait before the first of them (doubled each time).
RETRIES_503 = 3
RETRY_WAIT_S = 0.2

#: 400 codes for a file the service could not decode as an image.
UNDECODABLE_CODES = frozenset({"empty_body", "empty_image", "not_an_image", "corrupt_image"})
#: 400 codes for a picture the service decoded but found no answer in: a miss.
REFUSED_CODES = frozenset({"no_digit", "too_many_digits"})

#: Image formats a browser shows, by their first bytes: the only originals embedded.
_BROWSER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


# ---- what is asked, and what came back ------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """What each image is sent for: a digit from one model (or every model), or a number."""

    model: str | None = None  # None: the service's default; ALL_MODELS: every model
    version: str | None = None
    read: bool = False  # POST /read: a whole number
    length: int | None = None  # --read only: the number of digits, when known


@dataclass(frozen=True)
class Judgement:
    """One model's answer to one image, as much of it as the report needs."""

    model: str  # "lenet5/1"
    answer: str  # the digit, or with --read the number ("0412")
    confidence: float
    uncertain: bool
    #: What the model saw, as base64 PNG: one 28x28, or with --read one per digit.
    seen: tuple[str, ...] = ()


Fate = Literal["answered", "refused", "undecodable", "failed"]


@dataclass(frozen=True)
class Outcome:
    """What became of one labelled image."""

    image: LabelledImage
    fate: Fate
    judgements: tuple[Judgement, ...] = ()  # "answered": one per model
    error: DigitsError | None = None  # any other fate


# ---- the report -----------------------------------------------------------------------------


class ReportModel(BaseModel):
    model_config = ConfigDict(frozen=True)


class DigitResult(ReportModel):
    """One true digit's row: ``count`` images of it (with --read, digits at aligned
    positions), ``correct`` of them answered right."""

    digit: int
    count: int
    correct: int
    accuracy: float | None  # None when count is 0


class ReliabilityBin(ReportModel):
    """Answers whose confidence lies in (lower, upper] (the first bin takes 0 too)."""

    lower: float
    upper: float
    count: int
    correct: int
    confidence: float | None  # their mean confidence; None when count is 0
    accuracy: float | None


class Mistake(ReportModel):
    """A wrong answer, with the pictures: the file as sent and what the model saw."""

    file: str
    label: str
    answer: str
    confidence: float
    #: The original as a data: URI; None when it is not a format browsers show or too large.
    original: str | None
    seen: list[str]  # data: URIs of the 28x28 images the model saw


class ModelResult(ReportModel):
    """One model's answers to every decodable image."""

    model: str
    images: int  # decoded by the service: answered + refused
    answered: int
    refused: int  # no digit found: a miss
    correct: int
    accuracy: float | None  # correct / images
    confident: int  # answered and not flagged uncertain
    confident_accuracy: float | None
    uncertain_share: float | None  # of the answered, the share flagged uncertain
    #: With --read: answered readings with another number of digits than the label's (not
    #: in the per-digit counts or the confusion matrix).
    wrong_length: int | None = None
    per_digit: list[DigitResult]
    #: confusion[true][answered]: counts (with --read, over aligned digit positions).
    confusion: list[list[int]]
    reliability: list[ReliabilityBin]
    ece: float | None
    worst: list[Mistake]  # wrong answers, the most confident first


class SkippedFile(ReportModel):
    file: str
    reason: str


class FailedFile(ReportModel):
    file: str
    status: int | None
    code: str
    message: str


class EvaluationReport(ReportModel):
    """Everything ``digits eval`` measured; the JSON report is this, dumped."""

    source: str
    url: str
    endpoint: Literal["/predict", "/read"]
    model: str | None  # as asked: None for the service's default, or "all"
    version: str | None
    length: int | None
    started_at: datetime
    duration_s: float
    images_per_second: float
    files: int  # listed in the source, skipped ones included
    sent: int
    models: list[ModelResult]  # one per model, by name
    skipped: list[SkippedFile]
    failed: list[FailedFile]


# ---- sending --------------------------------------------------------------------------------


def send_all(
    client: DigitsClient,
    images: Sequence[LabelledImage],
    question: Question,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: bool | None = None,
    wait: Callable[[float], None] = time.sleep,
) -> list[Outcome]:
    """Every image's outcome, in the order given. ``progress``: show a bar on stderr (None:
    when stderr is a terminal). A :class:`DigitsError` that would fail every file alike (a
    wrong key, an unknown model, no service) stops the run and is raised."""
    outcomes: dict[int, Outcome] = {}
    with (
        ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool,
        tqdm(
            total=len(images),
            desc="digits eval",
            unit="image",
            file=sys.stderr,
            disable=None if progress is None else not progress,
            leave=False,
        ) as bar,
    ):
        futures: dict[Future[Outcome], int] = {
            pool.submit(send_one, client, image, question, wait): index
            for index, image in enumerate(images)
        }
        try:
            for future in as_completed(futures):
                outcomes[futures[future]] = future.result()
                bar.update()
        except BaseException:
            for pending in futures:
                pending.cancel()
            raise
    return [outcomes[index] for index in range(len(images))]


def send_one(
    client: DigitsClient,
    image: LabelledImage,
    question: Question,
    wait: Callable[[float], None] = time.sleep,
) -> Outcome:
    """One image's outcome; raises the errors that concern more than this file."""
    try:
        data = image.path.read_bytes()
    except OSError as exc:
        error = DigitsError(None, "unreadable", f"unreadable: {exc.strerror or exc}")
        return Outcome(image, "undecodable", error=error)
    for attempt in range(RETRIES_503 + 1):
        try:
            return Outcome(image, "answered", judgements=ask(client, data, question))
        except DigitsError as exc:
            if exc.status not in PER_FILE_STATUSES:
                raise
            if exc.status == 503 and attempt < RETRIES_503:
                wait(RETRY_WAIT_S * 2**attempt)
                continue
            return Outcome(image, fate_of(exc), error=exc)
    raise AssertionError("unreachable: the last try returns")  # pragma: no cover


def fate_of(error: DigitsError) -> Fate:
    """What a per-file error means for the count."""
    if error.status in (413, 415) or (error.status == 400 and error.code in UNDECODABLE_CODES):
        return "undecodable"
    if error.status == 400 and error.code in REFUSED_CODES:
        return "refused"
    return "failed"


def ask(client: DigitsClient, data: bytes, question: Question) -> tuple[Judgement, ...]:
    """The service's answer to one image, one judgement per model."""
    if question.read:
        reading = client.read(
            data,
            model=question.model,
            version=question.version,
            length=question.length,
            explain=True,
        )
        return (judge_reading(reading),)
    if question.model == ALL_MODELS:
        ensemble: EnsemblePrediction = client.predict_all(data, explain=True)
        return tuple(judge_prediction(p) for p in ensemble.predictions)
    prediction = client.predict(data, model=question.model, version=question.version, explain=True)
    return (judge_prediction(prediction),)


def judge_prediction(prediction: Prediction) -> Judgement:
    return Judgement(
        model=f"{prediction.model.name}/{prediction.model.version}",
        answer=str(prediction.digit),
        confidence=prediction.confidence,
        uncertain=prediction.uncertain,
        seen=(prediction.image,) if prediction.image else (),
    )


def judge_reading(reading: Reading) -> Judgement:
    return Judgement(
        model=f"{reading.model.name}/{reading.model.version}",
        answer=reading.number,
        confidence=reading.confidence,
        uncertain=reading.uncertain,
        seen=tuple(d.image for d in reading.digits if d.image),
    )


# ---- the metrics ----------------------------------------------------------------------------


def bin_of(confidence: float, bins: int = ECE_BINS) -> int:
    """The bin of a confidence: bin b holds (b/bins, (b+1)/bins]; 0 falls in the first."""
    return min(max(math.ceil(confidence * bins), 1), bins) - 1


def reliability_bins(
    answers: Iterable[tuple[float, bool]], bins: int = ECE_BINS
) -> list[ReliabilityBin]:
    """``answers``: (confidence, whether right) pairs; every bin, empty ones included."""
    counts = [0] * bins
    hits = [0] * bins
    sums = [0.0] * bins
    for confidence, right in answers:
        index = bin_of(confidence, bins)
        counts[index] += 1
        hits[index] += right
        sums[index] += confidence
    return [
        ReliabilityBin(
            lower=b / bins,
            upper=(b + 1) / bins,
            count=counts[b],
            correct=hits[b],
            confidence=sums[b] / counts[b] if counts[b] else None,
            accuracy=hits[b] / counts[b] if counts[b] else None,
        )
        for b in range(bins)
    ]


def expected_calibration_error(bins: Sequence[ReliabilityBin]) -> float | None:
    """The mean over bins of |accuracy - mean confidence|, weighted by each bin's share of
    the answers; None when there are none."""
    total = sum(b.count for b in bins)
    if not total:
        return None
    gaps = sum(
        b.count * abs(b.accuracy - b.confidence)
        for b in bins
        if b.accuracy is not None and b.confidence is not None
    )
    return gaps / total


def confusion_matrix(pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """``pairs``: (true digit, answered digit); rows are the true digits, columns answers."""
    matrix = [[0] * 10 for _ in range(10)]
    for true, answered in pairs:
        matrix[true][answered] += 1
    return matrix


def per_digit(
    confusion: Sequence[Sequence[int]], refused: Sequence[int] = (0,) * 10
) -> list[DigitResult]:
    """Each true digit's count and accuracy: its confusion row, plus its ``refused`` images
    (misses that have no column)."""
    results = []
    for digit in range(10):
        count = sum(confusion[digit]) + refused[digit]
        correct = confusion[digit][digit]
        results.append(
            DigitResult(
                digit=digit,
                count=count,
                correct=correct,
                accuracy=correct / count if count else None,
            )
        )
    return results


def aligned_digits(label: str, answer: str) -> list[tuple[int, int]]:
    """(true, answered) digit pairs position by position; none when the lengths differ."""
    if len(label) != len(answer):
        return []
    return [(int(t), int(a)) for t, a in zip(label, answer, strict=True)]


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class _Tally:
    """One model's answers, gathered."""

    model: str
    answered: list[tuple[LabelledImage, Judgement]] = field(default_factory=list)


def model_result(
    model: str,
    answered: Sequence[tuple[LabelledImage, Judgement]],
    refused: Sequence[LabelledImage],
    *,
    read: bool = False,
    worst: int = DEFAULT_WORST,
) -> ModelResult:
    """One model's numbers from its answers and the images it refused."""
    right = [(image, j, j.answer == image.label) for image, j in answered]
    correct = sum(hit for _, _, hit in right)
    images = len(answered) + len(refused)
    confident = [hit for _, j, hit in right if not j.uncertain]
    if read:
        pairs = [p for image, j in answered for p in aligned_digits(image.label, j.answer)]
        refused_digits = [0] * 10  # a refused number has no digit positions to align
        wrong_length: int | None = sum(len(j.answer) != len(i.label) for i, j in answered)
    else:
        pairs = [(int(image.label), int(j.answer)) for image, j in answered]
        refused_digits = [sum(i.label == str(d) for i in refused) for d in range(10)]
        wrong_length = None
    confusion = confusion_matrix(pairs)
    bins = reliability_bins((j.confidence, hit) for _, j, hit in right)
    mistakes = sorted(
        ((image, j) for image, j, hit in right if not hit),
        key=lambda pair: (-pair[1].confidence, str(pair[0].path)),
    )
    return ModelResult(
        model=model,
        images=images,
        answered=len(answered),
        refused=len(refused),
        correct=correct,
        accuracy=_share(correct, images),
        confident=len(confident),
        confident_accuracy=_share(sum(confident), len(confident)),
        uncertain_share=_share(len(answered) - len(confident), len(answered)),
        wrong_length=wrong_length,
        per_digit=per_digit(confusion, refused_digits),
        confusion=confusion,
        reliability=bins,
        ece=expected_calibration_error(bins),
        worst=[mistake(image, j) for image, j in mistakes[:worst]],
    )


def mistake(image: LabelledImage, judgement: Judgement) -> Mistake:
    return Mistake(
        file=str(image.path),
        label=image.label,
        answer=judgement.answer,
        confidence=judgement.confidence,
        original=original_data_uri(image.path),
        seen=[f"data:image/png;base64,{png}" for png in judgement.seen],
    )


def original_data_uri(path: Path) -> str | None:
    """The file as a data: URI when a browser can show it (PNG, JPEG, GIF, WebP, BMP, by its
    bytes) and it is at most :data:`THUMBNAIL_MAX_BYTES`; else None."""
    try:
        if path.stat().st_size > THUMBNAIL_MAX_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    kind = browser_image_type(data)
    if kind is None or len(data) > THUMBNAIL_MAX_BYTES:
        return None
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def browser_image_type(data: bytes) -> str | None:
    """The MIME type of an image a browser shows, sniffed from its first bytes."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, kind in _BROWSER_FORMATS:
        if data.startswith(magic):
            return kind
    return None


def evaluate(
    outcomes: Sequence[Outcome],
    labelled: LabelledSet,
    question: Question,
    *,
    url: str,
    started_at: datetime,
    duration_s: float,
    worst: int = DEFAULT_WORST,
) -> EvaluationReport:
    """The report of a run: one result per model, and the files left out."""
    tallies: dict[str, _Tally] = {}
    refused: list[LabelledImage] = []
    for outcome in outcomes:
        if outcome.fate == "refused":
            refused.append(outcome.image)
        for judgement in outcome.judgements:
            tally = tallies.setdefault(judgement.model, _Tally(judgement.model))
            tally.answered.append((outcome.image, judgement))
    if not tallies and refused:
        # No model answered at all: one section, named as asked.
        name = question.model or "default model"
        tallies[name] = _Tally(name)
    results = [
        model_result(
            name,
            tallies[name].answered,
            refused,  # a refused image is refused by every model (one request)
            read=question.read,
            worst=worst,
        )
        for name in sorted(tallies)
    ]
    skipped = [SkippedFile(file=str(s.path), reason=s.reason) for s in labelled.skipped]
    skipped += [
        SkippedFile(file=str(o.image.path), reason=_reason(o.error))
        for o in outcomes
        if o.fate == "undecodable" and o.error is not None
    ]
    failed = [
        FailedFile(
            file=str(o.image.path),
            status=o.error.status,
            code=o.error.code,
            message=o.error.message,
        )
        for o in outcomes
        if o.fate == "failed" and o.error is not None
    ]
    return EvaluationReport(
        source=str(labelled.source),
        url=url,
        endpoint="/read" if question.read else "/predict",
        model=question.model,
        version=question.version,
        length=question.length,
        started_at=started_at,
        duration_s=duration_s,
        images_per_second=len(outcomes) / duration_s if duration_s > 0 else 0.0,
        files=len(labelled.images) + len(labelled.skipped),
        sent=len(outcomes),
        models=results,
        skipped=skipped,
        failed=failed,
    )


def _reason(error: DigitsError | None) -> str:
    if error is None:
        return "not sent"
    if error.status is None:
        return error.message
    return f"the service could not decode it ({error.status} {error.code}: {error.message})"
