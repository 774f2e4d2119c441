"""Reading benchmarks/RESULTS.md's tables back, and the arithmetic its readings quote: gaps between rows,
their spans, who leads a column. A `Quote` is a phrase of a reading with its figures as `{}` and a function of
the table that gives them (benchmarks/quotes.py lists them; tests/benchmarks/test_readings.py checks that each
stands in its document). Stdlib only: reading markdown trains nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
CHANGELOG = ROOT / "CHANGELOG.md"
README = ROOT / "README.md"
PRESETS = ROOT / "docs" / "presets.md"
VIDEO_DOC = ROOT / "docs" / "video.md"
PSNR_SETS = ("tiny_imagenet_64", "clothing_64", "clothing_128", "clothing_native")
"""The image sets of the issue-26 race, in its column order (the earlier races have the first three)."""
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")

Table = dict[str, dict[str, list[float]]]
"""Row name (backticks dropped) -> column header -> the numbers of that cell, in order."""


def section_text(section: str, text: str) -> str:
    """What stands between a section's markers: `<!-- NAME:start -->` / `<!-- NAME:end -->` (or the video race's
    `<!-- NAME -->` / `<!-- /NAME -->`)."""
    for start, end in ((f"<!-- {section}:start -->", f"<!-- {section}:end -->"), (f"<!-- {section} -->", f"<!-- /{section} -->")):
        if start in text:
            return text[text.index(start) : text.index(end)]
    raise KeyError(f"no section '{section}' in RESULTS.md")


def tables(section: str, text: str | None = None) -> list[Table]:
    """Every markdown table of a section, parsed."""
    lines = section_text(section, RESULTS.read_text() if text is None else text).splitlines()
    found, index = [], 0
    while index < len(lines):
        if lines[index].startswith("|") and index + 1 < len(lines) and lines[index + 1].startswith("|---"):
            header = _cells(lines[index])
            rows: Table = {}
            index += 2
            while index < len(lines) and lines[index].startswith("|"):
                cells = _cells(lines[index])
                rows[_row_name(cells[0])] = {name: [float(n) for n in _NUMBER.findall(cell)] for name, cell in zip(header[1:], cells[1:])}
                index += 1
            found.append(rows)
        index += 1
    return found


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _row_name(first: str) -> str:
    """A row's name: its leading `code` (`kl`: AutoencoderKL ... -> kl), else the cell without emphasis."""
    match = re.match(r"\**`([^`]+)`", first)
    return match.group(1) if match else first.strip("*")


def cell(rows: Table, row: str, column: str, index: int = 0) -> float:
    """The `index`-th number of the cell whose header starts with `column` (e.g. `clothing_64` for its PSNR, index 1
    for its SSIM)."""
    headers = [name for name in rows[row] if name.startswith(column)]
    if len(headers) != 1:
        raise KeyError(f"column '{column}': {len(headers)} headers match in row '{row}'")
    return rows[row][headers[0]][index]


def gaps(rows: Table, better: str, worse: str, sets: tuple[str, ...] = PSNR_SETS, index: int = 0) -> list[float]:
    """`better` minus `worse`, column by column (PSNR by default; index 1: SSIM)."""
    return [cell(rows, better, s, index) - cell(rows, worse, s, index) for s in sets]


def span(values: list[float], digits: int = 2, joiner: str = "-") -> str:
    """`lowest-highest` (one figure when they are equal at `digits`)."""
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}{joiner}{high}"


def each(values: list[float], digits: int = 2, sign: str = "") -> str:
    """The values in column order, ` / `-separated."""
    return " / ".join(f"{value:{sign}.{digits}f}" for value in values)


def fewer_steps(rows: Table, pairs: list[tuple[str, str]]) -> list[float]:
    """Percent fewer steps of the first of each pair than of the second."""
    return [100 - 100 * cell(rows, a, "steps") / cell(rows, b, "steps") for a, b in pairs]


def best(rows: Table, column: str, index: int = 0, lowest: bool = False) -> list[str]:
    """The rows holding a column's best value (several: a tie at the table's precision)."""
    values = {row: cell(rows, row, column, index) for row in rows}
    target = (min if lowest else max)(values.values())
    return [row for row, value in values.items() if value == target]


class Contradicted(AssertionError):
    """The table no longer says what a phrase claims in words (who leads, who ties, what loses)."""


def require(condition: bool, claim: str) -> None:
    if not condition:
        raise Contradicted(claim)


def mean_psnr(rows: Table, row: str) -> float:
    return sum(cell(rows, row, s) for s in PSNR_SETS) / len(PSNR_SETS)


@dataclass(frozen=True)
class Quote:
    """A phrase of `document` with its figures as `{}`, and the figures: a function of the section's first table."""

    section: str
    phrase: str
    figures: Callable[[Table], tuple[str, ...]]
    document: Path = RESULTS

    def render(self, text: str | None = None) -> str:
        return self.phrase.format(*self.figures(tables(self.section, text)[0]))


def flat(text: str) -> str:
    """Whitespace collapsed: a phrase may wrap across lines of the markdown."""
    return " ".join(text.split())
