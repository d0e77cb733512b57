"""``digits eval``'s reports: one self-contained HTML file, the JSON, and a terminal table.

The HTML loads nothing from anywhere: its CSS is inline, the reliability diagram is inline
SVG, and every picture is a ``data:`` URI, so the file can be mailed or archived as it is.
Every piece of text in it is escaped. The JSON is :class:`EvaluationReport`, dumped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

from digits_client.evaluation import (
    DigitResult,
    EvaluationReport,
    Mistake,
    ModelResult,
    ReliabilityBin,
)
from digits_client.formatting import format_table, percent

SUMMARY_HEADER = ("MODEL", "IMAGES", "ACCURACY", "WORST DIGIT", "ECE", "UNCERTAIN")

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { padding: 0.2em 0.6em; text-align: right; border: 1px solid #ddd; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
table.about th { text-align: left; }
table.confusion td { min-width: 2.4em; }
.row { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
.grid { display: flex; flex-wrap: wrap; gap: 0.8em; }
figure { margin: 0; padding: 0.4em; border: 1px solid #ddd; width: 12em; }
figure img { height: 56px; image-rendering: pixelated; border: 1px solid #eee;
             background: #000; margin-right: 2px; }
figure img.original { max-width: 11.5em; object-fit: contain; background: #fff; }
figcaption { font-size: 0.85em; word-break: break-all; }
.none { color: #999; }
"""


# ---- the terminal ---------------------------------------------------------------------------


def summary_table(report: EvaluationReport) -> list[str]:
    """One row per model: MODEL, IMAGES, ACCURACY, WORST DIGIT, ECE, UNCERTAIN."""
    return format_table(SUMMARY_HEADER, summary_rows(report))


def summary_rows(report: EvaluationReport) -> list[list[str]]:
    return [
        [
            result.model,
            str(result.images),
            _fraction(result.accuracy),
            _worst_digit(result.per_digit),
            _ece(result.ece),
            _fraction(result.uncertain_share),
        ]
        for result in report.models
    ]


def _fraction(value: float | None) -> str:
    return "-" if value is None else percent(value)


def _ece(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _worst_digit(digits: Sequence[DigitResult]) -> str:
    """The digit answered worst (the lowest accuracy; the smaller digit on a tie)."""
    measured = [d for d in digits if d.accuracy is not None]
    if not measured:
        return "-"
    worst = min(measured, key=lambda d: (d.accuracy, d.digit))
    return f"{worst.digit} ({_fraction(worst.accuracy)})"


# ---- the files ------------------------------------------------------------------------------


def report_paths(prefix: Path) -> tuple[Path, Path]:
    """``PREFIX.html`` and ``PREFIX.json``."""
    return prefix.with_name(prefix.name + ".html"), prefix.with_name(prefix.name + ".json")


def write_reports(report: EvaluationReport, prefix: Path) -> tuple[Path, Path]:
    """Write the HTML and JSON reports beside ``prefix`` (its folder made when missing);
    their paths. Raises OSError when they cannot be written."""
    html_path, json_path = report_paths(prefix)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(html_report(report), encoding="utf-8")
    json_path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return html_path, json_path


# ---- the HTML -------------------------------------------------------------------------------


def html_report(report: EvaluationReport) -> str:
    """The whole report as one self-contained HTML document."""
    what = "numbers (POST /read)" if report.endpoint == "/read" else "digits (POST /predict)"
    about = [
        ("source", report.source),
        ("service", report.url),
        ("read", what),
        ("model", _asked_model(report)),
        ("date", report.started_at.isoformat(timespec="seconds")),
        ("duration", f"{report.duration_s:.1f} s"),
        ("images per second", f"{report.images_per_second:.1f}"),
        ("files", f"{report.files} listed, {report.sent} sent"),
        ("skipped", str(len(report.skipped))),
        ("failed", str(len(report.failed))),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>digits eval: {escape(report.source)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>digits eval: {escape(report.source)}</h1>",
        '<table class="about">',
        *(f"<tr><th>{escape(k)}</th><td class='text'>{escape(v)}</td></tr>" for k, v in about),
        "</table>",
        _summary_html(report),
        *(_model_html(result, report.endpoint == "/read") for result in report.models),
        _skipped_html(report),
        _failed_html(report),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _asked_model(report: EvaluationReport) -> str:
    if report.model is None:
        name = "the service's default"
    elif report.model == "all":
        name = "every model"
    else:
        name = report.model
    if report.version:
        name += f", version {report.version}"
    if report.length:
        name += f", numbers of {report.length} digits"
    return name


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, text_columns: int = 1) -> str:
    """An HTML table of text cells (escaped here): the first ``text_columns`` are text,
    left-aligned; the rest are numbers, right-aligned."""

    def cell(tag: str, index: int, text: str) -> str:
        klass = " class=text" if index < text_columns else ""
        return f"<{tag}{klass}>{escape(text)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary_html(report: EvaluationReport) -> str:
    if not report.models:
        return "<p class='none'>No image could be measured.</p>"
    return _table([h.lower() for h in SUMMARY_HEADER], summary_rows(report))


def _model_html(result: ModelResult, read: bool) -> str:
    unit = "digits at aligned positions" if read else "images"
    facts = [
        ["images", str(result.images)],
        ["answered", str(result.answered)],
        ["refused (no digit found; a miss)", str(result.refused)],
        ["correct", str(result.correct)],
        ["accuracy", _fraction(result.accuracy)],
        ["not flagged uncertain", str(result.confident)],
        ["accuracy of those", _fraction(result.confident_accuracy)],
        ["flagged uncertain", _fraction(result.uncertain_share)],
        ["expected calibration error", _ece(result.ece)],
    ]
    if result.wrong_length is not None:
        facts.insert(4, ["read with the wrong number of digits", str(result.wrong_length)])
    digits = [
        [str(d.digit), str(d.count), str(d.correct), _fraction(d.accuracy)]
        for d in result.per_digit
    ]
    return "\n".join(
        [
            f"<h2>{escape(result.model)}</h2>",
            '<div class="row">',
            f"<div>{_table(['measure', 'value'], facts)}</div>",
            f"<div><h3>Reliability</h3>{reliability_svg(result.reliability)}</div>",
            "</div>",
            '<div class="row">',
            f"<div><h3>Confusion ({escape(unit)})</h3>{confusion_html(result.confusion)}</div>",
            "<div><h3>Per digit</h3>"
            + _table(["digit", unit, "correct", "accuracy"], digits)
            + "</div>",
            "</div>",
            f"<h3>{escape(_mistakes_heading(result))}</h3>",
            _mistakes_html(result.worst),
        ]
    )


def confusion_html(confusion: Sequence[Sequence[int]]) -> str:
    """Rows: the true digit; columns: the answer. A cell is shaded by its share of its row,
    green on the diagonal, red off it."""
    head = "<th class=text>true \\ answer</th>" + "".join(f"<th>{d}</th>" for d in range(10))
    rows = []
    for true, row in enumerate(confusion):
        total = sum(row)
        cells = []
        for answer, count in enumerate(row):
            share = count / total if total else 0.0
            colour = "46,125,50" if true == answer else "198,40,40"
            style = f' style="background: rgba({colour},{0.15 + 0.6 * share:.3f})"' if count else ""
            cells.append(f"<td{style} title='true {true}, answered {answer}'>{count or ''}</td>")
        rows.append(f"<tr><th>{true}</th>{''.join(cells)}</tr>")
    return f'<table class="confusion"><tr>{head}</tr>{"".join(rows)}</table>'


def reliability_svg(bins: Sequence[ReliabilityBin], size: int = 260) -> str:
    """A reliability diagram: each bin's accuracy as a bar over its confidence range, the
    gap to its mean confidence outlined, and the diagonal of perfect calibration."""
    margin = 36
    full = size + 2 * margin

    def x(value: float) -> float:
        return margin + value * size

    def y(value: float) -> float:
        return margin + (1 - value) * size

    shapes = [
        f'<rect x="{margin}" y="{margin}" width="{size}" height="{size}" fill="#fafafa" '
        'stroke="#999"/>',
    ]
    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        shapes.append(
            f'<text x="{x(tick):.1f}" y="{margin + size + 14}" font-size="10" '
            f'text-anchor="middle">{tick:.1f}</text>'
            f'<text x="{margin - 4}" y="{y(tick) + 3:.1f}" font-size="10" '
            f'text-anchor="end">{tick:.1f}</text>'
        )
    for b in bins:
        if b.accuracy is None or b.confidence is None:
            continue
        left, width = x(b.lower), (b.upper - b.lower) * size
        title = (
            f"confidence {b.lower:.2f}-{b.upper:.2f}: {b.count} answers, "
            f"accuracy {b.accuracy:.3f}, mean confidence {b.confidence:.3f}"
        )
        top, bottom = sorted((y(b.accuracy), y(b.confidence)))
        shapes.append(
            f'<rect x="{left:.1f}" y="{y(b.accuracy):.1f}" width="{width:.1f}" '
            f'height="{b.accuracy * size:.1f}" fill="#1f77b4" stroke="#fff">'
            f"<title>{escape(title)}</title></rect>"
            f'<rect x="{left:.1f}" y="{top:.1f}" width="{width:.1f}" '
            f'height="{bottom - top:.1f}" fill="rgba(214,39,40,0.25)" stroke="#d62728">'
            f"<title>{escape(title)}</title></rect>"
        )
    shapes.append(
        f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="#555" '
        'stroke-dasharray="4 3"/>'
    )
    shapes.append(
        f'<text x="{margin + size / 2}" y="{full - 6}" font-size="11" '
        'text-anchor="middle">confidence</text>'
        f'<text x="12" y="{margin + size / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {margin + size / 2})">accuracy</text>'
    )
    return (
        f'<svg width="{full}" height="{full}" '
        f'viewBox="0 0 {full} {full}" role="img" aria-label="reliability diagram">'
        + "".join(shapes)
        + "</svg>"
    )


def _mistakes_heading(result: ModelResult) -> str:
    wrong = result.answered - result.correct  # refused images are misses, not answers
    if not wrong:
        return "Mistakes: none"
    return f"Mistakes: the {len(result.worst)} most confident of {wrong}"


def _mistakes_html(mistakes: Sequence[Mistake]) -> str:
    if not mistakes:
        return ""
    figures = []
    for m in mistakes:
        original = (
            f'<img class="original" src="{escape(m.original)}" alt="the file as sent">'
            if m.original
            else "<span class='none'>(file not shown)</span>"
        )
        seen = "".join(f'<img src="{escape(uri)}" alt="what the model saw">' for uri in m.seen)
        caption = (
            f"<b>{escape(m.label)}</b> read as <b>{escape(m.answer)}</b>, "
            f"{escape(percent(m.confidence))}<br>{escape(Path(m.file).name)}"
        )
        figures.append(
            f'<figure title="{escape(m.file)}"><div>{original}</div><div>{seen}</div>'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return f'<div class="grid">{"".join(figures)}</div>'


def _skipped_html(report: EvaluationReport) -> str:
    if not report.skipped:
        return ""
    rows = [[s.file, s.reason] for s in report.skipped]
    return f"<h2>Skipped ({len(rows)}): not counted</h2>" + _table(
        ["file", "reason"], rows, text_columns=2
    )


def _failed_html(report: EvaluationReport) -> str:
    if not report.failed:
        return ""
    rows = [
        [f.file, "-" if f.status is None else str(f.status), f.code, f.message]
        for f in report.failed
    ]
    return f"<h2>Failed ({len(rows)}): not counted</h2>" + _table(
        ["file", "status", "code", "message"], rows, text_columns=4
    )
