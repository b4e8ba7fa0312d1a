"""What every module's CLI group shares: running a coroutine against the runtime, and
parsing the argument types Typer does not (JSON, dates).

Kept apart from `bossa.cli` so that a module's `cli.py` can import it without importing
every other module's commands.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any, TypeVar

import typer

from bossa.errors import InvalidInput
from bossa.runtime import Runtime, running

__all__ = ["ActorOpt", "JsonOpt", "ReasonOpt", "date_arg", "json_arg", "with_runtime"]

T = TypeVar("T")

ActorOpt = Annotated[str, typer.Option("--actor", envvar="USER", help="Who acts (audited).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (audited).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON output.")]


def with_runtime(action: Callable[[Runtime], Awaitable[T]], *, pool_max: int = 4) -> T:
    """Run `action` once against a runtime of its own, then close everything."""

    async def go() -> T:
        async with running(actor="cli", pool_max=pool_max) as runtime:
            return await action(runtime)

    return asyncio.run(go())


def json_arg(text: str, field: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"is not JSON: {exc.msg} at character {exc.pos}", field=field) from exc
    except RecursionError:
        raise InvalidInput("nests too deep to read", field=field) from None


def date_arg(text: str, field: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not a date (YYYY-MM-DD)", field=field) from None
