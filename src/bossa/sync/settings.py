"""Sync pipeline settings, each bounded (docs/sync-and-rating.md, "Business events")."""

from __future__ import annotations

from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register

__all__ = ["SyncSettings"]


@register
class SyncSettings(BossaSettings):
    section: ClassVar[str] = "sync"
    model_config = SettingsConfigDict(env_prefix="BOSSA_SYNC_")

    #: The pipeline instance this process publishes to and listens for (S5: one lane per
    #: instance). Partitions with an account router (S12) are not built: one instance.
    instance: int = Field(default=0, ge=0, le=0)
    #: The zone of the local time usage records carry: a change made now holds from now
    #: in this zone.
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    #: Account-sync events taken and applied per transaction (S8).
    batch: int = Field(default=500, ge=1, le=10_000)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def lane(self) -> str:
        return f"sync.pipeline.{self.instance}"
