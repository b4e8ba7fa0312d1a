"""Missed-call alert settings, each bounded (docs/alerts.md, "Settings")."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register

__all__ = ["AlertsSettings"]


@register
class AlertsSettings(BossaSettings):
    section: ClassVar[str] = "alerts"
    model_config = SettingsConfigDict(env_prefix="BOSSA_ALERTS_")

    # -- SIP intake
    sip_host: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    sip_port: int = Field(default=5060, ge=1, le=65535)
    #: Transports to listen on.
    sip_transports: list[Literal["udp", "tcp"]] = Field(default=["udp", "tcp"], min_length=1)
    #: The answer sent after recording: 486 Busy Here for busy, this for the others.
    sip_answer: Literal[480, 486, 487, 603] = 480

    # -- SMS centre (SMPP 3.4)
    smpp_host: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    smpp_port: int = Field(default=2775, ge=1, le=65535)
    smpp_system_id: str = Field(default="bossa", min_length=1, max_length=15)
    smpp_password: SecretStr = Field(default=SecretStr(""), max_length=8)
    #: The sender address of the alerts (a short code).
    smpp_source_addr: str = Field(default="10086", pattern=r"^[0-9A-Za-z]{1,20}$")
    smpp_binds: int = Field(default=2, ge=1, le=16)
    smpp_window: int = Field(default=50, ge=1, le=1000)
    #: Parts per second for all binds together, below the SMSC's limit.
    smpp_rate_per_s: float = Field(default=500.0, gt=0, le=100_000)
    smpp_enquire_link_s: float = Field(default=30.0, ge=1, le=600)
    smpp_response_timeout_s: float = Field(default=10.0, ge=0.5, le=120)
    smpp_throttle_pause_s: float = Field(default=0.1, ge=0.01, le=10)
    smpp_throttle_max_pause_s: float = Field(default=5.0, ge=0.01, le=300)
    smpp_reconnect_max_s: float = Field(default=10.0, ge=0.1, le=600)

    # -- messages
    #: Calls from one caller to one callee within this window become one SMS with the
    #: count. 0 sends at once, one SMS per call.
    window_s: float = Field(default=30.0, ge=0, le=3600)
    default_language: Literal["en", "zh", "ko"] = "en"
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    #: How long a message 3's reply code stays valid (M4).
    uplink_validity_h: int = Field(default=24, ge=1, le=720)
    #: Wrong codes an offer takes before it is closed.
    uplink_attempts: int = Field(default=3, ge=1, le=10)

    # -- database monitor and outage mode
    #: Local folder of the spool and the registration copy (fsynced files).
    spool_dir: Path = Path(".bossa/alerts")
    monitor_interval_s: float = Field(default=0.25, ge=0.05, le=10)
    monitor_timeout_s: float = Field(default=0.5, ge=0.05, le=10)
    #: Consecutive query errors that open the breaker (database down) at once.
    breaker_errors: int = Field(default=3, ge=1, le=100)
    #: How often the registration copy is refreshed while the database is up.
    registry_refresh_s: float = Field(default=30.0, ge=1, le=3600)

    # -- status port (/readyz and /metrics of `bossa alerts serve`)
    status_host: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    status_port: int = Field(default=9460, ge=0, le=65535)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
