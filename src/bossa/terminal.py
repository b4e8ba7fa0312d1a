"""Rendering for the command line: one console for output, one for errors, tables, JSON.

Tables are drawn with rich on a terminal. When stdout is a pipe or a file, rich would
squeeze them into 80 columns and cut headers; there they are printed plain instead:
whole values, columns aligned with two spaces, one row per line, so `grep`, `cut` and
`column` work on them.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["err", "out", "print_json", "table"]

out = Console()
err = Console(stderr=True)


def print_json(value: Any) -> None:
    if out.is_terminal:
        out.print_json(json.dumps(value, default=str))
    else:  # plain JSON: no colour codes, no wrapping
        out.file.write(json.dumps(value, default=str, indent=2) + "\n")


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    if not out.is_terminal:
        _plain(rows, columns, title)
        return
    view = Table(title=title)
    for column in columns:
        view.add_column(column)
    for row in rows:
        view.add_row(*(_cell(row.get(c)) for c in columns))
    out.print(view)


def _plain(rows: list[dict[str, Any]], columns: list[str], title: str | None) -> None:
    cells = [[_cell(row.get(c)).replace("\n", " ") for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [] if title is None else [title]
    lines.extend(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
        for line in [columns, *cells]
    )
    out.file.write("\n".join(lines) + "\n")
