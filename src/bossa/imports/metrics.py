"""Prometheus metrics of bulk import: rows applied and rejected, jobs by how they ended.

Counted in the importing process (the API's for uploads, the CLI's for files); the jobs
themselves are in imports.jobs for anyone to read.
"""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["JOBS", "ROWS"]

ROWS = Counter(
    "bossa_import_rows", "Rows of imported files, by kind and outcome", ["kind", "outcome"]
)
JOBS = Counter("bossa_import_jobs", "Import runs, by kind and how they ended", ["kind", "status"])
