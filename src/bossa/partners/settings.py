"""Partner platform settings, each bounded (docs/partners.md, "Settings")."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register

__all__ = ["PartnersSettings"]


@register
class PartnersSettings(BossaSettings):
    section: ClassVar[str] = "partners"
    model_config = SettingsConfigDict(env_prefix="BOSSA_PARTNERS_")

    #: A run's input as JSON, bytes: larger bodies are refused naming `input`.
    max_input_bytes: int = Field(default=16 * 1024, ge=256, le=1024 * 1024)
    #: Runs an API process reserves from a daily quota at once (one row update per block;
    #: a process that stops loses what it did not use, so quotas are never exceeded).
    quota_block: int = Field(default=50, ge=1, le=10_000)
    #: Failures in a row that open a legacy system's breaker, and how long it stays open.
    breaker_threshold: int = Field(default=5, ge=1, le=1000)
    breaker_reset_s: float = Field(default=30.0, ge=0.05, le=3600.0)

    #: Billing logs verified per transaction by the collector.
    collect_batch: int = Field(default=1000, ge=1, le=10_000)
    #: Billing logs older than this are refused (clock sanity), days.
    max_log_age_days: int = Field(default=35, ge=1, le=366)
    #: How far in the future a billing log's time may be (clock skew between hosts), s.
    max_clock_skew_s: int = Field(default=300, ge=0, le=3600)
    #: MDR records per file at most.
    records_per_file: int = Field(default=100_000, ge=1, le=1_000_000)
    #: Where MDR and error files are written before (and until) their transfer is confirmed.
    spool_dir: Path = Path("bossa-mdr")
    #: The MDR header's sender and recipient (letters, digits, - and _).
    sender: str = Field(default="BOSSA", pattern=r"^[A-Za-z0-9_-]{1,16}$")
    recipient: str = Field(default="LEGACYBILL", pattern=r"^[A-Za-z0-9_-]{1,16}$")
    #: The header's test flag: files for a receiver's test system.
    test_files: bool = False

    #: The legacy billing system's SFTP server; no host means files stay in the spool.
    sftp_host: str | None = Field(default=None, max_length=255)
    sftp_port: int = Field(default=22, ge=1, le=65535)
    sftp_user: str = Field(default="bossa", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    #: The private key bossa logs in with, and the known_hosts file that must hold the
    #: server's host key (no host key check is ever skipped).
    sftp_key_file: Path | None = None
    sftp_known_hosts: Path | None = None
    #: The folder on the server, relative to the SFTP user's root.
    sftp_dir: str = Field(default="in", pattern=r"^[A-Za-z0-9._/-]{1,200}$")
    sftp_timeout_s: float = Field(default=20.0, ge=0.5, le=600.0)
    #: Upload speed limit, bytes per second (none by default): for a link to the billing
    #: system that other traffic shares.
    sftp_max_bytes_per_s: int | None = Field(default=None, ge=1024, le=10 * 1024**3)
