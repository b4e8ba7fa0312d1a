"""Database settings: which PostgreSQL bossa uses, or where its embedded one lives."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import platformdirs
import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register
from bossa.db.embedded import SYSTEM_DIR

__all__ = ["DatabaseSettings"]


def _default_data_dir() -> Path:
    # Root's home is private (0700), out of reach of the user the server runs as; root's
    # services keep their data in /var/lib, and so does bossa's embedded server.
    if os.geteuid() == 0:
        return SYSTEM_DIR / "data"
    return Path(platformdirs.user_data_dir("bossa"))


@register
class DatabaseSettings(BossaSettings):
    section: ClassVar[str] = "database"
    model_config = SettingsConfigDict(env_prefix="BOSSA_")

    #: A libpq URL or conninfo. Unset: bossa starts its embedded PostgreSQL.
    database_url: SecretStr | None = None
    #: Where the embedded PostgreSQL keeps its cluster (pg/) and run files (run/); for
    #: root, /var/lib/bossa/data.
    data_dir: Path = Field(default_factory=_default_data_dir)
    #: TCP port for the embedded server on 127.0.0.1; 0 listens on its Unix socket only.
    embedded_port: int = Field(default=0, ge=0, le=65535)
    #: Database name inside the embedded server.
    embedded_database: str = Field(default="bossa", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    pool_min_size: int = Field(default=1, ge=0, le=100)
    pool_max_size: int = Field(default=10, ge=1, le=200)

    @field_validator("database_url")
    @classmethod
    def _url_has_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        text = value.get_secret_value()
        if "://" in text and not text.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL or a libpq conninfo string")
        try:
            conninfo_to_dict(text)
        except psycopg.ProgrammingError:
            # libpq's message quotes the text it could not read, password included.
            raise ValueError("is not a valid postgresql:// URL or libpq conninfo string") from None
        return value
