"""Provisioning settings, each with its range (docs/provisioning.md, Settings): a value
outside it stops start-up with a message naming the variable."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register

__all__ = ["ProvisioningSettings"]


@register
class ProvisioningSettings(BossaSettings):
    section: ClassVar[str] = "provisioning"
    model_config = SettingsConfigDict(env_prefix="BOSSA_PROVISIONING_")

    #: After a call finds a division unreachable, orders skip the call for this long and
    #: go straight to its buffer (P4a); the backup daemon's first success clears it.
    down_hold_s: float = Field(default=30.0, ge=0, le=3600)
    #: Receipts an order daemon takes from its receive table per pass.
    receipt_batch: int = Field(default=50, ge=1, le=10_000)
    #: How often an idle order daemon looks at its receive table.
    receipt_poll_s: float = Field(default=1.0, ge=0.01, le=60)
    #: Commands a backup daemon takes and delivers at once. An SQL division gets a batch
    #: in one transaction and a Redis one in a script call per 250, so bigger batches
    #: replay a backlog faster; SOAP and REST divisions call once per command (at most
    #: a few at once), and the lease is extended while a batch is in hand.
    backup_batch: int = Field(default=500, ge=1, le=10_000)
    #: Batches a backup daemon has in hand at once (each holds distinct contracts).
    backup_concurrency: int = Field(default=4, ge=1, le=64)
    #: The LOGNAME recorded with each command.
    logname: str = Field(default="bossa", pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    #: A backup daemon that finds its division unreachable stops taking commands and
    #: checks the division's protocol (SELECT 1, PING, the WSDL, a HEAD) after this long,
    #: then after twice as long each time it still does not answer, up to
    #: probe_backoff_max_s (with +-25% jitter). The backoff starts over after a delivery.
    probe_backoff_base_s: float = Field(default=1.0, ge=0.01, le=600, allow_inf_nan=False)
    probe_backoff_max_s: float = Field(default=60.0, ge=0.01, le=3600, allow_inf_nan=False)

    #: An order still `accepted` this long after it arrived, none of its commands held by
    #: a claim, was left by a process that died between accepting it and recording its
    #: direct calls: the backup daemons complete it from the journal's outcome (they
    #: look every half of this). A live order process holds its commands' claims (and
    #: heartbeats them) until it has recorded the outcome, so it is never overtaken.
    stranded_after_s: float = Field(default=60.0, ge=0.2, le=86_400)

    @model_validator(mode="after")
    def _probe_range(self) -> ProvisioningSettings:
        if self.probe_backoff_max_s < self.probe_backoff_base_s:
            raise ValueError("probe_backoff_max_s must be at least probe_backoff_base_s")
        return self
