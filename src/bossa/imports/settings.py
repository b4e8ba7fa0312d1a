"""Bulk import settings (`[imports]`, BOSSA_IMPORTS_*), every one bounded.

The bounds keep one hostile or mistaken file from taking the server's memory (work_mem
is per sort or hash of the importing session), or the importer's (a field or a line is
never held past its bound), and keep a chunk's transaction of a sane size.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register

__all__ = ["ImportSettings"]


@register
class ImportSettings(BossaSettings):
    section: ClassVar[str] = "imports"
    model_config = SettingsConfigDict(env_prefix="BOSSA_IMPORTS_")

    #: Rows applied per transaction (the resumable position moves after each). Larger is
    #: faster; smaller redoes less after a kill and holds locks for less time.
    chunk_rows: int = Field(default=50_000, ge=100, le=1_000_000)
    #: Memory for the importing session's sorts and hashes (duplicates, references), MB.
    work_mem_mb: int = Field(default=64, ge=4, le=2_048)
    #: The longest CSV field the careful reader accepts, in characters.
    max_field_chars: int = Field(default=65_536, ge=256, le=16 * 1024 * 1024)
    #: The longest line the careful reader holds, in bytes (longer: the row is rejected).
    max_line_bytes: int = Field(default=1_048_576, ge=1_024, le=64 * 1024 * 1024)
    #: The largest file the API's upload route accepts, in bytes (bigger: use the CLI).
    upload_max_bytes: int = Field(default=1_048_576, ge=1_024, le=64 * 1024 * 1024)
    #: Rejected rows the API's upload answer lists (all of them are in the job's errors).
    upload_errors_listed: int = Field(default=100, ge=0, le=10_000)
