"""What every legacy adapter offers: one call, its errors, its timeout."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["LegacyError", "LegacySystem", "TransferError"]


class LegacyError(Exception):
    """A legacy call failed. `unreachable` failures (timeouts, refused connections, 5xx)
    count against the system's breaker; a refusal of the request itself does not."""

    def __init__(self, code: str, message: str, *, unreachable: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.unreachable = unreachable


class TransferError(Exception):
    """A file transfer to the legacy billing system failed (the SFTP adapter's error)."""


class LegacySystem(Protocol):
    async def call(
        self, operation: str, params: dict[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]: ...

    async def close(self) -> None: ...
