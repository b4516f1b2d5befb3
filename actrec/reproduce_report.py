"""A reproduced table's numbers beside the paper's: aggregation and formatting.

Values (actrec's and the paper's) are fractions in a result and percentages on display, with the paper's decimals. A cell
over several splits (or seeds) shows ``mean ± std`` with the *sample* standard deviation
(``ddof=1``, as ``actrec.sweep``); the difference is actrec's mean minus the paper's number,
in percentage points, signed. A cell missing any split or seed has no mean (never an average
over fewer): it shows why.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["aggregate", "format_diff", "format_value", "rich_table", "to_csv", "to_markdown"]


def aggregate(values: Sequence[float]) -> tuple[float, float | None, int]:
    """(mean, sample std or None for one value, n) of ``values``."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, std, n


def format_value(mean: float | None, std: float | None, decimals: int) -> str:
    """A fraction as a percentage: ``"47.31 ± 1.20"``, ``"47.3"`` without std, ``""`` for None."""
    if mean is None:
        return ""
    text = f"{mean * 100:.{decimals}f}"
    return text if std is None else f"{text} ± {std * 100:.{decimals}f}"


def format_diff(mean: float | None, paper: float | None, decimals: int) -> str:
    """actrec minus the paper in percentage points, signed (``"+0.2"``, ``"-3.1"``); ``""``
    when either is missing. ``paper`` is a percentage as printed in the paper (a result's
    cells hold it as a fraction: pass ``cell["paper"] * 100``)."""
    if mean is None or paper is None:
        return ""
    text = f"{mean * 100 - paper:+.{decimals}f}"
    return "+" + text[1:] if float(text) == 0 else text  # no "-0.0"


def _cell_text(cell: dict[str, Any], decimals: int,
               reasons: list[str] | None = None) -> tuple[str, str, str]:
    """(actrec, paper, difference) texts of one cell; with ``reasons`` (``cell_reasons``) a
    cell without a value names its reason by number."""
    percent = None if cell["paper"] is None else cell["paper"] * 100
    paper = "" if percent is None else f"{percent:.{decimals}f}"
    if cell["status"] != "ok":
        text = f"{cell['status']}: {cell['reason']}"
        if reasons is not None:
            return f"{cell['status']} [{reasons.index(text) + 1}]", paper, ""
        return text, paper, ""
    return (format_value(cell["mean"], cell["std"], decimals), paper,
            format_diff(cell["mean"], percent, decimals))


def _headers(result: dict[str, Any]) -> list[str]:
    out = list(result["header"])
    for column in result["columns"]:
        out += [f"{column} actrec", f"{column} paper", f"{column} Δ"]
    return out


def _rows(result: dict[str, Any], reasons: list[str] | None = None) -> list[list[str]]:
    rows = []
    for row in result["rows"]:
        line = list(row["labels"])
        for cell in row["cells"]:
            line += list(_cell_text(cell, result["decimals"], reasons))
        rows.append(line)
    return rows


def to_markdown(result: dict[str, Any]) -> str:
    """The table as Markdown: title, source, the table, then notes."""
    headers = _headers(result)
    spread = "mean ± sample std over the splits" if result["report"] == "mean" else "per split"
    about = (f"Paper: {result['source']['paper']}, {result['source']['table']}. "
             f"Preset: {result['preset']}; inputs: {result['inputs']}; {spread}.")
    lines = [f"# {result['title']}", "", about,
             "", "| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    for line in _rows(result):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in line) + " |")
    if result.get("notes"):
        lines += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def to_csv(result: dict[str, Any]) -> str:
    """One line per cell: row labels, column, actrec mean/std/n (percent), paper, difference,
    status and reason."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*result["header"], "column", "actrec_mean", "actrec_std", "n", "paper",
                     "difference", "status", "reason"])
    d = result["decimals"] + 2
    for row in result["rows"]:
        for column, cell in zip(result["columns"], row["cells"]):
            mean, std = cell.get("mean"), cell.get("std")
            paper = None if cell["paper"] is None else cell["paper"] * 100
            writer.writerow([
                *row["labels"], column, "" if mean is None else f"{mean * 100:.{d}f}",
                "" if std is None else f"{std * 100:.{d}f}", cell.get("n", 0),
                "" if paper is None else f"{paper:.{result['decimals']}f}",
                "" if mean is None or paper is None else f"{mean * 100 - paper:.{d}f}",
                cell["status"], cell.get("reason") or ""])
    return out.getvalue()


def cell_reasons(result: dict[str, Any]) -> list[str]:
    """The distinct ``"<status>: <reason>"`` of the cells without a value, in table order:
    the terminal table numbers its cells by them (``failed [1]``) and lists them below, so
    that a long reason does not widen every column of the table."""
    seen: list[str] = []
    for row in result["rows"]:
        for cell in row["cells"]:
            if cell["status"] != "ok":
                text = f"{cell['status']}: {cell['reason']}"
                if text not in seen:
                    seen.append(text)
    return seen


def rich_table(result: dict[str, Any]):
    """The table for a terminal: a cell without a value shows its status and the number of
    its reason in ``cell_reasons``."""
    from rich.table import Table

    table = Table(title=result["title"], caption=f"{result['source']['paper']}, "
                  f"{result['source']['table']} · preset {result['preset']} · "
                  f"{result['elapsed_s']:.0f} s")
    for name in result["header"]:
        table.add_column(name)
    for column in result["columns"]:
        table.add_column(f"{column}\nactrec", justify="right")
        table.add_column("paper", justify="right")
        table.add_column("Δ", justify="right")
    reasons = cell_reasons(result)
    for line in _rows(result, reasons):
        table.add_row(*line)
    return table
