"""The HTTP API: one router per domain module, health and metrics. Thin: parse, call, render."""

from bossa.api.app import create_app

__all__ = ["create_app"]
