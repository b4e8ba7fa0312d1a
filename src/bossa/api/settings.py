"""HTTP server settings: where to listen, TLS, request limits, and where metrics are served."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register

__all__ = ["ApiSettings"]


@register
class ApiSettings(BossaSettings):
    section: ClassVar[str] = "api"
    model_config = SettingsConfigDict(env_prefix="BOSSA_API_")

    #: The loopback by default: exposing the API is a decision, not an accident.
    host: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    port: int = Field(default=8080, ge=1, le=65535)
    #: Seconds /readyz waits for PostgreSQL before answering 503.
    ready_timeout_s: float = Field(default=2.0, gt=0, le=30)
    #: Largest request body accepted; larger ones get 413 before they are read.
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=104_857_600)
    #: Deepest JSON nesting accepted in a body (what every listing can render back).
    max_json_depth: int = Field(default=32, ge=2, le=256)
    #: Serve HTTPS with this certificate chain and key (PEM); both or neither.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Serve /metrics without a token on this separate port (on `metrics_host`); unset:
    #: /metrics is on the API port and needs a token with the metrics.read permission.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = Field(default="127.0.0.1", min_length=1, max_length=255)

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        for path in (self.tls_cert_file, self.tls_key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a readable file")
        return self
