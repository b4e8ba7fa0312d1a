"""Bulk import and export of the operator's data: customers, billing accounts, contracts
and products, from CSV or JSON-lines files. See docs/import.md.

A file is staged by COPY into a temporary table, checked set-wise in SQL, and applied
through the owning modules' published import functions (`customers.import_customers`,
`ledger.import_accounts`, ...) a chunk per transaction, with the job's position moved in
the same transaction: a killed import run again with the same file resumes and applies
nothing twice. The module's own tables (`imports.jobs`, `imports.job_errors`) record the
jobs and the rows they rejected.
"""

from bossa.imports.models import KINDS, FileFormat, ImportJob, ImportOutcome, Kind, KindName
from bossa.imports.service import ImportRequest, export_file, import_file, job, job_errors, jobs
from bossa.imports.settings import ImportSettings

__all__ = [
    "KINDS",
    "FileFormat",
    "ImportJob",
    "ImportOutcome",
    "ImportRequest",
    "ImportSettings",
    "Kind",
    "KindName",
    "export_file",
    "import_file",
    "job",
    "job_errors",
    "jobs",
]
