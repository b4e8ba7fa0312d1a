"""What an operator watches of access control: refused requests, by reason."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["DENIED", "GRANTED"]

DENIED = Counter(
    "bossa_access_denied_total",
    "Requests refused by access control (401 or 403), by reason",
    ["reason"],
)
GRANTED = Counter(
    "bossa_access_granted_total", "Requests whose credential was accepted, by kind", ["via"]
)
