"""The one Markdown table writer, for leaderboards and `bench perf` reports (GitHub-flavoured:
a header row, a rule whose `---:` cells right-align numeric columns, then a row per record)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any


def table(rows: Any, header: Sequence[str] | None = None, right: Collection[str] = ()) -> str:
    """`rows` (sequences of cell values, or a DataFrame, whose columns are the default header) as a
    Markdown table; the columns named in `right` are right-aligned. Cells are `str(value)`, with
    `|` escaped so that a cell never splits."""
    if hasattr(rows, "itertuples"):  # a DataFrame (duck-typed: no pandas import here)
        header = list(rows.columns) if header is None else header
        rows = rows.itertuples(index=False)
    if header is None:
        raise TypeError("table: a header is needed unless rows is a DataFrame")
    lines = [_row(header), "|" + "|".join("---:" if c in right else "---" for c in header) + "|"]
    lines += [_row(r) for r in rows]
    return "\n".join(lines)


def _row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(str(v).replace("|", "\\|") for v in cells) + " |"
