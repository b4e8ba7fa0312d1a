"""Journal settings: the defaults every lane starts from, and per-lane overrides.

Every setting has a range (`Field(ge=..., le=...)`), the same for the defaults and for a
lane's overrides, documented in docs/journal.md. The upper bounds are not taste: they
keep every time the journal computes in PostgreSQL (`now() + lease`, the backoff, the
retention cut-off) inside `interval`, `timestamptz` and `integer`, so that no stored
setting can make a take, a fail or a purge fail on every attempt.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register
from bossa.errors import InvalidInput

__all__ = ["CLAIM_LEASE_MS", "MAX_LEASE_MS", "MAX_RUN", "JournalSettings", "LanePolicy"]

_DAY_MS = 86_400_000
#: The longest lease a take, a heartbeat or a direct claim may ask for (one day).
MAX_LEASE_MS = _DAY_MS
#: The lease of a direct delivery (`enqueue_or_claim`) when the lane's is shorter: no
#: heartbeat extends it, so it must outlast a slow call to the target.
CLAIM_LEASE_MS = 30_000
#: The most entries of one key a take may lease together (`take_run`).
MAX_RUN = 10_000

MaxAttempts = Annotated[int, Field(ge=1, le=1_000)]
#: Up to an hour for the first retry, a week for the longest: both fit PostgreSQL's
#: `integer`, which journal.fail takes (a bigger value failed every fail call).
BackoffBaseMs = Annotated[int, Field(ge=0, le=3_600_000)]
BackoffMaxMs = Annotated[int, Field(ge=0, le=7 * _DAY_MS)]
#: A lease is extended by heartbeats while a handler works: a day is plenty, and
#: `now() + lease` stays a timestamp (a huge one made every take fail).
LeaseMs = Annotated[int, Field(ge=100, le=MAX_LEASE_MS)]
#: Ten years at most.
RetentionS = Annotated[int, Field(ge=0, le=3650 * 86_400)]
#: 16 MiB at most (the API refuses bodies over 1 MiB by default anyway).
MaxPayloadBytes = Annotated[int, Field(ge=2, le=16 * 1024 * 1024)]


def _check_backoff(base: int, most: int) -> None:
    if most < base:
        raise ValueError("backoff_max_ms must be at least backoff_base_ms")


class LanePolicy(BaseModel):
    """How a lane treats its entries; every field can be overridden per lane."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Attempts before an entry is parked (and keeps blocking its key).
    max_attempts: MaxAttempts = 10
    #: First retry delay; doubles on each attempt up to backoff_max_ms, with +-25% jitter.
    backoff_base_ms: BackoffBaseMs = 1_000
    backoff_max_ms: BackoffMaxMs = 300_000
    #: How long a worker holds an entry before it is handed out again. Workers heartbeat
    #: every third of it, so it need not cover the work: only a dead worker's silence.
    lease_ms: LeaseMs = 5_000
    #: How long finished entries are kept before purge.
    retention_s: RetentionS = 7 * 24 * 3600
    #: Largest payload accepted, as JSON text.
    max_payload_bytes: MaxPayloadBytes = 1_048_576
    #: A paused lane keeps accepting entries; its workers take nothing.
    paused: bool = False

    @model_validator(mode="after")
    def _backoff_range(self) -> LanePolicy:
        _check_backoff(self.backoff_base_ms, self.backoff_max_ms)
        return self

    def merged(self, overrides: dict[str, Any], *, lane: str) -> LanePolicy:
        """This policy with a lane's overrides applied; unknown names and values out of
        range are refused, naming the setting."""
        try:
            return LanePolicy.model_validate({**self.model_dump(), **overrides})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "settings"
            known = ", ".join(LanePolicy.model_fields)
            message = str(first["msg"]).removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                message += f" (known settings: {known})"
            elif first["loc"] and (bounds := _range(str(first["loc"][0]))):
                low, high = bounds
                if first["type"] in ("greater_than_equal", "less_than_equal"):
                    message = f"must be between {low} and {high} (got {first['input']!r})"
                else:
                    message += f" (it ranges from {low} to {high})"
            raise InvalidInput(message, field=f"lane {lane!r} {where}") from exc


def _range(setting: str) -> tuple[object, object] | None:
    """A lane setting's documented range, from its field's own bounds."""
    info = LanePolicy.model_fields.get(setting)
    if info is None:
        return None
    low = next((getattr(m, "ge", None) for m in info.metadata if hasattr(m, "ge")), None)
    high = next((getattr(m, "le", None) for m in info.metadata if hasattr(m, "le")), None)
    return None if low is None or high is None else (low, high)


@register
class JournalSettings(BossaSettings):
    section: ClassVar[str] = "journal"
    model_config = SettingsConfigDict(env_prefix="BOSSA_JOURNAL_")

    max_attempts: MaxAttempts = 10
    backoff_base_ms: BackoffBaseMs = 1_000
    backoff_max_ms: BackoffMaxMs = 300_000
    lease_ms: LeaseMs = 5_000
    retention_s: RetentionS = 7 * 24 * 3600
    max_payload_bytes: MaxPayloadBytes = 1_048_576
    #: Entries a worker takes at once.
    take_batch: int = Field(default=100, ge=1, le=10_000)
    #: Entries of one key a worker takes together (a run, handled in order): a hot key
    #: drains a run per take and ack instead of one entry. 1 takes heads only.
    take_run: int = Field(default=100, ge=1, le=MAX_RUN)
    #: Concurrent takers per lane in one worker process.
    concurrency: int = Field(default=4, ge=1, le=256)
    #: Handlers run at once within one taken batch (its entries have distinct keys).
    batch_concurrency: int = Field(default=16, ge=1, le=1_000)
    #: A worker wakes at least this often even if no notification arrives.
    poll_interval_s: float = Field(default=30.0, ge=0.01, le=3_600, allow_inf_nan=False)
    #: After work, one taker of a worker keeps looking for more every `linger_poll_s`
    #: for this long before it sleeps until notified (0: sleep at once). A steady
    #: trickle of entries is then taken within a poll instead of a NOTIFY round.
    linger_s: float = Field(default=1.0, ge=0, le=60, allow_inf_nan=False)
    linger_poll_s: float = Field(default=0.005, ge=0.001, le=1, allow_inf_nan=False)
    #: How often a worker looks for expired leases in its lane (and so probes the database).
    reap_interval_s: float = Field(default=1.0, ge=0.01, le=600, allow_inf_nan=False)
    #: Rows deleted per statement by purge.
    purge_batch: int = Field(default=5_000, ge=1, le=100_000)
    #: How long a worker waits out a database it cannot reach (or a closed pool: at once)
    #: before it exits non-zero, for its supervisor to restart it.
    database_outage_s: float = Field(default=300.0, ge=1, le=86_400, allow_inf_nan=False)

    @model_validator(mode="after")
    def _backoff_range(self) -> JournalSettings:
        _check_backoff(self.backoff_base_ms, self.backoff_max_ms)
        return self

    def default_policy(self) -> LanePolicy:
        return LanePolicy(
            max_attempts=self.max_attempts,
            backoff_base_ms=self.backoff_base_ms,
            backoff_max_ms=self.backoff_max_ms,
            lease_ms=self.lease_ms,
            retention_s=self.retention_s,
            max_payload_bytes=self.max_payload_bytes,
        )
