"""REST divisions (P3, today's interworking type) through httpx.

Once-only effect: `Idempotency-Key: <division>:<entry id>` on every request; the
receiver deduplicates on it (our test server does; integrators are told to).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from bossa.provisioning.adapters.base import (
    UNAVAILABLE_HTTP,
    Command,
    DeliveryError,
    Division,
    render,
)

__all__ = ["RestAdapter"]


class RestAdapter:
    """Sends {"method", "path", "body"} as JSON; bound values in the path are URL-quoted."""

    def __init__(self, division: Division) -> None:
        if not division.server_url:
            raise ValueError(f"division {division.name} has no SERVER_URL")
        self.division = division
        headers: dict[str, str] = {}
        token = division.credentials.get("token")
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        auth: tuple[str, str] | None = None
        if "username" in division.credentials:
            auth = (division.credentials["username"], division.credentials.get("password", ""))
        self._client = httpx.Client(
            base_url=division.server_url, timeout=division.timeout_s, headers=headers, auth=auth
        )

    def deliver(self, command: Command) -> None:
        template = command.template
        quoted = {k: quote(str(v), safe="") for k, v in command.bind_data.items()}
        path = str(render(template["path"], quoted))
        body: Any = render(template.get("body"), command.bind_data)
        headers = {
            "Idempotency-Key": f"{self.division.name}:{command.entry_id}",
            "X-Message-Id": str(command.entry_id),
        }
        try:
            response = self._client.request(
                template["method"].upper(), path, json=body, headers=headers
            )
        except httpx.TransportError as exc:  # connect/read timeouts, refused, reset
            raise DeliveryError(
                "CONNECT", str(exc) or type(exc).__name__, unreachable=True
            ) from exc
        if not response.is_success:
            raise DeliveryError(
                f"HTTP{response.status_code}",
                response.text[:500],
                unreachable=response.status_code in UNAVAILABLE_HTTP,
            )

    def probe(self) -> None:
        """A HEAD of the base URL: any answer but 429/502/503/504 means the server is
        there (a 404 or 405 too: it answered)."""
        try:
            response = self._client.head("")
        except httpx.TransportError as exc:
            raise DeliveryError(
                "CONNECT", str(exc) or type(exc).__name__, unreachable=True
            ) from exc
        if response.status_code in UNAVAILABLE_HTTP:
            raise DeliveryError(
                f"HTTP{response.status_code}", response.text[:500], unreachable=True
            )

    def close(self) -> None:
        self._client.close()
