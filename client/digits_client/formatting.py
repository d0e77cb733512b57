"""Text for people at a terminal: aligned tables, percentages."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart. A row's last cell is free text: it is not
    padded and does not widen its column (an error message may run long)."""
    lines = [header, *rows]
    widths: dict[int, int] = {}
    for cells in lines:
        for index, cell in enumerate(cells[:-1]):
            widths[index] = max(widths.get(index, 0), len(cell))
    return [
        "  ".join([cell.ljust(widths[i]) for i, cell in enumerate(cells[:-1])] + [cells[-1]])
        for cells in lines
    ]


def percent(fraction: float, digits: int = 1) -> str:
    """For people: never "100.0%" or "0.0%" for what is only nearly certain or impossible."""
    step = 10.0**-digits
    text = f"{100 * fraction:.{digits}f}"
    if fraction < 1 and float(text) >= 100:
        return f">{100 - step:.{digits}f}%"
    if fraction > 0 and float(text) <= 0:
        return f"<{step:.{digits}f}%"
    return text + "%"
