"""Billing settings."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register

__all__ = ["MAX_WORKERS", "BillingSettings"]

#: Bill-run workers one process may run (each holds a pooled connection).
MAX_WORKERS = 64


@register
class BillingSettings(BossaSettings):
    section: ClassVar[str] = "billing"
    model_config = SettingsConfigDict(env_prefix="BOSSA_BILLING_")

    #: Accounts billed per transaction by a bill-run worker.
    chunk_size: int = Field(default=500, ge=1, le=100_000)
    #: Bill-run workers in one process (each its own connection). Each keeps a database
    #: core busy: leave one for the front office, whose payments go on during the run
    #: (bench/billing: on 2 cores, 1 worker keeps payment p99 within 1.5x, 2 do not).
    workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    #: Days from the period's end to a bill's due date.
    due_days: int = Field(default=20, ge=0, le=366)
    #: Staged items settled per transaction.
    settle_batch: int = Field(default=200, ge=1, le=100_000)
