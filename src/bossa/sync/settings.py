"""Sync pipeline settings, each bounded (docs/sync-and-rating.md, "Business events")."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register

__all__ = ["SyncSettings"]


@register
class SyncSettings(BossaSettings):
    section: ClassVar[str] = "sync"
    model_config = SettingsConfigDict(env_prefix="BOSSA_SYNC_")

    #: The pipeline instance this process listens for (S5: one lane per instance).
    instance: int = Field(default=0, ge=0, le=7)
    #: Pipeline instances, one per account partition (S12): the publisher routes each
    #: customer's events to its instance's lane (`bossa sync route`, else a hash).
    instances: int = Field(default=1, ge=1, le=8)
    #: The business-event file (S2-S4, S6, S7): YAML, TOML or JSON; unset: the packaged
    #: default (bossa/sync/events.yaml).
    events: Path | None = None
    #: How long PROCESSED events are kept on the lane before the listener purges them
    #: (S6); the listener sets it as its lane's retention.
    retention_s: int = Field(default=86_400, ge=60, le=30 * 86_400)
    #: Seconds between two looks at the lane when nothing is READY.
    poll_s: float = Field(default=0.2, ge=0.01, le=10.0)
    #: The zone of the local time usage records carry: a change made now holds from now
    #: in this zone.
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    #: Account-sync events taken and applied per transaction (S8).
    batch: int = Field(default=500, ge=1, le=10_000)

    # S13, interleaving (`bossa sync pipeline`): one process rates CDRs and processes
    # business events in turn. Only READY events of the instance's lane count.
    #: The maximum threshold: rating stops when this many events are READY.
    max_events: int = Field(default=100, ge=1, le=1_000_000)
    #: The minimum threshold: rating resumes when READY events fall to this many.
    min_events: int = Field(default=0, ge=0, le=1_000_000)
    #: The maximum CDR processing time: rating stops after this many seconds even below
    #: the maximum threshold (checked between files: a file is one transaction); 0: none.
    max_cdr_time_s: float = Field(default=1.0, ge=0.0, le=86_400.0)
    #: The maximum business event processing time: rating resumes after this many
    #: seconds even above the minimum threshold (checked between takes); 0: none.
    max_event_time_s: float = Field(default=1.0, ge=0.0, le=86_400.0)
    #: Seconds between two counts of the READY events while nothing else happens (they
    #: are also counted before each file and each take).
    check_interval_s: float = Field(default=0.5, ge=0.01, le=60.0)
    #: Switch to events at once when no CDR file waits in the inbox and events are READY
    #: (the seed's option; off, the pipeline waits for a threshold as the seed's default).
    events_when_no_cdrs: bool = False

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("events")
    @classmethod
    def _events_file(cls, value: Path | None) -> Path | None:
        """Checked at start-up: a mistake in the file stops the process naming the
        field, instead of failing the first business transaction that publishes."""
        from bossa.errors import UserError
        from bossa.sync.service import check_event_file  # the modules are the service's

        try:
            check_event_file(value)
        except UserError as exc:
            raise ValueError(f"{exc.field}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _instance_exists(self) -> SyncSettings:
        if self.instance >= self.instances:
            raise ValueError(
                f"instance: {self.instance} is not one of the {self.instances} instances"
                " (BOSSA_SYNC_INSTANCES)"
            )
        return self

    @field_validator("min_events")
    @classmethod
    def _below_max(cls, value: int, info: ValidationInfo) -> int:
        top = info.data.get("max_events")
        if isinstance(top, int) and value >= top:
            raise ValueError(
                f"must be below max_events ({top}), or the pipeline would switch back and forth"
            )
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def lane(self) -> str:
        return f"sync.pipeline.{self.instance}"
