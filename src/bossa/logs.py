"""Logging through structlog: JSON lines for machines, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import ClassVar, Literal

import structlog
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register

__all__ = ["CACHE_LOGGERS", "LogSettings", "configure", "get_logger"]

#: structlog caches a module's logger on its first call, which is right in production
#: and wrong under test: a logger cached before (or inside) ``structlog.testing.capture_logs``
#: never reaches a later capture, so whether a test sees a warning would depend on which
#: test ran first in its worker. The test suite turns this off.
CACHE_LOGGERS = True


@register
class LogSettings(BossaSettings):
    section: ClassVar[str] = "log"
    model_config = SettingsConfigDict(env_prefix="BOSSA_LOG_")

    level: Literal["debug", "info", "warning", "error"] = "info"
    #: auto: readable on a terminal, JSON otherwise.
    format: Literal["auto", "json", "console"] = "auto"


def configure(settings: LogSettings | None = None) -> None:
    settings = settings or LogSettings()
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    as_json = settings.format == "json" or (settings.format == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=CACHE_LOGGERS,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
