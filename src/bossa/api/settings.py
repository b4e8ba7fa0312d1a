"""HTTP server settings."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register

__all__ = ["ApiSettings"]


@register
class ApiSettings(BossaSettings):
    section: ClassVar[str] = "api"
    model_config = SettingsConfigDict(env_prefix="BOSSA_API_")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    #: Seconds /readyz waits for PostgreSQL before answering 503.
    ready_timeout_s: float = Field(default=2.0, gt=0, le=30)
