"""``digits``: read digits in image files, and list models, through a running digits service.

    digits predict seven.png scans/            # a table: file, digit, confidence, ...
    digits predict scans/ --model all --json   # JSON lines, every model's answer
    digits read zip-code.jpg --length 5        # a whole number in each image
    digits models                              # what the service serves
    digits reload                              # load new packages (an admin key if keys are on)
    digits eval labelled/ --model all          # accuracy, confusion, calibration: a report

The service's address comes from ``--url``, else ``DIGITS_URL``, else http://127.0.0.1:8000;
an API key from ``--api-key``, else ``DIGITS_API_KEY``. Exit status: 0 when every file was
read, 1 when any file failed or the service could not be used, 2 for a usage error (and, for
``digits eval``, labelled data that cannot be used as it is).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from digits_client.answers import EnsemblePrediction, ModelInfo, Prediction, Reading
from digits_client.client import (
    ALL_MODELS,
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    PER_FILE_STATUSES,
    DigitsClient,
    DigitsError,
)
from digits_client.evaluation import (
    DEFAULT_CONCURRENCY,
    DEFAULT_WORST,
    EvaluationReport,
    Question,
    evaluate,
    send_all,
)
from digits_client.evaluation_report import summary_table, write_reports

# Re-exported: format_table and percent were defined here first.
from digits_client.formatting import format_table as format_table
from digits_client.formatting import percent as percent
from digits_client.labelled import LabelledDataError, LabelledSet, read_labelled

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_REPORT = "digits-eval"
#: How many skipped or failed files ``digits eval`` names on the terminal (the report has all).
NAMED_ON_TERMINAL = 10


class UsageError(Exception):
    """The command line asks for something that cannot be done; exit status 2."""


@dataclass(frozen=True)
class FileOutcome:
    """What became of one file: an answer or an error."""

    file: str
    answer: Prediction | EnsemblePrediction | Reading | None = None
    error: DigitsError | None = None


#: Asks the service about one image's bytes.
Ask = Callable[[bytes], Prediction | EnsemblePrediction | Reading]


# ---- output ---------------------------------------------------------------------------------


def write_line(text: str) -> None:
    """The command's output proper, on stdout."""
    sys.stdout.write(text + "\n")


def write_problem(text: str) -> None:
    """Messages for the person at the terminal, on stderr, out of the way of pipes."""
    sys.stderr.write(text + "\n")


# ---- digits predict -------------------------------------------------------------------------


def is_image_file(path: Path) -> bool:
    """Whether a file in a folder is an image, by its name (``image/*``, as the system's MIME
    table says). Which image formats the service reads is the service's to say: a file in
    one it does not read is sent, and its answer (415) says so."""
    kind, _ = mimetypes.guess_type(path.name, strict=False)
    return path.is_file() and not path.name.startswith(".") and (kind or "").startswith("image/")


def image_files(arguments: Sequence[str]) -> list[Path]:
    """Files as given; folders expand to the image files directly in them, sorted by name."""
    files: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if is_image_file(p))
            if not found:
                raise UsageError(f"no image files in the folder {argument}")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise UsageError(f"no such file or folder: {argument}")
    return files


def predict_files(client: DigitsClient, files: Sequence[Path], args: argparse.Namespace) -> int:
    outcomes = [
        predict_file(client, file, args.model, args.version, as_json=args.json) for file in files
    ]
    status = report(outcomes, predictions_table, as_json=args.json)
    for outcome in outcomes:
        if isinstance(outcome.answer, Prediction) and outcome.answer.digits_seen > 1:
            write_problem(
                f"{outcome.file}: {outcome.answer.digits_seen} digits seen, the largest was "
                "read; `digits read` reads them all"
            )
    return status


def predict_file(
    client: DigitsClient,
    file: Path,
    model: str | None,
    version: str | None,
    *,
    as_json: bool = False,
) -> FileOutcome:
    def ask(image: bytes) -> Prediction | EnsemblePrediction:
        if model == ALL_MODELS:
            return client.predict_all(image)
        return client.predict(image, model=model, version=version)

    return answer_file(file, ask, as_json=as_json)


def answer_file(file: Path, ask: Ask, *, as_json: bool = False) -> FileOutcome:
    """One file's answer, or its own error when the error concerns that file alone (any other
    error stops the run). With ``as_json``, its JSON line is written as soon as it is known."""
    try:
        image = file.read_bytes()
    except OSError as exc:
        outcome = FileOutcome(str(file), error=DigitsError(None, "unreadable", exc.strerror or ""))
    else:
        try:
            outcome = FileOutcome(str(file), answer=ask(image))
        except DigitsError as exc:
            if exc.status not in PER_FILE_STATUSES:
                raise
            outcome = FileOutcome(str(file), error=exc)
    if as_json:
        # One JSON object per line, as each file is answered: friendly to jq and to pipes.
        write_line(outcome_json(outcome))
    return outcome


def report(
    outcomes: Sequence[FileOutcome],
    table: Callable[[Sequence[FileOutcome]], list[str]],
    *,
    as_json: bool,
) -> int:
    """The table (unless the JSON lines were written), the count of failures; the exit status."""
    if not as_json:
        for line in table(outcomes):
            write_line(line)
    failed = sum(o.error is not None for o in outcomes)
    if failed:
        write_problem(f"{failed} of {len(outcomes)} files could not be read")
    return EXIT_FAILED if failed else EXIT_OK


def outcome_json(outcome: FileOutcome) -> str:
    record: dict[str, object] = {"file": outcome.file}
    if outcome.answer is not None:
        record |= outcome.answer.model_dump(mode="json", exclude_none=True)
    elif outcome.error is not None:
        error = outcome.error
        record["error"] = {"status": error.status, "code": error.code, "message": error.message}
    return json.dumps(record)


def predictions_table(outcomes: Sequence[FileOutcome]) -> list[str]:
    rows: list[list[str]] = []
    for outcome in outcomes:
        answer = outcome.answer
        if isinstance(answer, Prediction):
            rows.append(
                [
                    outcome.file,
                    str(answer.digit),
                    percent(answer.confidence),
                    "yes" if answer.uncertain else "no",
                    f"{answer.model.name}/{answer.model.version}",
                ]
            )
        elif isinstance(answer, EnsemblePrediction):
            rows.append([outcome.file, *_ensemble_cells(answer)])
        elif outcome.error is not None:
            rows.append([outcome.file, "error", f"{outcome.error.code}: {outcome.error.message}"])
    return format_table(["FILE", "DIGIT", "CONFIDENCE", "UNCERTAIN", "MODEL"], rows)


def _ensemble_cells(answer: EnsemblePrediction) -> list[str]:
    # Confidence: the models' mean probability of the chosen digit, as the page shows it.
    chose = [p.probabilities[answer.digit] for p in answer.predictions]
    doubtful = not answer.agree or any(p.uncertain for p in answer.predictions)
    votes = ", ".join(f"{p.model.name}={p.digit}" for p in answer.predictions)
    return [
        str(answer.digit),
        percent(sum(chose) / len(chose)),
        "yes" if doubtful else "no",
        f"all, {'agree' if answer.agree else 'disagree'} ({votes})",
    ]


# ---- digits read ----------------------------------------------------------------------------


def read_files(client: DigitsClient, files: Sequence[Path], args: argparse.Namespace) -> int:
    def ask(image: bytes) -> Reading:
        return client.read(image, model=args.model, version=args.version, length=args.length)

    outcomes = [answer_file(file, ask, as_json=args.json) for file in files]
    return report(outcomes, readings_table, as_json=args.json)


def readings_table(outcomes: Sequence[FileOutcome]) -> list[str]:
    rows: list[list[str]] = []
    for outcome in outcomes:
        answer = outcome.answer
        if isinstance(answer, Reading):
            rows.append(
                [
                    outcome.file,
                    answer.number,
                    percent(answer.confidence),
                    "yes" if answer.uncertain else "no",
                    f"{answer.model.name}/{answer.model.version}",
                ]
            )
        elif outcome.error is not None:
            rows.append([outcome.file, "error", f"{outcome.error.code}: {outcome.error.message}"])
    return format_table(["FILE", "NUMBER", "CONFIDENCE", "UNCERTAIN", "MODEL"], rows)


def digit_count(text: str) -> int:
    """``--length``: a whole number of digits, 1 or more."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"not a number of digits (1 or more): {text!r}")
    return count


# ---- digits eval ----------------------------------------------------------------------------


def eval_labelled(client: DigitsClient, labelled: LabelledSet, args: argparse.Namespace) -> int:
    """Send every labelled image, write the reports, and show the summary."""
    question = Question(model=args.model, version=args.version, read=args.read, length=args.length)
    started_at = datetime.now(UTC)
    start = time.perf_counter()
    outcomes = send_all(client, labelled.images, question, concurrency=args.concurrency)
    report = evaluate(
        outcomes,
        labelled,
        question,
        url=client.url,
        started_at=started_at,
        duration_s=time.perf_counter() - start,
        worst=args.worst,
    )
    try:
        paths = write_reports(report, Path(args.report))
    except OSError as exc:
        write_problem(f"digits eval: cannot write the report {args.report}: {exc}")
        return EXIT_FAILED
    if args.json:
        write_line(report.model_dump_json(indent=2))
    else:
        for line in summary_table(report):
            write_line(line)
    for path in paths:
        (write_problem if args.json else write_line)(f"report: {path}")
    return eval_status(report, strict=args.strict, undecodable=len(labelled.skipped))


def eval_status(report: EvaluationReport, *, strict: bool, undecodable: int) -> int:
    """Say on stderr what was left out; the exit status. ``undecodable``: how many of the
    skipped files were skipped before sending (the rest, the service could not decode)."""
    status = EXIT_OK
    if report.skipped:
        write_problem(f"skipped, not counted: {len(report.skipped)} of {report.files} files")
        for skipped in report.skipped[:NAMED_ON_TERMINAL]:
            write_problem(f"  {skipped.file}: {skipped.reason}")
        _and_more(len(report.skipped))
        if strict and len(report.skipped) > undecodable:
            write_problem("digits eval: the service could not decode some files (--strict)")
            status = EXIT_FAILED
    if report.failed:
        write_problem(f"{len(report.failed)} of {report.sent} files could not be read")
        for failed in report.failed[:NAMED_ON_TERMINAL]:
            write_problem(f"  {failed.file}: {failed.code}: {failed.message}")
        _and_more(len(report.failed))
        status = EXIT_FAILED
    if not any(result.images for result in report.models):
        write_problem("digits eval: no image could be measured")
        status = EXIT_FAILED
    return status


def _and_more(count: int) -> None:
    if count > NAMED_ON_TERMINAL:
        write_problem(f"  and {count - NAMED_ON_TERMINAL} more (listed in the report)")


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number, ``minimum`` or more."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"not a whole number {minimum} or more: {text!r}")
        return value

    return parse


# ---- digits models --------------------------------------------------------------------------


def list_models(client: DigitsClient, args: argparse.Namespace) -> int:
    listing = client.models()
    if args.json:
        write_line(listing.model_dump_json(indent=2, exclude_none=True))
        return EXIT_OK
    rows = [_model_cells(m) for m in listing.models]
    header = ["NAME", "VERSION", "STATUS", "DEFAULT", "TEST ACCURACY", "PARAMETERS", "DEVICE"]
    for line in format_table(header, rows):
        write_line(line)
    return EXIT_OK


def reload_models(client: DigitsClient, args: argparse.Namespace) -> int:
    """``POST /models/reload``: what it loaded, kept, removed, and could not load."""
    report = client.reload()
    if args.json:
        write_line(report.model_dump_json(indent=2, exclude_none=True))
    else:
        kept = (("loaded", report.loaded), ("unchanged", report.unchanged))
        rows = [[m.name, m.version, outcome] for outcome, refs in kept for m in refs]
        rows += [[m.name, m.version, "removed"] for m in report.removed]
        rows += [[m.name, m.version, f"failed: {m.error}"] for m in report.failed]
        for line in format_table(["NAME", "VERSION", "OUTCOME"], rows):
            write_line(line)
    if report.failed:
        write_problem(f"{len(report.failed)} packages failed to load; the older ones still serve")
        return EXIT_FAILED
    return EXIT_OK


def _model_cells(model: ModelInfo) -> list[str]:
    if model.status == "failed":
        return [model.name, model.version, "failed", "", f"error: {model.error}"]
    return [
        model.name,
        model.version,
        model.status,
        "yes" if model.default and model.newest else "",
        percent(model.metrics.test_accuracy, 2) if model.metrics else "-",
        f"{model.parameters:,}" if model.parameters is not None else "-",
        model.device or "-",
    ]


# ---- the command line -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    service = argparse.ArgumentParser(add_help=False)
    service.add_argument(
        "--url",
        default=os.environ.get("DIGITS_URL", DEFAULT_URL),
        help=f"the service's address (default: $DIGITS_URL, else {DEFAULT_URL})",
    )
    service.add_argument(
        "--api-key",
        default=os.environ.get("DIGITS_API_KEY"),
        help="API key, when the service needs one (default: $DIGITS_API_KEY)",
    )
    service.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds to wait for each answer (default: %(default)s)",
    )
    service.add_argument("--json", action="store_true", help="print JSON instead of a table")

    parser = argparse.ArgumentParser(
        prog="digits",
        description="Read handwritten digits in images with a running digits service.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict",
        parents=[service],
        help="read the digit in each image",
        description="Read the digit in each image file; folders expand to their image files. "
        "With --json, one JSON object per file and line.",
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    predict.add_argument(
        "--model", help=f"model name (default: the service's default), or '{ALL_MODELS}'"
    )
    predict.add_argument("--version", help="model version (default: the newest)")
    predict.set_defaults(command_parser=predict)
    read = commands.add_parser(
        "read",
        parents=[service],
        help="read the whole number (a ZIP code, an amount) in each image",
        description="Read the number written in each image file, digit by digit, left to "
        "right; folders expand to their image files. With --json, one JSON object per file "
        "and line.",
    )
    read.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    read.add_argument(
        "--length",
        type=digit_count,
        metavar="N",
        help="how many digits each number has, when known: the best reading with exactly N",
    )
    read.add_argument("--model", help="model name (default: the service's default)")
    read.add_argument("--version", help="model version (default: the newest)")
    read.set_defaults(command_parser=read)
    models = commands.add_parser(
        "models",
        parents=[service],
        help="list the models the service has",
        description="List every model package the service found, served or failed.",
    )
    models.set_defaults(command_parser=models)
    reload = commands.add_parser(
        "reload",
        parents=[service],
        help="load new or changed packages (POST /models/reload)",
        description="Ask the service to load the packages added to or changed in its model "
        "folder, and drop removed ones, without a restart. Where the service has admin keys "
        "(DIGITS_ADMIN_KEYS), pass one with --api-key.",
    )
    reload.set_defaults(command_parser=reload)
    add_eval_parser(commands, service)
    return parser


def add_eval_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    service: argparse.ArgumentParser,
) -> None:
    evaluation = commands.add_parser(
        "eval",
        parents=[service],
        help="measure a model on labelled images: accuracy, confusion, calibration",
        description="Send every image of a labelled set to the service and write a report "
        "(PREFIX.html, self-contained, and PREFIX.json): accuracy overall and per digit, the "
        "confusion matrix, calibration (reliability diagram, ECE), the most confident "
        "mistakes. PATH is a folder with one sub-folder per digit (0/ .. 9/), or a CSV of "
        "file,label (files relative to the CSV). With --json, the JSON report is printed "
        "instead of the table.",
    )
    evaluation.add_argument("path", metavar="PATH", help="class folders 0/..9/, or a CSV")
    evaluation.add_argument(
        "--model", help=f"model name (default: the service's default), or '{ALL_MODELS}'"
    )
    evaluation.add_argument("--version", help="model version (default: the newest)")
    evaluation.add_argument(
        "--read",
        action="store_true",
        help="read whole numbers (POST /read): labels may be numbers such as 0412",
    )
    evaluation.add_argument(
        "--length",
        type=digit_count,
        metavar="N",
        help="with --read: how many digits each number has, when known",
    )
    evaluation.add_argument(
        "--report",
        default=DEFAULT_REPORT,
        metavar="PREFIX",
        help="where the report goes: PREFIX.html and PREFIX.json (default: %(default)s)",
    )
    evaluation.add_argument(
        "--worst",
        type=whole_number(0),
        default=DEFAULT_WORST,
        metavar="N",
        help="how many of the most confident mistakes to show (default: %(default)s)",
    )
    evaluation.add_argument(
        "--concurrency",
        type=whole_number(1),
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help="requests in flight at once (default: %(default)s)",
    )
    evaluation.add_argument(
        "--strict",
        action="store_true",
        help="refuse files that cannot be used instead of skipping them: before sending, "
        "exit status 2; a file the service cannot decode, exit status 1",
    )
    evaluation.set_defaults(command_parser=evaluation)


def check_eval_arguments(args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` for options of ``digits eval`` that do not go together."""
    if args.model == ALL_MODELS and args.read:
        raise UsageError(f"--model {ALL_MODELS} cannot be combined with --read")
    if args.model == ALL_MODELS and args.version is not None:
        raise UsageError(f"--version cannot be combined with --model {ALL_MODELS}")
    if args.length is not None and not args.read:
        raise UsageError("--length is for --read (numbers)")


def explain_failure(error: DigitsError, url: str) -> str:
    """What went wrong, and what to do about it."""
    if error.status is None:
        return (
            f"digits: {error.message}. Is the digits service running there? Start it with "
            "`make serve` or `python -m service`, or point --url or DIGITS_URL at it."
        )
    if error.status == 401:
        return f"digits: {error.message}. Pass --api-key or set DIGITS_API_KEY."
    return f"digits: the service answered {error.status} {error.code}: {error.message}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        files: list[Path] = []
        if args.command == "predict":
            if args.model == ALL_MODELS and args.version is not None:
                raise UsageError(f"--version cannot be combined with --model {ALL_MODELS}")
            files = image_files(args.images)
        elif args.command == "read":
            files = image_files(args.images)
        elif args.command == "eval":
            check_eval_arguments(args)
    except UsageError as exc:
        command_parser: argparse.ArgumentParser = args.command_parser
        command_parser.error(str(exc))  # exits with EXIT_USAGE
    labelled: LabelledSet | None = None
    if args.command == "eval":
        try:
            labelled = read_labelled(Path(args.path), numbers=args.read, strict=args.strict)
        except LabelledDataError as exc:
            write_problem(f"digits eval: {exc}")
            return EXIT_USAGE
    try:
        with DigitsClient(args.url, api_key=args.api_key, timeout=args.timeout) as client:
            if args.command == "predict":
                return predict_files(client, files, args)
            if args.command == "read":
                return read_files(client, files, args)
            if labelled is not None:
                return eval_labelled(client, labelled, args)
            if args.command == "reload":
                return reload_models(client, args)
            return list_models(client, args)
    except DigitsError as exc:
        write_problem(explain_failure(exc, args.url))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
