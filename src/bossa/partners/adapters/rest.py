"""REST legacy systems through httpx: POST <url>/<operation> with the parameters as a JSON
object; the answer is a JSON object. `Idempotency-Key` lets the system apply a retried
call once."""

from __future__ import annotations

from typing import Any

import httpx

from bossa.partners.adapters.base import LegacyError

__all__ = ["RestSystem"]


class RestSystem:
    def __init__(self, url: str, *, timeout_s: float) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/") + "/", timeout=timeout_s, limits=limits
        )

    async def call(
        self, operation: str, params: dict[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        try:
            response = await self._client.post(
                operation, json=params, headers={"Idempotency-Key": idempotency_key}
            )
        except httpx.TimeoutException as exc:
            raise LegacyError("TIMEOUT", type(exc).__name__, unreachable=True) from None
        except httpx.TransportError as exc:
            raise LegacyError("CONNECT", type(exc).__name__, unreachable=True) from None
        if response.status_code >= 500:
            raise LegacyError(f"HTTP{response.status_code}", "server error", unreachable=True)
        if not response.is_success:
            raise LegacyError(f"HTTP{response.status_code}", response.text[:200], unreachable=False)
        try:
            body = response.json()
        except ValueError:
            raise LegacyError("BAD_ANSWER", "not JSON", unreachable=False) from None
        if not isinstance(body, dict):
            raise LegacyError("BAD_ANSWER", "not a JSON object", unreachable=False)
        return body

    async def close(self) -> None:
        await self._client.aclose()
