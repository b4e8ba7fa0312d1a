"""Named SQL queries, loaded from `.sql` files, as procrastinate keeps them.

A file holds queries under `-- name: <query_name>` headers, each followed by a comment
line that says what it is for. Python code refers to `queries["take"]`, so every query
can be read, grepped and EXPLAINed where it is written.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString

__all__ = ["load_queries"]

_HEADER = re.compile(r"^-- name: *(?P<name>[a-z_][a-z0-9_]*) *$", re.MULTILINE)


def load_queries(package: str, filename: str = "queries.sql") -> dict[str, LiteralString]:
    """The named queries of `package/filename`; they are our own text, so LiteralString."""
    text = resources.files(package).joinpath(filename).read_text()
    queries: dict[str, LiteralString] = {}
    headers = list(_HEADER.finditer(text))
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        end = following.start() if following else len(text)
        body = text[header.end() : end].strip()
        name = header.group("name")
        if name in queries:
            raise ValueError(f"{package}/{filename}: query {name!r} is defined twice")
        # mypy reads LiteralString as str; the text is ours, from the package, never a user's.
        queries[name] = body
    return queries
