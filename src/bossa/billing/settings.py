"""Billing settings, each with its bounds (docs/billing.md, "Settings")."""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from bossa.billing.models import (
    DEFAULT_MAX_BALANCE,
    DEFAULT_MAX_PAYMENT,
    MAX_DUE_DAYS,
    MIN_DUE_DAYS,
    PaymentLimits,
)
from bossa.config import BossaSettings, register
from bossa.ledger import MAX_MINOR

__all__ = ["MAX_CHUNK", "MAX_WORKERS", "BillingSettings"]

#: Bill-run workers one process may run (each holds a pooled connection).
MAX_WORKERS = 64
#: Accounts one bill-run transaction may bill (and staged items one settlement batch
#: may apply).
MAX_CHUNK = 100_000

_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _limits(value: dict[str, int], defaults: dict[str, int]) -> dict[str, int]:
    for currency, amount in value.items():
        if not _CURRENCY.match(currency):
            raise ValueError(f"{currency!r} is not an ISO 4217 code (three capital letters)")
        if not 1 <= amount <= MAX_MINOR:
            raise ValueError(f"{currency}: {amount} is not between 1 and {MAX_MINOR} minor units")
    # What is given overrides the defaults currency by currency.
    return {**defaults, **value}


@register
class BillingSettings(BossaSettings):
    section: ClassVar[str] = "billing"
    model_config = SettingsConfigDict(env_prefix="BOSSA_BILLING_")

    #: Accounts billed per transaction by a bill-run worker.
    chunk_size: int = Field(default=500, ge=1, le=MAX_CHUNK)
    #: Bill-run workers in one process (each its own connection). Each keeps a database
    #: core busy: leave one for the front office, whose payments go on during the run
    #: (bench/billing: on 2 cores, 1 worker keeps payment p99 within 1.5x, 2 do not).
    workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    #: Days from the period's end to a bill's due date.
    due_days: int = Field(default=20, ge=MIN_DUE_DAYS, le=MAX_DUE_DAYS)
    #: Staged items settled per transaction.
    settle_batch: int = Field(default=200, ge=1, le=MAX_CHUNK)
    #: How long ago a run's period may have ended (days): a cycle may catch up this far
    #: back after an outage, and no further (a run for 2000-01 is refused).
    period_lookback_days: int = Field(default=93, ge=1, le=366)
    #: The largest single payment per currency, minor units (each 1 to 10^15); the
    #: currencies given override the defaults one by one.
    max_payment: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_MAX_PAYMENT))
    #: The most prepaid funds an account may hold (its prepaid book plus deposits staged
    #: for it) per currency, minor units (each 1 to 10^15).
    max_balance: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_MAX_BALANCE))

    @field_validator("max_payment")
    @classmethod
    def _max_payment(cls, value: dict[str, int]) -> dict[str, int]:
        return _limits(value, DEFAULT_MAX_PAYMENT)

    @field_validator("max_balance")
    @classmethod
    def _max_balance(cls, value: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        balance = _limits(value, DEFAULT_MAX_BALANCE)
        for currency, most in info.data.get("max_payment", {}).items():
            room = balance.get(currency)
            if room is not None and most > room:
                raise ValueError(
                    f"{currency}: {room} is below the largest payment of {most} (max_payment)"
                )
        return balance

    def limits(self) -> PaymentLimits:
        return PaymentLimits(dict(self.max_payment), dict(self.max_balance))
