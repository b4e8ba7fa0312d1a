"""Journal settings: the defaults every lane starts from, and per-lane overrides."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register
from bossa.errors import InvalidInput

__all__ = ["JournalSettings", "LanePolicy"]


class LanePolicy(BaseModel):
    """How a lane treats its entries; every field can be overridden per lane."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Attempts before an entry is parked (and keeps blocking its key).
    max_attempts: int = Field(default=10, ge=1, le=1_000)
    #: First retry delay; doubles on each attempt up to backoff_max_ms, with +-25% jitter.
    backoff_base_ms: int = Field(default=1_000, ge=0)
    backoff_max_ms: int = Field(default=300_000, ge=0)
    #: How long a worker holds an entry before it is handed out again (heartbeats extend it).
    lease_ms: int = Field(default=30_000, ge=100)
    #: How long finished entries are kept before purge.
    retention_s: int = Field(default=7 * 24 * 3600, ge=0)
    #: Largest payload accepted, as JSON text.
    max_payload_bytes: int = Field(default=1_048_576, ge=2)
    #: A paused lane keeps accepting entries; its workers take nothing.
    paused: bool = False

    @model_validator(mode="after")
    def _backoff_range(self) -> LanePolicy:
        if self.backoff_max_ms < self.backoff_base_ms:
            raise ValueError("backoff_max_ms must be at least backoff_base_ms")
        return self

    def merged(self, overrides: dict[str, Any], *, lane: str) -> LanePolicy:
        """This policy with a lane's overrides applied; unknown names are refused."""
        try:
            return LanePolicy.model_validate({**self.model_dump(), **overrides})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "settings"
            known = ", ".join(LanePolicy.model_fields)
            hint = f" (known settings: {known})" if first["type"] == "extra_forbidden" else ""
            raise InvalidInput(f"{first['msg']}{hint}", field=f"lane {lane!r} {where}") from exc


@register
class JournalSettings(BossaSettings):
    section: ClassVar[str] = "journal"
    model_config = SettingsConfigDict(env_prefix="BOSSA_JOURNAL_")

    max_attempts: int = Field(default=10, ge=1, le=1_000)
    backoff_base_ms: int = Field(default=1_000, ge=0)
    backoff_max_ms: int = Field(default=300_000, ge=0)
    lease_ms: int = Field(default=30_000, ge=100)
    retention_s: int = Field(default=7 * 24 * 3600, ge=0)
    max_payload_bytes: int = Field(default=1_048_576, ge=2)
    #: Entries a worker takes at once.
    take_batch: int = Field(default=100, ge=1, le=10_000)
    #: Concurrent takers per lane in one worker process.
    concurrency: int = Field(default=4, ge=1, le=256)
    #: Handlers run at once within one taken batch (its entries have distinct keys).
    batch_concurrency: int = Field(default=16, ge=1, le=1_000)
    #: A worker wakes at least this often even if no notification arrives.
    poll_interval_s: float = Field(default=30.0, gt=0)
    #: How often a worker looks for expired leases in its lane.
    reap_interval_s: float = Field(default=1.0, gt=0)
    #: Rows deleted per statement by purge.
    purge_batch: int = Field(default=5_000, ge=1)

    def default_policy(self) -> LanePolicy:
        return LanePolicy(
            max_attempts=self.max_attempts,
            backoff_base_ms=self.backoff_base_ms,
            backoff_max_ms=self.backoff_max_ms,
            lease_ms=self.lease_ms,
            retention_s=self.retention_s,
            max_payload_bytes=self.max_payload_bytes,
        )
