"""Rendering for the command line: one console for output, one for errors, tables, JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["err", "out", "print_json", "table"]

out = Console()
err = Console(stderr=True)


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value, default=str))


def table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    view = Table(title=title)
    for column in columns:
        view.add_column(column)
    for row in rows:
        view.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(view)
